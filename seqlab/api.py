"""The Python entry points behind the CLI: load a run, train a config."""

from __future__ import annotations

from pathlib import Path

from seqlab.config import RunConfig
from seqlab.errors import CheckpointError, ConfigError
from seqlab.models.weights import load_model_tensors
from seqlab.tasks import TASKS
from seqlab.train.checkpoint import load_weights
from seqlab.train.trainer import CONFIG_FILE, WEIGHTS_FILE, TrainResult, Trainer


def load_run_config(run_dir: str | Path) -> RunConfig:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a directory (expected a run directory)")
    if not (run_dir / CONFIG_FILE).exists():
        raise CheckpointError(f"{run_dir} is not a seqlab run directory: it has no {CONFIG_FILE}")
    try:
        return RunConfig.from_yaml(run_dir / CONFIG_FILE)
    except ConfigError as e:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} is not a valid run config: {e}") from None


def load_weights_into(model, run_dir: str | Path) -> None:
    """Load ``RUN/model.safetensors`` into ``model`` with shape checks."""
    path = Path(run_dir) / WEIGHTS_FILE
    tensors, _ = load_weights(path, device="cpu")
    load_model_tensors(model, tensors, source=str(path))


def load(run_dir: str | Path, *, device: str = "cpu"):
    """Load a trained run for use: for ``causal_lm`` runs an object with
    ``.generate(prompt, ...)``, ``.evaluate(data)``, ``.model``, ``.tokenizer``, ``.config``."""
    config = load_run_config(run_dir)
    return TASKS.get(config.task).load_pipeline(Path(run_dir), config, device=device)


def fit(config: RunConfig | str | Path, run_dir: str | Path, *, overrides: list[str] | None = None,
        resume: bool = False) -> TrainResult:
    """Train a config (object or YAML path) into ``run_dir``."""
    if not isinstance(config, RunConfig):
        config = RunConfig.from_yaml(config, overrides)
    elif overrides:
        config = config.replace(overrides)
    return Trainer(config, run_dir, resume=resume).fit()
