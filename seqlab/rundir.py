"""The run directory: the one place that names its files (DESIGN.md §3).

A training run writes one directory that is also the unit of loading and sharing::

    RUN/
      config.yaml          the fully resolved config
      model.safetensors    the best weights so far
      tokenizer.json       when the inputs are tokens
      data.json            what the data taught: label names, feature statistics
      init.json            what an initialisation from another run loaded, added, dropped
      trainer/step-NNNNNNNN/   the last checkpoints (model + optimizer + RNG + data position)
      metrics.jsonl        one JSON object per log line
      plots/*.png          loss curves and objective plots
      tensorboard/         TensorBoard event files (train.tensorboard)

Everything that reads or writes these files takes the names from here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from seqlab.errors import CheckpointError
from seqlab.io import atomic_write
from seqlab.weights_file import load_weights

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TARGET_TOKENIZER_FILE = "target_tokenizer.json"  # seq2seq targets with a tokenizer of their own
DATA_FILE = "data.json"
INIT_REPORT_FILE = "init.json"
FORGETTING_FILE = "forgetting.json"  # the init run's loss before fine-tuning
EWC_FILE = "ewc.safetensors"  # the init run's diagonal Fisher, with init.ewc
TRAINER_DIR = "trainer"
METRICS_FILE = "metrics.jsonl"
PLOTS_DIR = "plots"
TENSORBOARD_DIR = "tensorboard"  # event files, with train.tensorboard

# Files a fresh run writes before its first checkpoint: a rerun into a directory that
# never saved weights removes them, so nothing from the old attempt is reused.
FRESH_RUN_FILES = (CONFIG_FILE, TOKENIZER_FILE, TARGET_TOKENIZER_FILE, DATA_FILE,
                   INIT_REPORT_FILE, METRICS_FILE, FORGETTING_FILE, EWC_FILE)


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, or a CheckpointError saying why it is not a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a directory (expected a run directory)")
    if not (run_dir / CONFIG_FILE).exists():
        raise CheckpointError(f"{run_dir} is not a seqlab run directory: it has no {CONFIG_FILE}")
    return run_dir


def read_weights(run_dir: str | Path) -> tuple[dict[str, Tensor], str]:
    """The run's best weights (``model.safetensors``) on CPU, and the file's name for errors."""
    path = Path(run_dir) / WEIGHTS_FILE
    tensors, _ = load_weights(path, device="cpu")
    return tensors, str(path)


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    """A JSON file of the run, with errors that name it."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
