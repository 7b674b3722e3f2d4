"""seqlab: sequence modeling on PyTorch: every model is a stack of mixers behind one
streaming-state protocol."""

from seqlab.errors import (CheckpointError, ConfigError, DataError, SeqlabError, ShapeError,
                           StateError, TokenizerError, TrainingError)

__version__ = "0.1.0"

__all__ = [
    "AnomalyDetector", "CheckpointError", "ConfigError", "DataConfig", "DataError", "Forecaster",
    "InitConfig", "ModelConfig",
    "RunConfig", "SeqlabError", "ShapeError", "StateError", "TokenizerConfig", "TokenizerError",
    "TrainConfig", "Trainer", "TrainingError", "evaluate", "finetune", "fit", "load", "merge",
    "predict",
]

_API = ("load", "fit", "finetune", "merge", "evaluate", "predict")
_CONFIG = ("DataConfig", "InitConfig", "ModelConfig", "RunConfig", "TokenizerConfig", "TrainConfig")


def __getattr__(name: str):
    # Imported on first use, so `import seqlab.nn` does not pull in data, objectives,
    # configs and training.
    if name in _API:
        from seqlab import api

        return getattr(api, name)
    if name in _CONFIG:
        from seqlab import config

        return getattr(config, name)
    if name == "AnomalyDetector":
        from seqlab.anomaly_detector import AnomalyDetector

        return AnomalyDetector
    if name == "Forecaster":
        from seqlab.forecaster import Forecaster

        return Forecaster
    if name == "Trainer":
        from seqlab.train.trainer import Trainer

        return Trainer
    raise AttributeError(f"module 'seqlab' has no attribute {name!r}")
