"""Positional encodings.

Two families, selected per model by registry key:

* absolute (``sinusoidal``, ``learned``): a vector per position added to the token
  embeddings by the backbone;
* relative (``rope``, ``alibi``): applied inside attention to queries/keys or scores,
  so they see only offsets between positions.

Positions are per sequence, ``(B, T)``, so a left-padded batch gives every sequence
the positions it would have alone (padding occupies no position).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqlab.errors import ShapeError
from seqlab.nn.mixer import tracing
from seqlab.registry import Registry

POSITIONS: Registry = Registry("position encoding")


def positions_from_mask(start: Tensor | int, batch_size: int, length: int,
                        padding_mask: Tensor | None, device=None) -> Tensor:
    """Position of every token of a chunk, counting only real (unpadded) tokens.

    Args:
        start: (B,) number of real tokens each sequence has seen before this chunk, or an int.
        padding_mask: (B, T) bool, True for real tokens; None means all real.

    Returns:
        (B, T) int64 positions; padded slots get the position of the next real token
        (their value never matters since they are masked).
    """
    if padding_mask is None:
        pos = torch.arange(length, device=device).expand(batch_size, length)
    else:
        pos = padding_mask.long().cumsum(1) - padding_mask.long()  # (B, T)
    if isinstance(start, Tensor):
        return pos + start.to(pos.device).unsqueeze(1)
    return pos + start if start else pos


class AbsolutePosition(nn.Module):
    """Base for encodings added to the embeddings: ``forward(positions) -> (B, T, D)``."""

    kind = "absolute"
    max_positions: int | None = None


class RelativePosition(nn.Module):
    """Base for encodings applied inside attention."""

    kind = "relative"
    max_positions: int | None = None
    uses_key_positions = False  # does `bias` need the positions of cached keys?

    def rotate(self, q: Tensor, k: Tensor, q_pos: Tensor) -> tuple[Tensor, Tensor]:
        """Transform queries and the new keys (both at positions ``q_pos``)."""
        return q, k

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor | None:
        """Additive score bias (B, H, Tq, Tk), or None."""
        return None


@POSITIONS.register("sinusoidal")
class SinusoidalPosition(AbsolutePosition):
    """Fixed sine/cosine table (Vaswani et al., 2017), computed on the fly: no length limit."""

    def __init__(self, d_model: int, **_):
        super().__init__()
        if d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {d_model}")
        inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2) / d_model)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        angles = positions.unsqueeze(-1).float() * self.inv_freq  # (B, T, D/2)
        return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # (B, T, D)


@POSITIONS.register("sinusoidal_concat")
class ConcatSinusoidalPosition(SinusoidalPosition):
    """The same table with every sine first, then every cosine (fairseq's, BART's and
    Marian's layout) instead of interleaved pairs."""

    def forward(self, positions: Tensor) -> Tensor:
        angles = positions.unsqueeze(-1).float() * self.inv_freq  # (B, T, D/2)
        return torch.cat((angles.sin(), angles.cos()), dim=-1)  # (B, T, D)


@POSITIONS.register("learned")
class LearnedPosition(AbsolutePosition):
    """A trained vector per position, up to ``context_length`` positions (GPT-2 style)."""

    def __init__(self, d_model: int, *, context_length: int, **_):
        super().__init__()
        self.max_positions = context_length
        self.table = nn.Embedding(context_length, d_model)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, positions: Tensor) -> Tensor:
        if positions.numel() and not tracing() and int(positions.max()) >= self.max_positions:
            raise ShapeError(
                f"position {int(positions.max())} is beyond the learned-position limit of "
                f"{self.max_positions} (model.context_length); positions 'rope', 'alibi' and "
                "'sinusoidal' have no limit, and recurrent and state-space mixers need no "
                "positions at all (position 'none')"
            )
        return self.table(positions)


