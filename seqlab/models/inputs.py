"""Input adapters: what turns a batch's inputs into (B, T, D) vectors for the blocks.

``model.input`` names one by registry key. Token ids go through an embedding; sequences
of feature vectors (sensor traces, audio features, frame features) through a linear
projection, or, with ``model.patch`` P > 1, each run of P consecutive vectors through one
projection as one token (PatchTST's patches: T steps become T / P positions). A
convolutional front end is one more entry here.
"""

from __future__ import annotations

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


INPUTS.add("tokens", InputEntry(_tokens, needs="vocab_size", dtype="ids"))
INPUTS.add("features", InputEntry(_features, needs="input_dim", dtype="float"))
