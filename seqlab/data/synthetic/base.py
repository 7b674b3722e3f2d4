"""Synthetic long-range tasks: seeded generators of ``(inputs, targets, scored)`` batches.

Each generator isolates one ability that long sequences need (memorising, selecting,
recalling by key, copying a pattern, integrating a signal, parsing nested structure),
takes the sequence length as a knob, and draws every random number from the
``torch.Generator`` it is given, so a batch is a pure function of the caller's seed.

Conventions shared by all generators:

- ``inputs``: (B, T) token ids, or (B, T, F) float features (``adding``).
- ``targets``: (B, T); class ids with ``IGNORE`` (-100) on unscored positions, or float
  regression targets (0 on unscored positions).
- ``scored``: (B, T) bool, the positions whose output is scored.
- Targets never appear in the inputs at or after a scored position, so a bidirectional
  encoder cannot read the answer off the input and can be trained on every task too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from seqlab.errors import ConfigError
from seqlab.registry import Registry
from seqlab.typed import convert

IGNORE = -100  # the ignore_index of F.cross_entropy

SYNTHETIC: Registry = Registry("synthetic task")


@dataclass
class SyntheticBatch:
    """One batch; see the module docstring for the meaning of each tensor.

    Shapes:
        inputs: (B, T) long, or (B, T, F) float.
        targets: (B, T) long (classification) or float (regression).
        scored: (B, T) bool.
    """

    inputs: Tensor
    targets: Tensor
    scored: Tensor


class SyntheticGenerator:
    """Base of the generators; subclasses are dataclasses whose fields are their knobs.

    Subclasses set ``vocab_size`` (token inputs) or ``input_dim`` (feature inputs),
    ``n_classes`` (1 for regression), ``chance`` (accuracy of the best guess that
    ignores the input) and ``min_length``, and implement ``_sample``.
    """

    regression: ClassVar[bool] = False
    input_dim: ClassVar[int | None] = None

    @property
    def vocab_size(self) -> int | None:
        return None

    @property
    def n_classes(self) -> int:
        raise NotImplementedError

    @property
    def chance(self) -> float:
        raise NotImplementedError

    @property
    def min_length(self) -> int:
        return 1

    def check_length(self, length: int) -> None:
        if length < self.min_length:
            raise ConfigError(f"{type(self).__name__} sequences need length >= {self.min_length} "
                              f"with these options, got {length}")

    def sample(self, batch_size: int, length: int, generator: torch.Generator) -> SyntheticBatch:
        """A batch of ``batch_size`` sequences of ``length`` steps drawn from ``generator``."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        self.check_length(length)
        return self._sample(batch_size, length, generator)

    def _sample(self, batch_size: int, length: int, generator: torch.Generator) -> SyntheticBatch:
        raise NotImplementedError


def _positive(owner: object, **values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ConfigError(f"{type(owner).__name__}.{name} must be positive, got {value}")


def _random_subsets(batch_size: int, n: int, k: int, generator: torch.Generator) -> Tensor:
    """(B, k) sorted positions: a uniform random k-subset of range(n) per row."""
    order = torch.rand(batch_size, n, generator=generator).argsort(dim=1)
    return order[:, :k].sort(dim=1).values


def _classification(inputs: Tensor, scored: Tensor, answers: Tensor) -> SyntheticBatch:
    targets = torch.full(scored.shape, IGNORE, dtype=torch.long)
    targets[scored] = answers.flatten()
    return SyntheticBatch(inputs, targets, scored)



def build_generator(name: str, options: dict | None = None) -> SyntheticGenerator:
    """The generator registered as ``name`` with its knobs set from ``options``."""
    return convert(SYNTHETIC.get(name), options or {}, f"synthetic.{name}", "config")
