"""seqlab: sequence modeling on PyTorch: every model is a stack of mixers behind one
streaming-state protocol."""

from seqlab.config import DataConfig, ModelConfig, RunConfig, TokenizerConfig, TrainConfig
from seqlab.errors import (CheckpointError, ConfigError, DataError, SeqlabError, ShapeError,
                           StateError, TokenizerError, TrainingError)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "ConfigError", "DataConfig", "DataError", "ModelConfig", "RunConfig",
    "SeqlabError", "ShapeError", "StateError", "TokenizerConfig", "TokenizerError", "TrainConfig",
    "Trainer", "TrainingError", "fit", "load",
]


def __getattr__(name: str):
    # Imported on first use so `import seqlab.nn` does not pull in data, tasks and training.
    if name in ("load", "fit"):
        from seqlab import api

        return getattr(api, name)
    if name == "Trainer":
        from seqlab.train.trainer import Trainer

        return Trainer
    raise AttributeError(f"module 'seqlab' has no attribute {name!r}")