@POSITIONS.register("rope")
class RotaryPosition(RelativePosition):
    """Rotary embeddings (Su et al., 2021, arXiv:2104.09864): rotating q and k by an
    angle proportional to position makes their dot product depend only on the offset.

    Uses the "rotate half" pairing (dimension i with i + Dh/2).

    Longer contexts than the model trained on (``scaling`` by ``factor``): ``linear`` is
    position interpolation (Chen et al., 2023, arXiv:2306.15595), every frequency divided
    by the factor, so ``factor`` times the trained length spans the trained angles;
    ``ntk`` is NTK-aware scaling (bloc97, 2023), the base raised by
    ``factor ** (Dh / (Dh - 2))``, which leaves the highest frequency as it was and slows
    the lowest by the factor.
    """

    SCALINGS = ("none", "linear", "ntk")

    def __init__(self, d_head: int, *, base: float = 10000.0, scaling: str = "none",
                 factor: float = 1.0, **_):
        super().__init__()
        if d_head % 2:
            raise ValueError(f"rotary positions need an even head size, got d_head={d_head}")
        if scaling not in self.SCALINGS or factor < 1:
            raise ValueError(f"rope scaling must be one of {', '.join(self.SCALINGS)} with factor "
                             f">= 1, got {scaling!r} and {factor}")
        if scaling == "ntk":
            base = base * factor ** (d_head / (d_head - 2))
        inv_freq = 1.0 / base ** (torch.arange(0, d_head, 2).float() / d_head)
        if scaling == "linear":
            inv_freq = inv_freq / factor
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._table: tuple[Tensor, Tensor] | None = None  # cos, sin: (L, Dh), grown on demand

    def _cos_sin(self, pos: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos/sin (B, 1, T, Dh) looked up in a cached table, so decoding does not
        recompute them in every layer at every step. A traced graph computes them from the
        positions (the same values the table holds)."""
        if tracing():
            angles = pos.float()[..., None] * self.inv_freq
            angles = torch.cat((angles, angles), dim=-1).unsqueeze(1)  # (B, 1, T, Dh)
            return angles.cos().to(dtype), angles.sin().to(dtype)
        needed = int(pos.max()) + 1 if pos.numel() else 1
        table = self._table
        if table is None or table[0].shape[0] < needed or table[0].device != pos.device:
            length = max(needed, 2 * (table[0].shape[0] if table is not None else 0), 256)
            angles = torch.arange(length, device=pos.device).float()[:, None] * self.inv_freq
            angles = torch.cat((angles, angles), dim=-1)  # (L, Dh)
            table = self._table = (angles.cos(), angles.sin())
        cos, sin = table[0][pos].unsqueeze(1), table[1][pos].unsqueeze(1)  # (B, 1, T, Dh)
        return cos.to(dtype), sin.to(dtype)

    @staticmethod
    def _rotate_half(x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)

    def rotate(self, q: Tensor, k: Tensor, q_pos: Tensor) -> tuple[Tensor, Tensor]:
        cos, sin = self._cos_sin(q_pos, q.dtype)
        return q * cos + self._rotate_half(q) * sin, k * cos + self._rotate_half(k) * sin


@POSITIONS.register("alibi")
class ALiBiPosition(RelativePosition):
    """Attention with linear biases (Press et al., 2022, arXiv:2108.12409): each head
    subtracts ``slope * distance`` from its scores; slopes form a geometric sequence."""

    uses_key_positions = True

    def __init__(self, n_heads: int, **_):
        super().__init__()
        self.register_buffer("slopes", self._slopes(n_heads), persistent=False)

    @staticmethod
    def _slopes(n: int) -> Tensor:
        def power_of_two(m: int) -> list[float]:
            start = 2.0 ** (-8.0 / m)
            return [start ** (i + 1) for i in range(m)]

        closest = 2 ** math.floor(math.log2(n))
        slopes = power_of_two(closest)
        if closest < n:  # the paper's recipe for head counts that are not powers of two
            slopes += power_of_two(2 * closest)[0::2][: n - closest]
        return torch.tensor(slopes)

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        distance = (q_pos.unsqueeze(-1) - k_pos.unsqueeze(-2)).abs().float()  # (B, Tq, Tk)
        return -self.slopes.view(1, -1, 1, 1) * distance.unsqueeze(1)  # (B, H, Tq, Tk)


@POSITIONS.register("none")
class NoPosition(nn.Module):
    """No positional information (recurrent and state-space mixers know order already)."""

    kind = "none"
    max_positions = None

    def __init__(self, **_):
        super().__init__()
