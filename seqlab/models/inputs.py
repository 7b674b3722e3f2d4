"""Input adapters: what turns a batch's inputs into (B, T, D) vectors for the blocks.

``model.input`` names one by registry key. Token ids go through an embedding; sequences
of feature vectors (sensor traces, audio features, frame features) through a linear
projection, or, with ``model.patch`` P > 1, each run of P consecutive vectors through one
projection as one token (PatchTST's patches: T steps become T / P positions); or, as
``conv_subsample``, through strided causal convolutions that shorten them P-fold (the front
end of speech encoders, which streams through a state of its own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from seqlab.errors import ConfigError, ShapeError, TokenizerError
from seqlab.nn.mixer import tracing
from seqlab.registry import Registry


@dataclass(frozen=True)
class InputEntry:
    """``build(d_model, vocab_size, input_dim, patch=1) -> module``; ``needs`` names the
    size it reads."""

    build: Callable[..., nn.Module]
    needs: str  # "vocab_size" or "input_dim"
    dtype: str  # "ids" or "float": what the data must provide


INPUTS: Registry[InputEntry] = Registry("input adapter")


class TokenEmbedding(nn.Embedding):
    """Token embedding that rejects out-of-range ids with a clear error."""

    def forward(self, ids: Tensor) -> Tensor:
        if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ShapeError(f"token ids must be an integer tensor, got dtype {ids.dtype}")
        if ids.numel() and not tracing():
            lo, hi = torch.aminmax(ids)
            lo, hi = int(lo), int(hi)
            if lo < 0 or hi >= self.num_embeddings:
                bad = lo if lo < 0 else hi
                raise TokenizerError(
                    f"token id {bad} is out of range for a model with vocabulary size "
                    f"{self.num_embeddings} (valid ids 0..{self.num_embeddings - 1}); the "
                    "tokenizer and model.vocab_size must agree"
                )
        return super().forward(ids)


class FeatureProjection(nn.Linear):
    """Linear projection of continuous features (B, T, F) to (B, T / patch, D): each
    patch of ``patch`` consecutive steps (their F features each, in time order) is one
    position."""

    def __init__(self, input_dim: int, d_model: int, *, patch: int = 1):
        super().__init__(input_dim * patch, d_model)
        self.input_dim, self.patch = input_dim, patch

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ShapeError(f"features must have shape (batch, time, {self.input_dim}), "
                             f"got {tuple(x.shape)}")
        if self.patch > 1:
            if x.shape[1] % self.patch and not tracing():
                raise ShapeError(f"{x.shape[1]} steps do not split into patches of "
                                 f"{self.patch} (model.patch); give a multiple of {self.patch}")
            x = x.reshape(x.shape[0], x.shape[1] // self.patch, self.patch * self.input_dim)
        return super().forward(x.to(self.weight.dtype))


class ConvSubsampling(nn.Module):
    """Features (B, T, F) -> (B, ceil(T / factor), D): log2(factor) 1-D convolutions over
    time (kernel 3, stride 2, GELU), then a linear projection.

    Each convolution is causal: output j reads input steps 2j-2, 2j-1 and 2j (zeros before
    the start), so a position never sees a later frame, padding at the end never reaches
    a real position, and output j is real exactly when input step 2j is. That makes the
    front end stream: ``stream(x, state)`` keeps, per convolution, the input steps not yet
    consumed, and feeding a sequence in chunks gives the outputs of one pass.
    """

    streams = True

    def __init__(self, input_dim: int, d_model: int, factor: int):
        super().__init__()
        if factor < 2 or factor & (factor - 1):
            raise ConfigError(f"model.input conv_subsample shortens inputs by model.patch, a "
                              f"power of two >= 2 (2, 4, 8); got {factor}")
        self.input_dim, self.factor = input_dim, factor
        n = int(math.log2(factor))
        self.convs = nn.ModuleList(nn.Conv1d(input_dim if i == 0 else d_model, d_model, 3, stride=2)
                                   for i in range(n))
        self.proj = nn.Linear(d_model, d_model)

    def init_state(self, batch_size: int, device=None, dtype=None) -> tuple[Tensor, ...]:
        """Two zero steps of left padding before each convolution."""
        dtype = dtype or self.proj.weight.dtype
        return tuple(torch.zeros(batch_size, c.in_channels, 2, device=device, dtype=dtype)
                     for c in self.convs)

    def forward(self, x: Tensor) -> Tensor:
        return self.stream(x, None)[0]

    def stream(self, x: Tensor, state: tuple[Tensor, ...] | None) -> tuple[Tensor, tuple]:
        """Outputs for every position the steps so far complete, and the new state (the
        one passed in is not changed)."""
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ShapeError(f"features must have shape (batch, time, {self.input_dim}), "
                             f"got {tuple(x.shape)}")
        if state is None:
            state = self.init_state(x.shape[0], x.device)
        h, kept = x.to(self.proj.weight.dtype).transpose(1, 2), []  # (B, C, T)
        for conv, pending in zip(self.convs, state):
            h = torch.cat([pending, h], dim=2)
            n = max(0, (h.shape[2] - 1) // 2)  # outputs whose last input step has arrived
            kept.append(h[:, :, 2 * n:])
            h = (torch.nn.functional.gelu(conv(h)) if n
                 else h.new_zeros(h.shape[0], conv.out_channels, 0))
        return self.proj(h.transpose(1, 2)), tuple(kept)

    def positions_mask(self, padding_mask: Tensor) -> Tensor:
        """The (B, T') mask of the outputs of inputs masked (B, T) (True = real)."""
        for _ in self.convs:
            padding_mask = padding_mask[:, ::2]
        return padding_mask

    def positions(self, steps: int) -> int:
        """How many outputs ``steps`` input steps give."""
        return subsampled_length(steps, self.factor)


def subsampled_length(steps: int, factor: int) -> int:
    """The positions ``conv_subsample`` with ``model.patch`` ``factor`` makes of
    ``steps`` input steps: each of its log2(factor) convolutions halves, rounding up."""
    for _ in range(max(factor.bit_length() - 1, 0)):
        steps = (steps + 1) // 2
    return steps


def _tokens(d_model: int, vocab_size: int | None, input_dim: int | None, *,
            patch: int = 1) -> nn.Module:
    if patch != 1:
        raise ConfigError(f"model.patch {patch} groups feature vectors; token inputs take none")
    if not vocab_size:
        raise ConfigError("model.vocab_size is not set (it comes from the tokenizer)")
    return TokenEmbedding(vocab_size, d_model)


def _features(d_model: int, vocab_size: int | None, input_dim: int | None, *,
              patch: int = 1) -> nn.Module:
    if not input_dim:
        raise ConfigError("model.input_dim is not set (it comes from the feature files)")
    return FeatureProjection(input_dim, d_model, patch=patch)


def _conv_subsample(d_model: int, vocab_size: int | None, input_dim: int | None, *,
                    patch: int = 1) -> nn.Module:
    if not input_dim:
        raise ConfigError("model.input_dim is not set (it comes from the feature files)")
    return ConvSubsampling(input_dim, d_model, patch)


INPUTS.add("tokens", InputEntry(_tokens, needs="vocab_size", dtype="ids"))
INPUTS.add("features", InputEntry(_features, needs="input_dim", dtype="float"))
INPUTS.add("conv_subsample", InputEntry(_conv_subsample, needs="input_dim", dtype="float"))
