"""Segment-recurrent attention with raw and compressed memory.

Transformer-XL (Dai et al., 2019, arXiv:1901.02860) splits a sequence into segments and
lets each segment attend to the cached keys/values of the previous ones; the Compressive
Transformer (Rae et al., 2019, arXiv:1911.05507) keeps going past that window by
compressing the segments that fall out of raw memory (here: mean-pooling, the paper's
simplest compression function, which needs no auxiliary reconstruction loss) into a FIFO
of slots. The state is bounded, yet a token up to
``segment * (memory_segments + 1) + compressed_slots * compression_rate`` back can still
be reached.

The rule is defined by each sequence's real-token positions, so that one pass, any split
into chunks, and any padding give the same result. A query at position p lies in segment
``s = p // segment`` and attends to

* the keys of segment s at positions <= p (causal within the segment),
* all keys of the ``memory_segments`` segments before s (raw memory),
* the ``compressed_slots`` most recent pooled slots of segments older than that: segment
  s' is pooled ``compression_rate`` tokens to a slot.

As in Transformer-XL, memory holds this layer's keys/values of earlier tokens (the
projections of the previous layer's outputs for them). A parallel pass has those outputs
for the whole sequence at once, so it needs no segment-by-segment recurrence and no
stop-gradient: it is exact. Every row is laid out *aligned to its own segment
boundaries* (column = position - start of its current segment), which makes the ragged
boundaries of a padded batch uniform blocks of ``segment`` columns; each block attends to
a window of (compressed slots, M + 1 consecutive blocks) under one mask. The parallel
pass is the streaming pass from an empty state, so chunked == full holds by construction.

Positions: rotary positions rotate q and k at their absolute positions before caching,
and pooled keys are means of rotated keys. ALiBi biases use the mean position of a slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.nn.attention import check_heads
from seqlab.nn.mixer import BatchState, Mixer, masked_fill_padding
from seqlab.nn.mixers import MixerArgs, register_mixer
from seqlab.nn.positions import RelativePosition, positions_from_mask


@dataclass
class SegmentMemoryState(BatchState):
    """Streaming state: fixed size whatever the length of the context.

    Keys and values are stored together along the last axis (first Dh: keys, already
    rotated; last Dh: values), so caching, pooling and windowing are done once for both.

    Shapes:
        memory: (B, M + 1, L, Hkv, 2 Dh) the raw segments s - M .. s - 1, then the partial
            current segment s = seen // L (its first seen % L columns are filled);
        compressed: (B, Nc, Hkv, 2 Dh) the newest Nc pooled slots of segments before s - M;
        seen: (B,) real tokens so far.
    Blocks and slots of negative segments (the start of a sequence) are zeros and masked.
    """

    memory: Tensor
    compressed: Tensor
    seen: Tensor


class SegmentMemoryAttention(Mixer):
    """Causal attention over segments with raw and mean-pooled compressed memory.

    Args:
        d_model: model width D.
        n_heads: query heads H (D must divide by H).
        n_kv_heads: key/value heads (grouped-query); memory is kept per kv head.
        position: a relative position module (rope, alibi) or None.
        segment: tokens per segment L.
        memory_segments: raw past segments M kept whole.
        compressed_slots: pooled slots Nc kept (FIFO); 0 disables compression.
        compression_rate: tokens pooled into one slot (must divide ``segment``).
        bias: whether the projections have biases.

    State: :class:`SegmentMemoryState`.
    """

    causal = True

    def __init__(self, d_model: int, n_heads: int, *, n_kv_heads: int | None = None,
                 position: nn.Module | None = None, segment: int = 64,
                 memory_segments: int = 1, compressed_slots: int = 32,
                 compression_rate: int = 4, bias: bool = True):
        super().__init__(d_model)
        n_kv_heads = check_heads(d_model, n_heads, n_kv_heads)
        if segment < 1 or memory_segments < 0 or compressed_slots < 0 or compression_rate < 1:
            raise ValueError(f"need segment >= 1, memory_segments >= 0, compressed_slots >= 0 "
                             f"and compression_rate >= 1; got {segment}, {memory_segments}, "
                             f"{compressed_slots}, {compression_rate}")
        if segment % compression_rate:
            raise ValueError(f"compression_rate ({compression_rate}) must divide segment "
                             f"({segment}) so that no pooled slot straddles two segments")
        self.n_heads, self.n_kv_heads, self.d_head = n_heads, n_kv_heads, d_model // n_heads
        self.segment, self.memory_segments = segment, memory_segments
        self.compressed_slots, self.compression_rate = compressed_slots, compression_rate
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.kv_proj = nn.Linear(d_model, 2 * n_kv_heads * self.d_head, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.position = position if isinstance(position, RelativePosition) else None

    def init_state(self, batch_size: int, device=None, dtype=None) -> SegmentMemoryState:
        dtype = dtype or self.q_proj.weight.dtype
        L, M, Hkv, Dh = self.segment, self.memory_segments, self.n_kv_heads, self.d_head
        return SegmentMemoryState(
            memory=torch.zeros(batch_size, M + 1, L, Hkv, 2 * Dh, device=device, dtype=dtype),
            compressed=torch.zeros(batch_size, self.compressed_slots, Hkv, 2 * Dh,
                                   device=device, dtype=dtype),
            seen=torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    def forward(self, x: Tensor, state: SegmentMemoryState | None = None, *,
                padding_mask: Tensor | None = None) -> tuple[Tensor, SegmentMemoryState | None]:
        padding_mask = self.check_input(x, state, padding_mask)
        B, T, _ = x.shape
        H, Hkv, Dh = self.n_heads, self.n_kv_heads, self.d_head
        L, M, Nc = self.segment, self.memory_segments, self.compressed_slots
        P = L // self.compression_rate  # pooled slots per segment
        x = masked_fill_padding(x, padding_mask)  # also clears NaN stored in padding
        carried = state if state is not None else self.init_state(B, x.device, x.dtype)

        q = self.q_proj(x).view(B, T, H, Dh)  # (B, T, H, Dh)
        k, v = self.kv_proj(x).view(B, T, 2, Hkv, Dh).unbind(2)  # (B, T, Hkv, Dh) each
        pos = positions_from_mask(carried.seen, B, T, padding_mask, device=x.device)  # (B, T)
        if self.position is not None:
            q, k = self.position.rotate(q.transpose(1, 2), k.transpose(1, 2), pos)
            q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, T, H|Hkv, Dh)
        kv = torch.cat([k, v], -1)  # (B, T, Hkv, 2 Dh)

        # Align every row to its own segment grid: column 0 is the start of its current segment.
        seg0 = torch.div(carried.seen, L, rounding_mode="floor")  # (B,)
        col = pos - seg0[:, None] * L  # (B, T); a pad points at the next free column
        real = padding_mask if padding_mask is not None else torch.ones_like(pos, dtype=torch.bool)
        end = carried.seen + real.sum(1) - seg0 * L  # (B,) filled columns after this chunk
        n_blocks = int(end.max()) // L + 1 if B else 1
        b_idx, t_idx = real.nonzero(as_tuple=True)
        buf = torch.cat([carried.memory.to(kv.dtype).flatten(1, 2),
                         kv.new_zeros(B, (n_blocks - 1) * L, Hkv, 2 * Dh)], 1)
        buf = buf.index_put((b_idx, M * L + col[b_idx, t_idx]), kv[b_idx, t_idx])
        blocks = buf.view(B, M + n_blocks, L, Hkv, 2 * Dh)  # (B, M + n_blocks, L, Hkv, 2 Dh)
        # block e holds segment seg0 - M + e

        # Block j (segment seg0 + j) sees blocks j .. j + M: raw memory then itself.
        raw = torch.stack([blocks[:, m:m + n_blocks] for m in range(M + 1)], 2)
        # raw: (B, n_blocks, M + 1, L, Hkv, 2 Dh)
        keys = raw.flatten(2, 3)  # (B, n_blocks, (M + 1) L, Hkv, 2 Dh)
        comp = None
        if Nc:
            # Segments that fall out of raw memory, rate tokens to a slot.
            pooled = blocks[:, :n_blocks - 1].reshape(B, n_blocks - 1, P, L // P, Hkv, 2 * Dh)
            pooled = pooled.mean(3).flatten(1, 2)  # (B, (n_blocks - 1) P, Hkv, 2 Dh)
            fifo = torch.cat([carried.compressed.to(kv.dtype), pooled], 1)
            # Block j sees the newest Nc slots of everything pooled before its raw window.
            comp = fifo.unfold(1, Nc, P).permute(0, 1, 4, 2, 3)  # (B, n_blocks, Nc, Hkv, 2 Dh)
            keys = torch.cat([comp, keys], 2)  # (B, n_blocks, K, Hkv, 2 Dh)
        keys = keys.transpose(2, 3)  # (B, n_blocks, Hkv, K, 2 Dh)
        k_win, v_win = keys[..., :Dh], keys[..., Dh:]
        allowed, k_pos = self._window_mask(seg0, n_blocks)  # (B, n_blocks, L, K), (B, n_blocks, K)

        if T < L:  # short chunk (decoding): gather each token's window, no empty query slots
            rows = torch.arange(B, device=x.device)[:, None]
            blk, off = torch.div(col, L, rounding_mode="floor"), col % L  # (B, T)
            mask = allowed[rows, blk, off][:, :, None, None]  # (B, T, 1, 1, K)
            bias = self._bias(pos, k_pos[rows, blk])
            y = self._attend(q[:, :, :, None], k_win[rows, blk], v_win[rows, blk], mask, bias)
            y = y[:, :, :, 0]  # (B, T, H, Dh)
        else:
            W = n_blocks * L
            qbuf = q.new_zeros(B, W, H, Dh).index_put((b_idx, col[b_idx, t_idx]), q[b_idx, t_idx])
            qb = qbuf.view(B, n_blocks, L, H, Dh).transpose(2, 3)  # (B, n_blocks, H, L, Dh)
            q_pos = seg0[:, None, None] * L + torch.arange(W, device=x.device).view(1, n_blocks, L)
            bias = self._bias(q_pos, k_pos)
            y = self._attend(qb, k_win, v_win, allowed[:, :, None], bias)  # (B, n_blocks, H, L, Dh)
            y = y.transpose(2, 3).reshape(B, W, H, Dh)  # (B, W, H, Dh)
            y = y[torch.arange(B, device=x.device)[:, None], col]  # (B, T, H, Dh)

        y = self.out_proj(y.reshape(B, T, self.d_model))  # (B, T, D)
        y = masked_fill_padding(y, padding_mask)
        if state is None:
            return y, None
        seen = carried.seen + real.sum(1)
        done = torch.div(seen, L, rounding_mode="floor") - seg0  # (B,) segments completed
        rows = torch.arange(B, device=x.device)
        return y, SegmentMemoryState(
            memory=raw[rows, done],  # (B, M + 1, L, Hkv, 2 Dh)
            compressed=comp[rows, done] if comp is not None else carried.compressed,
            seen=seen,
        )

    def _window_mask(self, seg0: Tensor, n_blocks: int) -> tuple[Tensor, Tensor]:
        """Which window keys each query column of each block may see, and their positions.

        Returns:
            allowed: (B, n_blocks, L, K) bool; k_pos: (B, n_blocks, K) float positions
            (a pooled slot sits at the mean position of its tokens).
        """
        L, M, Nc = self.segment, self.memory_segments, self.compressed_slots
        rate, device = self.compression_rate, seg0.device
        P = L // rate
        seg = seg0[:, None] + torch.arange(n_blocks, device=device)  # (B, n_blocks)
        B = seg.shape[0]
        masks, positions = [], []
        if Nc:
            slot = (seg - M)[..., None] * P - Nc + torch.arange(Nc, device=device)  # (B, nb, Nc)
            masks.append((slot >= 0)[:, :, None].expand(B, n_blocks, L, Nc))
            positions.append(slot * rate + (rate - 1) / 2)
        if M:
            raw_seg = (seg - M)[..., None] + torch.arange(M, device=device)  # (B, nb, M)
            raw_ok = (raw_seg >= 0).repeat_interleave(L, -1)  # (B, nb, M L)
            masks.append(raw_ok[:, :, None].expand(B, n_blocks, L, M * L))
        causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()
        masks.append(causal.expand(B, n_blocks, L, L))
        positions.append((seg - M)[..., None] * L + torch.arange((M + 1) * L, device=device))
        return torch.cat(masks, -1), torch.cat([p.float() for p in positions], -1)

    def _bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor | None:
        """Score bias (..., H, Tq, K) for q_pos (B, N, Tq) or (B, T), k_pos (B, N, K)."""
        if self.position is None:
            return None
        lead = k_pos.shape[:2]
        q_pos = q_pos.reshape(lead.numel(), -1)  # (B N, Tq)
        bias = self.position.bias(q_pos, k_pos.reshape(lead.numel(), -1))  # (B N, H, Tq, K)
        return None if bias is None else bias.view(*lead, *bias.shape[1:])

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor,
                bias: Tensor | None) -> Tensor:
        """softmax(q k^T / sqrt(Dh) + bias) v under ``mask``.

        q: (B, N, H, Tq, Dh); k, v: (B, N, Hkv, K, Dh); mask: (B, N, 1, Tq, K) bool. Every
        query sees at least itself, so no row is fully masked.
        """
        attn = mask if bias is None else bias.to(q.dtype).masked_fill(~mask, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn,
                                              enable_gqa=k.shape[2] != q.shape[2])


@dataclass
class SegmentMemoryOptions:
    """``segment``: tokens per segment; ``memory_segments``: raw past segments kept;
    ``compressed_slots``: pooled slots kept; ``compression_rate``: tokens per pooled slot."""

    segment: int = 64
    memory_segments: int = 1
    compressed_slots: int = 32
    compression_rate: int = 4
    bias: bool = True


@register_mixer("segment_memory", SegmentMemoryOptions, uses_positions=True, modes=("causal",))
def _segment_memory(a: MixerArgs, o: SegmentMemoryOptions) -> Mixer:
    if not a.causal:
        raise ValueError("segment_memory is causal only (its memory runs left to right)")
    return SegmentMemoryAttention(a.d_model, a.n_heads, n_kv_heads=a.n_kv_heads,
                                  position=a.position, segment=o.segment,
                                  memory_segments=o.memory_segments,
                                  compressed_slots=o.compressed_slots,
                                  compression_rate=o.compression_rate, bias=o.bias)
