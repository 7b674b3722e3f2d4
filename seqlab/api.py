"""The Python entry points behind the CLI: train a config, load a run, evaluate, predict."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from seqlab.config import RunConfig
from seqlab.errors import CheckpointError, ConfigError
from seqlab.io import atomic_write
from seqlab.models.lora import apply_lora, base_weights_digest, merge_lora
from seqlab.models.weights import check_model_tensors, load_model_tensors, model_tensors
from seqlab.rundir import (CONFIG_FILE, DATA_FILE, TOKENIZER_FILE, WEIGHTS_FILE, check_run_dir,
                           read_weights)
from seqlab.weights_file import read_header, save_weights
from seqlab.tasks import OBJECTIVES
from seqlab.tasks.init_tokenizer import check_base_tokenizer
from seqlab.train.hooks import TrainerHook
from seqlab.train.trainer import TrainResult, Trainer


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run was trained with (``RUN/config.yaml``)."""
    run_dir = check_run_dir(run_dir)
    try:
        return RunConfig.from_yaml(run_dir / CONFIG_FILE)
    except ConfigError as e:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} is not a valid run config: {e}") from None


def load(run_dir: str | Path, *, device: str = "cpu", overrides: list[str] | None = None):
    """Load a trained run for use: a pipeline for its objective, with ``.model``,
    ``.config``, ``.evaluate(data=None)`` and what the objective does: ``.generate``
    (causal_lm), ``.fill_mask`` (masked_lm), ``.predict`` (classify, tag, regress).

    ``overrides`` change the run's config for this use, e.g. ``model.context_length=512``
    with ``model.rope_scaling=linear`` and ``model.rope_factor=4`` to read four times
    the trained context; the weights must still fit."""
    run_dir = check_run_dir(run_dir)
    config = load_run_config(run_dir)
    if overrides:
        config = config.replace(overrides)
    objective = OBJECTIVES.get(config.task).cls(config)
    objective.restore(run_dir)
    model = objective.build_model()
    tensors, source = read_weights(run_dir)
    if config.lora.rank:
        _load_adapted(model, tensors, run_dir, config)
    else:
        load_model_tensors(model, tensors, source=source)
    return objective.pipeline(model.to(device).eval(), run_dir)


def _load_adapted(model, adapters: dict, run_dir: Path, config: RunConfig) -> None:
    """A LoRA run: its base run's weights, then the adapters (and head) it trained.

    Raises:
        CheckpointError: the base run is gone, or its weights are not the ones the
            adapters were trained on.
    """
    lora, base = config.lora, config.init.run
    apply_lora(model, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
               targets=lora.targets, train=lora.train)
    if base is None or not (Path(base) / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{run_dir} holds LoRA adapters over the run {base}, whose "
                              f"{WEIGHTS_FILE} is not there; restore it, or load a merged copy "
                              "(seqlab merge)")
    expected = read_header(run_dir / WEIGHTS_FILE)[1].get("lora_base_sha256")
    if expected and base_weights_digest(base) != expected:
        raise CheckpointError(f"the base run {base} of {run_dir} now has other weights than the "
                              "ones its adapters were trained on (sha256 differs); adapters only "
                              "fit the base they were trained on")
    own = model_tensors(model)
    check_model_tensors({n: t for n, t in own.items() if n in adapters}, adapters,
                        source=str(run_dir / WEIGHTS_FILE))
    base_tensors, source = read_weights(base)
    missing = [n for n in own if n not in adapters and n not in base_tensors]
    if missing:
        raise CheckpointError(f"neither {run_dir} nor its base {base} holds {', '.join(missing[:5])}")
    with torch.no_grad():
        for name, t in own.items():
            t.copy_(adapters[name] if name in adapters else base_tensors[name])


