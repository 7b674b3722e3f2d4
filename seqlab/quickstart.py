"""The built-in default job: a small byte-level language model trained on the Python
standard library's own source, a real corpus present on every machine with Python."""

from __future__ import annotations

from seqlab.config import RunConfig
from seqlab.datasets.stdlib import STDLIB_EXCLUDE, stdlib_dir


def quickstart_config(overrides: list[str] | None = None) -> RunConfig:
    """About 3 minutes on 2 CPU cores; ``overrides`` as for ``seqlab train --set``."""
    data = {
        "task": "causal_lm",
        "seed": 0,
        "model": {"preset": "llama-tiny", "dropout": 0.0},
        "tokenizer": {"kind": "byte"},
        "data": {"path": str(stdlib_dir()), "extensions": [".py"], "exclude": STDLIB_EXCLUDE,
                 "val_fraction": 0.02, "max_bytes": 8_000_000},
        "train": {"steps": 800, "batch_size": 32, "lr": 3e-3, "warmup_steps": 50,
                  "weight_decay": 0.1, "eval_every": 200, "eval_batches": 20, "log_every": 10},
    }
    return RunConfig.from_dict(data, overrides, source="quickstart")
