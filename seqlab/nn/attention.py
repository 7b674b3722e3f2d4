"""Multi-head self-attention with a key/value cache as its streaming state.

The layer (projections, positions, cache) is kept apart from the *kernel* that
combines q, k and v: ``sdpa`` is torch's fused scaled_dot_product_attention,
``naive`` the explicit softmax(QK^T / sqrt(Dh)) V reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.nn.mixer import BatchState, Mixer, masked_fill_padding, warn_once
from seqlab.nn.positions import RelativePosition, positions_from_mask
from seqlab.registry import Registry

ATTENTION_KERNELS: Registry = Registry("attention kernel")


def sdpa_kernel(q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None, is_causal: bool,
                dropout: float) -> Tensor:
    """torch's fused attention. q: (B, H, Tq, Dh); k, v: (B, Hkv, Tk, Dh); mask: bool
    (True = may attend) or float bias, broadcastable to (B, H, Tq, Tk)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                          dropout_p=dropout, enable_gqa=k.shape[1] != q.shape[1])


def naive_kernel(q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None, is_causal: bool,
                 dropout: float) -> Tensor:
    """Explicit softmax(QK^T / sqrt(Dh)) V, the reference for the fused kernel."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)  # (B, H, Tk, Dh)
        v = v.repeat_interleave(groups, dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    if is_causal:
        tq, tk = scores.shape[-2:]
        mask = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(tk - tq)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    weights = F.dropout(scores.softmax(-1), p=dropout)
    return weights @ v


ATTENTION_KERNELS.add("sdpa", sdpa_kernel)
ATTENTION_KERNELS.add("naive", naive_kernel)


def check_heads(d_model: int, n_heads: int, n_kv_heads: int | None) -> int:
    """Validate a head layout; returns n_kv_heads (defaulting to n_heads)."""
    n_kv_heads = n_kv_heads or n_heads
    if d_model % n_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
    if n_heads % n_kv_heads:
        raise ValueError(f"n_heads ({n_heads}) must be divisible by n_kv_heads ({n_kv_heads})")
    return n_kv_heads


@dataclass
class KVCache(BatchState):
    """Streaming state of an attention layer.

    Buffers grow by doubling, so appending a token is amortised O(1). The key padding
    mask is only kept once a padded chunk has been seen, and key positions only for
    encodings that need them (ALiBi), so plain decoding stores keys and values alone.
    The cache is updated in place and returned; a state passed to ``forward`` must not
    be reused.

    Shapes:
        k, v: (B, Hkv, capacity, Dh); key_mask, key_pos: (B, capacity) or None;
        seen: (B,) real tokens so far (the position offset of the next token).
    """

    k: Tensor | None
    v: Tensor | None
    key_mask: Tensor | None
    key_pos: Tensor | None
    seen: Tensor
    length: int = 0

    @property
    def has_padding(self) -> bool:
        return self.key_mask is not None

    def append(self, k: Tensor, v: Tensor, mask: Tensor | None, pos: Tensor | None) -> None:
        """Add T new keys/values (B, Hkv, T, Dh) with their (B, T) mask and positions."""
        B, Hkv, T, Dh = k.shape
        start, end = self.length, self.length + T
        if self.k is None or end > self.k.shape[2]:
            capacity = max(end, 2 * (self.k.shape[2] if self.k is not None else 0), 16)
            self.k = _grow(self.k, start, (B, Hkv, capacity, Dh), k, dim=2)
            self.v = _grow(self.v, start, (B, Hkv, capacity, Dh), v, dim=2)
            if self.key_mask is not None:
                self.key_mask = _grow(self.key_mask, start, (B, capacity), self.key_mask, dim=1)
            if self.key_pos is not None:
                self.key_pos = _grow(self.key_pos, start, (B, capacity), self.key_pos, dim=1)
        capacity = self.k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        if mask is not None and self.key_mask is None:
            self.key_mask = torch.ones(B, capacity, dtype=torch.bool, device=k.device)
        if self.key_mask is not None:
            self.key_mask[:, start:end] = True if mask is None else mask
        if pos is not None:
            if self.key_pos is None:
                self.key_pos = torch.zeros(B, capacity, dtype=torch.long, device=k.device)
            self.key_pos[:, start:end] = pos
        self.seen = self.seen + (T if mask is None else mask.sum(1))
        self.length = end


def _grow(old: Tensor | None, used: int, shape: tuple, like: Tensor, dim: int) -> Tensor:
    """A larger buffer holding the first ``used`` slots (along ``dim``) of ``old``."""
    new = like.new_empty(shape) if like.dtype != torch.bool else like.new_ones(shape)
    if old is not None and used:
        new.narrow(dim, 0, used).copy_(old.narrow(dim, 0, used))
    return new


class Attention(Mixer):
    """Multi-head self-attention (causal or bidirectional) with grouped-query option.

    Args:
        d_model: model width D.
        n_heads: query heads H (D must divide by H).
        n_kv_heads: key/value heads (grouped-query attention); defaults to ``n_heads``.
        causal: mask future positions and allow a streaming state.
        position: a relative position module (rope, alibi) or None.
        kernel: ``sdpa`` (fused) or ``naive`` (reference, warns once: slow).
        dropout: attention-weight dropout during training.
        bias: whether the projections have biases.
    """

    def __init__(self, d_model: int, n_heads: int, *, n_kv_heads: int | None = None,
                 causal: bool = True, position: nn.Module | None = None, kernel: str = "sdpa",
                 dropout: float = 0.0, bias: bool = True):
        super().__init__(d_model)
        n_kv_heads = check_heads(d_model, n_heads, n_kv_heads)
        self.causal = causal
        self.n_heads, self.n_kv_heads, self.d_head = n_heads, n_kv_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.kv_proj = nn.Linear(d_model, 2 * n_kv_heads * self.d_head, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.position = position if isinstance(position, RelativePosition) else None
        self.kernel_name = kernel
        self.kernel = ATTENTION_KERNELS.get(kernel)
        self.dropout = dropout

    def init_state(self, batch_size: int, device=None, dtype=None) -> KVCache:
        return KVCache(None, None, None, None,
                       seen=torch.zeros(batch_size, dtype=torch.long, device=device))

    def forward(self, x: Tensor, state: KVCache | None = None, *,
                padding_mask: Tensor | None = None) -> tuple[Tensor, KVCache | None]:
        padding_mask = self.check_input(x, state, padding_mask)
        B, T, _ = x.shape
        x = masked_fill_padding(x, padding_mask)
        q = self.q_proj(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, Dh)
        k, v = self.kv_proj(x).view(B, T, 2, self.n_kv_heads, self.d_head).permute(2, 0, 3, 1, 4)
        # k, v: (B, Hkv, T, Dh)

        pos = None
        if self.position is not None:
            start = state.seen if state is not None else 0
            pos = positions_from_mask(start, B, T, padding_mask, device=x.device)  # (B, T)
            q, k = self.position.rotate(q, k, pos)

        offset = 0
        if state is not None:
            offset = state.length
            keep_pos = pos if self.position is not None and self.position.uses_key_positions else None
            state.append(k, v, padding_mask, keep_pos)
            k, v = state.k[:, :, : state.length], state.v[:, :, : state.length]
            key_mask = state.key_mask[:, : state.length] if state.has_padding else None
            key_pos = state.key_pos[:, : state.length] if keep_pos is not None else pos
        else:
            key_mask, key_pos = padding_mask, pos

        y = self._attend(q, k, v, pos, key_pos, key_mask, padding_mask, offset)
        y = self.out_proj(y.transpose(1, 2).reshape(B, T, self.d_model))  # (B, T, D)
        return masked_fill_padding(y, padding_mask), state

    def warn_if_slow(self, dropout: float, device: torch.device) -> None:
        """The declared fast path: say once, with the reason, when attention runs slow."""
        if self.kernel_name != "sdpa":
            warn_once(f"attention-kernel-{self.kernel_name}",
                      f"attention kernel {self.kernel_name!r} is the slow reference path; "
                      "use kernel 'sdpa' for torch's fused attention")
        elif dropout > 0 and device.type == "cpu":
            warn_once("attention-dropout-cpu",
                      "attention-weight dropout takes scaled_dot_product_attention off its fused "
                      "kernel on CPU (the unfused math path is several times slower); set "
                      "mixer_options.attention.dropout to 0 for the fast path")

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, k_pos: Tensor,
                key_mask: Tensor | None, query_mask: Tensor | None, offset: int) -> Tensor:
        """Combine q (B, H, Tq, Dh) with k, v (B, Hkv, Tk, Dh) under causal/padding masks."""
        Tq, Tk = q.shape[2], k.shape[2]
        bias = self.position.bias(q_pos, k_pos) if self.position is not None else None
        dropout = self.dropout if self.training else 0.0
        self.warn_if_slow(dropout, q.device)

        mask = None
        if key_mask is not None:
            mask = key_mask[:, None, None, :]  # (B, 1, 1, Tk)
        causal_square = self.causal and offset == 0 and Tq == Tk
        if self.causal and Tq > 1 and (mask is not None or bias is not None or not causal_square):
            # Query i sits at cache slot offset + i and sees slots up to it.
            allowed = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(offset)
            mask = allowed if mask is None else mask & allowed
        if mask is None and bias is None:
            return self.kernel(q, k, v, mask=None, is_causal=causal_square and Tq > 1,
                               dropout=dropout)

        if mask is not None:
            # A query with no visible key (e.g. a padded slot) would give NaN: let it see
            # every key, then zero its output, so values and gradients stay finite.
            mask = mask.expand(q.shape[0], 1, Tq, Tk)
            has_key = mask.any(-1, keepdim=True)  # (B, 1, Tq, 1)
            mask = mask | ~has_key
        if bias is not None:
            bias = bias.to(q.dtype)
            attn = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        else:
            attn = mask
        y = self.kernel(q, k, v, mask=attn, is_causal=False, dropout=dropout)
        if mask is not None:
            y = y * has_key.to(y.dtype)
        return y
