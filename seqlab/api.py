"""The Python entry points behind the CLI: train a config, load a run, evaluate, predict."""

from __future__ import annotations

from pathlib import Path

from seqlab.config import RunConfig
from seqlab.errors import CheckpointError, ConfigError
from seqlab.models.weights import load_model_tensors
from seqlab.rundir import CONFIG_FILE, check_run_dir, read_weights
from seqlab.tasks import OBJECTIVES
from seqlab.train.hooks import TrainerHook
from seqlab.train.trainer import TrainResult, Trainer


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run was trained with (``RUN/config.yaml``)."""
    run_dir = check_run_dir(run_dir)
    try:
        return RunConfig.from_yaml(run_dir / CONFIG_FILE)
    except ConfigError as e:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} is not a valid run config: {e}") from None


def load(run_dir: str | Path, *, device: str = "cpu"):
    """Load a trained run for use: a pipeline for its objective, with ``.model``,
    ``.config``, ``.evaluate(data=None)`` and what the objective does: ``.generate``
    (causal_lm), ``.fill_mask`` (masked_lm), ``.predict`` (classify, tag, regress)."""
    run_dir = check_run_dir(run_dir)
    config = load_run_config(run_dir)
    objective = OBJECTIVES.get(config.task).cls(config)
    objective.restore(run_dir)
    model = objective.build_model()
    tensors, source = read_weights(run_dir)
    load_model_tensors(model, tensors, source=source)
    return objective.pipeline(model.to(device).eval(), run_dir)


def fit(config: RunConfig | str | Path, run_dir: str | Path, *, overrides: list[str] | None = None,
        resume: bool = False, hooks: list[TrainerHook] | None = None) -> TrainResult:
    """Train a config (object or YAML path) into ``run_dir``; the config object given is
    left unchanged (derived values are filled into the run's own copy)."""
    if not isinstance(config, RunConfig):
        config = RunConfig.from_yaml(config, overrides)
    elif overrides:
        config = config.replace(overrides)
    return Trainer(config, run_dir, resume=resume, hooks=hooks).fit()


FINETUNE_MODES = ("full", "frozen")


def finetune_config(config: RunConfig, from_run: str | Path, *, mode: str = "full") -> RunConfig:
    """``config`` set to start from the trained run ``from_run``: its backbone (and its
    tokenizer), a new head where the objectives differ. ``mode``: ``full`` trains every
    weight; ``frozen`` only the head (a linear probe on the pre-trained features).

    Raises:
        ConfigError: an unknown mode. CheckpointError: ``from_run`` is not a run.
    """
    if mode not in FINETUNE_MODES:
        raise ConfigError(f"fine-tuning mode {mode!r} is not one of {', '.join(FINETUNE_MODES)} "
                          "(LoRA is not built yet)")
    check_run_dir(from_run)
    overrides = [f"init.run={from_run}"]
    if mode == "frozen":
        patterns = [p for p in config.train.freeze if p != "backbone.*"] + ["backbone.*"]
        overrides.append(f"train.freeze={patterns}")
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
