"""Batches, and the collator that pads examples of different lengths into one.

Every data source hands the trainer a :class:`Batch`. Inputs of different lengths are
right-padded to the longest one in the batch and come with a padding mask (True = real
position); a batch of equal lengths carries no mask at all, so mixers take their
unpadded fast path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

IGNORE = -100  # the ignore_index of F.cross_entropy: a target no loss or metric counts


@dataclass
class Batch:
    """One batch of any objective.

    Shapes:
        inputs: (B, T) int64 token ids, or (B, T, F) float32 feature vectors.
        targets: what the objective predicts: (B, T) next tokens or tags (IGNORE where
            not counted), (B,) class ids, (B, K) numbers; None for unlabelled data.
        padding_mask: (B, T) bool, True at real positions; None when nothing is padded.
        extras: further per-batch tensors an objective's head reads (e.g. ``scored``).
        index: (B,) positions of the examples in their data set (predictions name them).
    """

    inputs: Tensor
    targets: Tensor | None = None
    padding_mask: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    index: Tensor | None = None

    def to(self, device) -> "Batch":
        def move(t):
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(move(self.inputs), move(self.targets), move(self.padding_mask),
                     {k: move(v) for k, v in self.extras.items()}, self.index)

    @property
    def size(self) -> int:
        return self.inputs.shape[0]

    def row(self, i: int) -> "Batch":
        """Example ``i`` alone, as a batch of one (every tensor keeps its batch axis)."""
        def take(t):
            return None if t is None else t[i:i + 1]

        return Batch(take(self.inputs), take(self.targets), take(self.padding_mask),
                     {k: take(v) for k, v in self.extras.items()}, take(self.index))

    @property
    def n_positions(self) -> int:
        """Real (unpadded) positions: the tokens or frames a throughput figure counts."""
        if self.padding_mask is None:
            return self.inputs.shape[0] * self.inputs.shape[1]
        return int(self.padding_mask.sum())

    @property
    def n_padded(self) -> int:
        """Padded positions, the work spent on nothing."""
        return self.inputs.shape[0] * self.inputs.shape[1] - self.n_positions


def pad(rows: list[np.ndarray], *, value: float | int = 0,
        dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor | None]:
    """Right-pad arrays of shape (T_i, ...) to (B, max T_i, ...).

    Returns:
        The padded tensor and the (B, T) padding mask, or None when all lengths agree.
    """
    lengths = [len(r) for r in rows]
    T = max(lengths)
    first = rows[0]
    out = np.full((len(rows), T, *first.shape[1:]), value, dtype=first.dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    tensor = torch.from_numpy(out)
    if dtype is not None:
        tensor = tensor.to(dtype)
    if min(lengths) == T:
        return tensor, None
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
    return tensor, mask
