"""The Task interface: one objective (head + loss + metrics + predict) per class.

The Trainer drives any Task without knowing what it models: it asks for the model,
for training batches by (step, micro-step), for a loss, and for evaluation metrics.
Batches are a pure function of the step, so resuming restores the data position
directly rather than replaying the data stream.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from seqlab.config import RunConfig
from seqlab.registry import Registry

TASKS: Registry = Registry("task")


class Task(ABC):
    """One objective. Subclasses register with ``@TASKS.register(name)``."""

    item_name = "items"  # what `loss` counts, for throughput ("tokens" for text)

    def __init__(self, config: RunConfig):
        self.config = config
        self.autocast = None  # set by the Trainer: a context-manager factory or None

    @abstractmethod
    def prepare(self, run_dir: Path | None, *, resume: bool = False) -> None:
        """Load data and any artifacts (tokenizer), filling derived config values."""

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model for ``self.config``."""

    @abstractmethod
    def train_batch(self, step: int, micro: int) -> Any:
        """The training batch for optimizer step ``step``, micro-batch ``micro``."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        """Mean loss of ``batch`` and how many items (e.g. tokens) it covers."""

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics; must include ``val_loss`` (lower is better)."""

    def data_state(self) -> dict:
        """JSON-able description of the data position, checked on resume."""
        return {}

    def load_data_state(self, state: dict) -> None:
        """Restore (and check) the data position saved by ``data_state``."""

    def save_artifacts(self, run_dir: Path) -> None:
        """Write task files (e.g. tokenizer.json) next to the weights."""

    def sample(self, model: nn.Module) -> str | None:
        """A short qualitative sample for the log, or None."""
        return None

    @classmethod
    @abstractmethod
    def load_pipeline(cls, run_dir: Path, config: RunConfig, *, device: str = "cpu"):
        """Rebuild the trained model and its artifacts for inference (``seqlab.load``)."""


def batch_to(batch: Any, device) -> Any:
    """Move a batch (tensor, tuple/list or dict of tensors) to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(batch_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: batch_to(v, device) for k, v in batch.items()}
    return batch