def merge(run_dir: str | Path, out: str | Path) -> Path:
    """Fold a LoRA run's adapters into full weights: a standalone run at ``out`` with the
    same outputs.

    Raises:
        ConfigError: ``run_dir`` is not a LoRA run. CheckpointError: ``out`` is not empty.
    """
    run_dir, out = check_run_dir(run_dir), Path(out)
    config = load_run_config(run_dir)
    if not config.lora.rank:
        raise ConfigError(f"{run_dir} is not a LoRA run (lora.rank is 0): nothing to merge")
    if out.exists() and any(out.iterdir()):
        raise CheckpointError(f"{out} is not empty; choose a new directory for the merged run")
    pipeline = load(run_dir)
    merge_lora(pipeline.model)
    out.mkdir(parents=True, exist_ok=True)
    for name in (TOKENIZER_FILE, DATA_FILE):
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, out / name)
    save_weights(out / WEIGHTS_FILE, model_tensors(pipeline.model),
                 {"step": "0", "format": "seqlab", "merged_from": str(run_dir)})
    atomic_write(out / CONFIG_FILE, config.replace(["lora.rank=0", "init.run=null"]).to_yaml())
    return out


def fit(config: RunConfig | str | Path, run_dir: str | Path, *, overrides: list[str] | None = None,
        resume: bool = False, hooks: list[TrainerHook] | None = None) -> TrainResult:
    """Train a config (object or YAML path) into ``run_dir``; the config object given is
    left unchanged (derived values are filled into the run's own copy)."""
    if not isinstance(config, RunConfig):
        config = RunConfig.from_yaml(config, overrides)
    elif overrides:
        config = config.replace(overrides)
    return Trainer(config, run_dir, resume=resume, hooks=hooks).fit()


FINETUNE_MODES = ("full", "frozen", "lora")


def finetune_config(config: RunConfig, from_run: str | Path, *, mode: str = "full") -> RunConfig:
    """``config`` set to start from the trained run ``from_run``: its backbone (and its
    tokenizer), a new head where the objectives differ. ``mode``: ``full`` trains every
    weight; ``frozen`` only the head (a linear probe on the pre-trained features);
    ``lora`` low-rank adapters and the head (``lora.rank``, default 8).

    Raises:
        ConfigError: an unknown mode, or a tokenizer other than the base run's (see
            ``check_base_tokenizer``). CheckpointError: ``from_run`` is not a run.
    """
    if mode not in FINETUNE_MODES:
        raise ConfigError(f"fine-tuning mode {mode!r} is not one of {', '.join(FINETUNE_MODES)}")
    check_run_dir(from_run)
    check_base_tokenizer(config.tokenizer, from_run)
    overrides = [f"init.run={from_run}"]
    if mode == "frozen":
        patterns = [p for p in config.train.freeze if p != "backbone.*"] + ["backbone.*"]
        overrides.append(f"train.freeze={patterns}")
    if mode == "lora" and not config.lora.rank:
        overrides.append("lora.rank=8")
    return config.replace(overrides)


def finetune(config: RunConfig | str | Path, run_dir: str | Path, *, from_run: str | Path,
             mode: str = "full", overrides: list[str] | None = None,
             hooks: list[TrainerHook] | None = None) -> TrainResult:
    """Fine-tune from ``from_run`` (see ``finetune_config``) into ``run_dir``."""
    if not isinstance(config, RunConfig):
        config = RunConfig.from_yaml(config, overrides)
    elif overrides:
        config = config.replace(overrides)
    return Trainer(finetune_config(config, from_run, mode=mode), run_dir, hooks=hooks).fit()


def evaluate(run_dir: str | Path, data=None, *, device: str = "cpu",
             max_batches: int | None = None) -> dict[str, float]:
    """The objective's metrics of a trained run on ``data`` (default: its validation split)."""
    return load(run_dir, device=device).evaluate(data, max_batches=max_batches)


def predict(run_dir: str | Path, data, out: str | Path, *, device: str = "cpu") -> int:
    """Write predictions of a classify, tag or regress run for every example in ``data``
    to ``out`` (.csv, .tsv or .jsonl); returns the number of rows."""
    return load(run_dir, device=device).predict_file(data, out)
