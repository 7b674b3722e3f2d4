"""Cross-attention: a decoder's queries over an encoder's outputs (the memory).

Its keys and values depend only on the memory, so a decoder computes them once per
source (``CrossAttention.memory``) and keeps them in its state; every decoding step then
costs one query projection and one attention over the source.

Two scores:

- ``dot``: multi-head scaled dot product, ``softmax(q k^T / sqrt(Dh)) v`` over learned
  projections (the Transformer's, and with one head Luong's multiplicative "general"
  attention);
- ``additive``: ``w^T tanh(W q + U k)`` per head (Bahdanau's), the recurrent
  encoder-decoders' classic; it costs (B, H, T, S, Dh) memory, which is fine at the
  sizes such models run at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.errors import ShapeError
from seqlab.nn.mixer import BatchState

SCORES = ("dot", "additive")


@dataclass
class MemoryKV(BatchState):
    """Keys and values of one layer over the memory, computed once per source.

    Shapes: k, v (B, H, S, Dh); mask (B, S) bool, True = real, or None (all real).
    """

    k: Tensor
    v: Tensor
    mask: Tensor | None = None


class CrossAttention(nn.Module):
    """Attention of ``x`` (B, T, D) over a memory (B, S, D).

    Args:
        d_model: width D of queries and memory.
        n_heads: heads H (D must divide by H).
        score: ``dot`` or ``additive``.
        dropout: dropout on the attention weights in training.
        bias: whether the projections have biases.
    """

    def __init__(self, d_model: int, n_heads: int, *, score: str = "dot", dropout: float = 0.0,
                 bias: bool = True):
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"cross-attention score must be one of {', '.join(SCORES)}, got {score!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.score = score
        self.dropout = dropout
        # With keep_weights, forward keeps its (B, H, T, S) weights in last_weights.
        self.keep_weights, self.last_weights = False, None
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        if score == "additive":
            self.energy = nn.Parameter(torch.randn(n_heads, self.d_head) / math.sqrt(self.d_head))

    def memory(self, memory: Tensor, mask: Tensor | None = None) -> MemoryKV:
        """Project the memory (B, S, D) into this layer's keys and values."""
        if memory.dim() != 3 or memory.shape[-1] != self.d_model:
            raise ShapeError(f"cross-attention memory must have shape (batch, source, "
                             f"{self.d_model}), got {tuple(memory.shape)}")
        B, S, _ = memory.shape
        if mask is not None:
            if mask.shape != (B, S) or mask.dtype != torch.bool:
                raise ShapeError(f"memory mask must be a bool tensor of shape {(B, S)}, got "
                                 f"{mask.dtype} {tuple(mask.shape)}")
            if not bool(mask.any(-1).all()):
                raise ShapeError("a memory row has no real position (an empty source); every "
                                 "source needs at least one token")
            if bool(mask.all()):
                mask = None
        k, v = self.kv_proj(memory).view(B, S, 2, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        return MemoryKV(k, v, mask)

    def forward(self, x: Tensor, kv: MemoryKV) -> Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, Dh)
        dropout = self.dropout if self.training else 0.0
        mask = None if kv.mask is None else kv.mask[:, None, None, :]  # (B, 1, 1, S)
        if self.score == "dot" and not self.keep_weights:
            y = F.scaled_dot_product_attention(q, kv.k, kv.v, attn_mask=mask, dropout_p=dropout)
        else:
            weights = self.weights(q, kv)
            if self.keep_weights:  # for a loss on the alignment (guided attention)
                self.last_weights = weights
            y = F.dropout(weights, p=dropout) @ kv.v
        return self.out_proj(y.transpose(1, 2).reshape(B, T, self.d_model))

    def weights(self, q: Tensor, kv: MemoryKV) -> Tensor:
        """(B, H, T, S) attention weights of projected queries (B, H, T, Dh)."""
        if self.score == "dot":
            scores = q @ kv.k.transpose(-2, -1) / math.sqrt(self.d_head)
        else:
            hidden = torch.tanh(q[:, :, :, None, :] + kv.k[:, :, None, :, :])  # (B, H, T, S, Dh)
            scores = torch.einsum("bhtsd,hd->bhts", hidden, self.energy)
        if kv.mask is not None:
            scores = scores.masked_fill(~kv.mask[:, None, None, :], float("-inf"))
        return scores.softmax(-1)


__all__ = ["CrossAttention", "MemoryKV", "SCORES"]
