"""The data and the models of ``bench_objectives.py``: one builder per demo.

``prepare_data(demo, workdir)`` writes the demo's data with ``seqlab.datasets`` under
``workdir/<demo>/`` and returns its sizes; ``DEMOS[demo](workdir, ...)`` lists its jobs:
seqlab runs (a config as plain data, as a YAML file would hold it) and baselines. Model
sizes are matched within a demo (parameter counts are measured and reported); learning
rates follow the mixer family: 3e-3 for recurrent and state-space mixers, 1e-3 for
attention.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from seqlab.datasets import (library_files, stdlib_dir, write_dynamics, write_package_snippets,
                             write_token_tags)

LR = {"lstm": 3e-3, "gru": 3e-3, "mamba": 3e-3, "s4d": 3e-3, "attention": 1e-3}


@dataclass
class Job:
    """One unit of work for the pool: a seqlab run (``config``) or a baseline.

    ``after`` names a baseline computed inside the seqlab job from the trained run (the
    masked-LM unigram baseline replays the run's own evaluation masks). ``cost`` is the
    expected seconds, used only to start the longest jobs first.
    """

    demo: str
    name: str
    kind: str  # "seqlab" or "baseline"
    config: dict | None = None
    baseline: str | None = None
    options: dict = field(default_factory=dict)
    after: str | None = None
    cost: float = 0.0
    overrides: list[str] = field(default_factory=list)
    pretrain: dict | None = None  # a run trained first; ``config`` then starts from its weights


# -- data ------------------------------------------------------------------------------

TAG_FILES = (200, 12)  # files of the tagging set (full, --quick)
MLM_BYTES = ((3_000_000, 250_000), (60_000, 20_000))  # train, val bytes (full, --quick)
DYNAMICS = ((2400, 600), (120, 60))  # train, val sequences (full, --quick)
PRETRAIN_BYTES = (3_000_000, 60_000)  # masked-LM pre-training text for classify (full, --quick)


def prepare_data(demo: str, workdir: Path, *, quick: bool = False) -> dict:
    out = workdir / demo
    shutil.rmtree(out, ignore_errors=True)
    if demo == "tag":
        s = write_token_tags(out, max_files=TAG_FILES[quick], chunk_bytes=256)
        return {"files": {"train": s["files"]["train"], "val": s["files"]["val"]},
                "records": s["records"], "bytes": s["bytes"], "tag_counts": s["tag_counts"]}
    if demo == "classify":
        cap = 24 if quick else 160
        s = write_package_snippets(out, snippet_bytes=512, per_package_cap=cap,
                                   min_snippets=min(cap, 32))
        val_files = {json.loads(line)["file"]
                     for line in (out / "val.jsonl").read_text(encoding="utf-8").splitlines()}
        pretrain = _copy_library(out / "pretrain", PRETRAIN_BYTES[quick], 0, exclude=val_files)
        return {"labels": s["labels"], "files": s["files"], "records": s["records"],
                "counts": s["counts"], "pretrain": {"files": pretrain["files"]["train"],
                                                    "bytes": pretrain["bytes"]["train"]}}
    if demo == "mlm":
        return _copy_library(out, *MLM_BYTES[quick])
    if demo == "features":
        n_train, n_val = DYNAMICS[quick]
        s = write_dynamics(out, n_train=n_train, n_val=n_val)
        return {"classes": s["classes"], "channels": s["channels"],
                "lengths": [s["min_length"], s["max_length"]],
                "train": {k: s["train"][k] for k in ("sequences", "steps")},
                "val": {k: s["val"][k] for k in ("sequences", "steps")}}
    raise ValueError(f"unknown demo {demo!r}")


def _copy_library(out: Path, train_bytes: int, val_bytes: int, seed: int = 0,
                  exclude: set[str] = frozenset()) -> dict:
    """Standard-library .py files (tests left out), whole files in a seeded random order,
    copied into ``train/`` until it holds ``train_bytes`` and then into ``val/`` until
    ``val_bytes``: the split is by file. ``exclude``: paths relative to the library folder
    to leave out (another demo's validation files)."""
    root = stdlib_dir()
    files = [f for f in library_files() if f.relative_to(root).as_posix() not in exclude]
    random.Random(seed).shuffle(files)
    held = {"train": 0, "val": 0}
    count = {"train": 0, "val": 0}
    for path in files:
        split = "train" if held["train"] < train_bytes else "val"
        if split == "val" and held["val"] >= val_bytes:
            break
        size = path.stat().st_size
        if size > max(train_bytes, val_bytes) // 4:
            continue  # no single file dominates either side
        target = out / split / "_".join(path.relative_to(root).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        held[split] += size
        count[split] += 1
    return {"files": count, "bytes": held, "library": str(root)}


# -- models ------------------------------------------------------------------------------

RECURRENT = dict(n_layers=1, ffn="none", norm="none", residual=False, position="none")


def _recurrent(cell: str, d_model: int, *, causal: bool = True) -> dict:
    return dict(RECURRENT, mixer=cell, d_model=d_model, causal=causal,
                mixer_options={cell: {"num_layers": 2}})


def _train(steps: int, batch_size: int, lr: float, *, evals: int = 4, eval_batches=None,
           **more) -> dict:
    return {"steps": steps, "batch_size": batch_size, "lr": lr, **more,
            "warmup_steps": max(1, steps // 20), "eval_every": max(1, steps // evals),
            "eval_batches": eval_batches, "log_every": max(1, min(10, steps // 10)),
            "num_threads": 1, "progress": False}


def _steps(default: int, quick: bool, steps: int | None, scale: float) -> int:
    if steps is not None:
        return steps
    return 4 if quick else max(1, round(default * scale))


def tag_jobs(workdir: Path, *, quick: bool = False, steps: int | None = None,
             scale: float = 1.0) -> list[Job]:
    data = {"source": "examples", "path": str(workdir / "tag" / "train.jsonl"),
            "val_path": str(workdir / "tag" / "val.jsonl"), "label_field": "tags"}
    models = {  # about 0.3M parameters each
        "lstm": _recurrent("lstm", 128),
        "gru": _recurrent("gru", 148),
        "attention": dict(mixer="attention", d_model=128, n_layers=2, n_heads=4, d_ff=256,
                          position="rope"),
        "mamba": dict(mixer="mamba", d_model=128, n_layers=2, ffn="none", norm="rmsnorm",
                      position="none"),
        "bilstm": _recurrent("lstm", 148, causal=False),
    }
    cost = {"lstm": 0.3, "gru": 0.45, "attention": 0.5, "mamba": 1.15, "bilstm": 0.35}  # s/step
    n = _steps(500, quick, steps, scale)
    jobs = [Job("tag", "majority_per_byte", "baseline", baseline="tag_majority"),
            Job("tag", "majority_per_byte_pair", "baseline", baseline="tag_majority",
                options={"context": 1})]
    for name, model in models.items():
        mixer = model["mixer"]
        config = {"task": "tag", "model": dict(model, context_length=256),
                  "tokenizer": {"kind": "byte"}, "data": data,
                  "train": _train(n, 32, LR[mixer])}
        jobs.append(Job("tag", name, "seqlab", config=config, cost=cost[name] * n))
    return jobs


def classify_jobs(workdir: Path, *, quick: bool = False, steps: int | None = None,
                  scale: float = 1.0) -> list[Job]:
    data = {"source": "examples", "path": str(workdir / "classify" / "train.jsonl"),
            "val_path": str(workdir / "classify" / "val.jsonl"), "label_field": "label",
            "bucket": True}
    models = {
        "lstm": _recurrent("lstm", 128),
        "gru": _recurrent("gru", 148),
        "attention": dict(mixer="attention", causal=False, d_model=128, n_layers=2, n_heads=4,
                          d_ff=256, position="rope"),
        "mamba": dict(mixer="mamba", d_model=128, n_layers=2, ffn="none", norm="rmsnorm",
                      position="none"),
        "s4d": dict(mixer="s4d", causal=False, d_model=128, n_layers=2, d_ff=256,
                    position="none"),
    }
    cost = {"lstm": 0.3, "gru": 0.55, "attention": 0.7, "mamba": 1.15, "s4d": 0.45}  # s/step
    n = _steps(1000, quick, steps, scale)
    jobs = [Job("classify", f"tfidf_char_{a}_{b}_logreg", "baseline", baseline="tfidf_logreg",
                options={"ngrams": (a, b)}) for a, b in ((1, 4), (2, 5))]
    for name, model in models.items():
        config = {"task": "classify",
                  "task_options": {"pooling": "mean", "class_weights": "balanced"},
                  "model": dict(model, context_length=512, dropout=0.1),
                  "tokenizer": {"kind": "byte"}, "data": data,
                  "train": _train(n, 16, LR[model["mixer"]], best_metric="accuracy")}
        jobs.append(Job("classify", name, "seqlab", config=config, cost=cost[name] * n))
    # The attention encoder again, first pre-trained with masked_lm on other library files
    # (none of the validation files), then fine-tuned from those weights with a new head.
    attention = models["attention"]
    m = _steps(1200, quick, steps, scale)
    pretrain = {"task": "masked_lm", "task_options": {"mask_prob": 0.15},
                "model": dict(attention, context_length=256),
                "tokenizer": {"kind": "byte"},
                "data": {"path": str(workdir / "classify" / "pretrain" / "train"),
                         "val_fraction": 0.02, "extensions": [".py"]},
                "train": _train(m, 32, LR["attention"], evals=2, eval_batches=4 if quick else 20)}
    config = {"task": "classify",
              "task_options": {"pooling": "mean", "class_weights": "balanced"},
              "model": dict(attention, context_length=512, dropout=0.1),
              "data": data, "init": {"exclude": ["head.*"]},
              "train": _train(n, 16, LR["attention"], best_metric="accuracy")}
    jobs.append(Job("classify", "attention_mlm_init", "seqlab", config=config, pretrain=pretrain,
                    cost=cost["attention"] * n + 0.5 * m))
    return jobs


def mlm_jobs(workdir: Path, *, quick: bool = False, steps: int | None = None,
             scale: float = 1.0) -> list[Job]:
    n = _steps(1500, quick, steps, scale)
    config = {"task": "masked_lm", "task_options": {"mask_prob": 0.15},
              "model": {"mixer": "attention", "causal": False, "position": "rope",
                        "d_model": 128, "n_layers": 4, "n_heads": 4, "context_length": 128},
              "tokenizer": {"kind": "byte"},
              "data": {"path": str(workdir / "mlm" / "train"),
                       "val_path": str(workdir / "mlm" / "val"), "extensions": [".py"]},
              "train": _train(n, 32, LR["attention"], eval_batches=4 if quick else 60)}
    return [Job("mlm", "attention", "seqlab", config=config, after="mlm_unigram", cost=0.65 * n)]


def features_jobs(workdir: Path, *, quick: bool = False, steps: int | None = None,
                  scale: float = 1.0) -> list[Job]:
    data = {"source": "features", "path": str(workdir / "features" / "train.npz"),
            "val_path": str(workdir / "features" / "val.npz"), "normalize": True,
            "bucket": True}
    block = dict(ffn="none", position="none")
    models = {  # about 50k parameters each
        "gru": dict(block, mixer="gru", d_model=64, n_layers=2),
        "lstm": dict(block, mixer="lstm", d_model=56, n_layers=2),
        "attention": dict(mixer="attention", causal=False, d_model=64, n_layers=2, n_heads=4,
                          d_ff=128, position="rope"),
        "mamba": dict(block, mixer="mamba", d_model=64, n_layers=2, norm="rmsnorm"),
        "s4d": dict(mixer="s4d", causal=False, d_model=64, n_layers=2, d_ff=128,
                    position="none"),
    }
    cost = {"gru": 0.12, "lstm": 0.05, "attention": 0.12, "mamba": 0.3, "s4d": 0.12}  # s/step
    n = _steps(1500, quick, steps, scale)
    jobs = [Job("features", "summary_stats_logreg", "baseline", baseline="dynamics_logreg",
                options={"spectral": False}),
            Job("features", "fft_bands_logreg", "baseline", baseline="dynamics_logreg",
                options={"spectral": True})]
    for name, model in models.items():
        config = {"task": "classify", "task_options": {"pooling": "mean"},
                  "model": dict(model, context_length=256),
                  "data": data, "train": _train(n, 32, LR[model["mixer"]])}
        jobs.append(Job("features", name, "seqlab", config=config, cost=cost[name] * n))
    return jobs


DEMOS = {"tag": tag_jobs, "classify": classify_jobs, "mlm": mlm_jobs, "features": features_jobs}
