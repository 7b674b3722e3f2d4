"""Multi-head self-attention with a key/value cache as its streaming state.

The layer (projections, positions, cache) is kept apart from the *kernel* that
combines q, k and v: ``sdpa`` is torch's fused scaled_dot_product_attention,
``naive`` the explicit softmax(QK^T / sqrt(Dh)) V reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.errors import StateError
from seqlab.nn.mixer import BatchState, Mixer, masked_fill_padding, tracing, warn_once
from seqlab.nn.mixers import MixerArgs, register_mixer
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


class _KVStore:
    """The growable buffers behind a chain of cache states, and how far they are written.

    Shapes: k, v (B, Hkv, capacity, Dh); key_mask, key_pos (B, capacity) or None.
    """

    __slots__ = ("k", "v", "key_mask", "key_pos", "written")

    def __init__(self, k: Tensor, v: Tensor, key_mask: Tensor | None, key_pos: Tensor | None,
                 written: int):
        self.k, self.v, self.key_mask, self.key_pos = k, v, key_mask, key_pos
        self.written = written

    @property
    def capacity(self) -> int:
        return self.k.shape[2]


@dataclass
class KVCache(BatchState):
    """Streaming state of an attention layer; a state passed in is never changed.

    ``append`` returns a new state and leaves this one as it was, so two continuations
    of one prompt state (beam forks, a shared prefix) are both exact. It stays amortised
    O(1) per token by copy-on-write: the fields are views of the first ``length`` slots
    of growable buffers (``store``, doubling when full) shared with the states that
    continue this one. The store records how far its buffers have been written; a state
    writes its new tokens in place only when nobody has written past its own length
    (the usual decoding chain, where each state is continued once), and otherwise copies
    its prefix into fresh buffers first, which costs O(length) once per fork. Writes
    land past the length of every state that reads the buffers, so no state sees them.

    The key padding mask is only kept once a padded chunk has been seen, and key
    positions only for encodings that need them (ALiBi), so plain decoding stores keys
    and values alone.

    Shapes:
        k, v: (B, Hkv, length, Dh); key_mask, key_pos: (B, length) or None;
        seen: (B,) real tokens so far (the position offset of the next token).
    """

    k: Tensor | None
    v: Tensor | None
    key_mask: Tensor | None
    key_pos: Tensor | None
    seen: Tensor
    length: int = 0
    store: _KVStore | None = field(default=None, repr=False, compare=False)

    @property
    def has_padding(self) -> bool:
        return self.key_mask is not None

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> KVCache:
        k = tensors.get("k")
        return cls(k, tensors.get("v"), tensors.get("key_mask"), tensors.get("key_pos"),
                   tensors["seen"], 0 if k is None else k.shape[2])

    def append(self, k: Tensor, v: Tensor, mask: Tensor | None, pos: Tensor | None) -> KVCache:
        """This cache followed by T new keys/values (B, Hkv, T, Dh) with their (B, T)
        mask and positions, as a new state; this one is left unchanged."""
        T = k.shape[2]
        if tracing():  # an exported graph: plain concatenation, no shared buffers
            return self._concatenated(k, v, mask, pos)
        start, end = self.length, self.length + T
        store = self.store
        if store is None or store.written != start or end > store.capacity:
            # A fork (someone wrote past our length), full buffers, or the first chunk.
            capacity = store.capacity if store is not None else 0
            store = self._copy(max(end, 2 * capacity, 16) if end > capacity else capacity, k)
        store.k[:, :, start:end] = k
        store.v[:, :, start:end] = v
        has_mask = self.key_mask is not None or mask is not None
        if has_mask:
            if self.key_mask is None:  # the first padded chunk: earlier keys are all real
                store.key_mask = torch.ones(k.shape[0], store.capacity, dtype=torch.bool,
                                            device=k.device)
            store.key_mask[:, start:end] = True if mask is None else mask
        has_pos = self.key_pos is not None or pos is not None
        if pos is not None:
            if self.key_pos is None:
                store.key_pos = torch.zeros(k.shape[0], store.capacity, dtype=torch.long,
                                            device=k.device)
            store.key_pos[:, start:end] = pos
        store.written = end
        return KVCache(store.k[:, :, :end], store.v[:, :, :end],
                       store.key_mask[:, :end] if has_mask else None,
                       store.key_pos[:, :end] if has_pos else None,
                       self.seen + (T if mask is None else mask.sum(1)), end, store)

    def _concatenated(self, k: Tensor, v: Tensor, mask: Tensor | None, pos: Tensor | None) -> KVCache:
        """``append`` without growable buffers (only unpadded chunks: what export traces)."""
        if mask is not None or self.key_mask is not None:
            raise StateError("an exported attention step takes no padding")
        seen = self.seen + k.shape[2]
        if self.k is not None:
            k, v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
            pos = None if pos is None else torch.cat([self.key_pos, pos], dim=1)
        return KVCache(k, v, None, pos, seen, k.shape[2])

    def _copy(self, capacity: int, like: Tensor) -> _KVStore:
        """Fresh buffers of ``capacity`` slots holding this state's keys and values."""
        B, Hkv, _, Dh = like.shape

        def buffer(old: Tensor | None, shape: tuple, dtype: torch.dtype, dim: int) -> Tensor:
            new = like.new_empty(shape, dtype=dtype)
            if old is not None and self.length:
                new.narrow(dim, 0, self.length).copy_(old)
            return new

        slots = (B, capacity)
        return _KVStore(
            buffer(self.k, (B, Hkv, capacity, Dh), like.dtype, 2),
            buffer(self.v, (B, Hkv, capacity, Dh), like.dtype, 2),
            None if self.key_mask is None else buffer(self.key_mask, slots, torch.bool, 1),
            None if self.key_pos is None else buffer(self.key_pos, slots, torch.long, 1),
            written=self.length,
        )

    def reorder(self, index: Tensor) -> KVCache:
        """The selected batch rows, in buffers of their own (nothing shared with this
        state); this state is left unchanged."""
        if self.store is None:
            return super().reorder(index)
        store = self.store
        picked = _KVStore(
            store.k.index_select(0, index), store.v.index_select(0, index),
            None if self.key_mask is None else store.key_mask.index_select(0, index),
            None if self.key_pos is None else store.key_pos.index_select(0, index),
            written=self.length,
        )
        end = self.length
        return KVCache(picked.k[:, :, :end], picked.v[:, :, :end],
                       None if picked.key_mask is None else picked.key_mask[:, :end],
                       None if picked.key_pos is None else picked.key_pos[:, :end],
                       self.seen.index_select(0, index), end, picked)


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
            state = state.append(k, v, padding_mask, keep_pos)
            k, v, key_mask = state.k, state.v, state.key_mask
            key_pos = state.key_pos if keep_pos is not None else pos
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
        causal_square = bool(self.causal and offset == 0 and Tq == Tk)
        if self.causal and Tq > 1 and (mask is not None or bias is not None or not causal_square):
            # Query i sits at cache slot offset + i and sees slots up to it.
            allowed = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(offset)
            mask = allowed if mask is None else mask & allowed
        if mask is None and bias is None:
            # (A traced graph keeps is_causal for one query too, where it changes nothing,
            # rather than branch on the length.)
            return self.kernel(q, k, v, mask=None, is_causal=causal_square and (tracing() or Tq > 1),
                               dropout=dropout)

        guard = mask is not None and self._some_query_sees_no_key(key_mask, offset)
        if guard:
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
        if guard:
            y = y * has_key.to(y.dtype)
        return y

    def _some_query_sees_no_key(self, key_mask: Tensor | None, offset: int) -> bool:
        """Whether a query row could be left with no visible key, so the guard is needed.
        Without padding every query sees at least slot 0; with padding, a row with no real
        key, or (causal) a row whose first real key comes after the first query's slot,
        leaves some query blind. Right-padded batches skip the guard's (B, Tq, Tk) work."""
        if key_mask is None:
            return False
        if not bool(key_mask.any(-1).all()):
            return True
        if not self.causal:
            return False
        first = key_mask.to(torch.int8).argmax(-1)  # (B,) first real key slot
        return bool((first > offset).any())


@dataclass
class AttentionOptions:
    """``dropout`` is on the attention weights (separate from ``model.dropout`` on the
    residual branches): off by default because on CPU it takes SDPA off its fused kernel."""

    kernel: str = "sdpa"
    bias: bool = True
    dropout: float = 0.0


@register_mixer("attention", AttentionOptions, uses_positions=True)
def _attention(a: MixerArgs, o: AttentionOptions) -> Mixer:
    return Attention(a.d_model, a.n_heads, n_kv_heads=a.n_kv_heads, causal=a.causal,
                     position=a.position, kernel=o.kernel, dropout=o.dropout, bias=o.bias)
