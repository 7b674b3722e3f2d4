"""Kernelised linear attention (Katharopoulos et al., 2020, arXiv:2006.16236).

Softmax attention weighs value ``v_j`` by ``exp(q_i . k_j)``. Replacing the exponential
with a feature-map dot product ``phi(q_i) . phi(k_j)`` lets the sums be reassociated:

    y_i = phi(q_i) (sum_j phi(k_j) v_j^T) / (phi(q_i) . sum_j phi(k_j))

so the cost is linear in time and a causal layer is an RNN whose state is the pair
``S = sum phi(k) v^T`` (B, Hkv, Dh, Dh) and ``z = sum phi(k)`` (B, Hkv, Dh): decoding a
token is O(1) whatever the context length.

The causal parallel pass is *chunkwise* (the form used by Hua et al., 2022,
arXiv:2202.10447, and Yang et al., 2023, arXiv:2312.06635): inside a chunk of C tokens the
masked quadratic form, across chunks the running ``S`` from an exclusive cumulative sum
of per-chunk ``phi(k)^T v``. It costs O(T C Dh) inside chunks plus O(T Dh^2) across them,
with no Python loop over time and no T x T matrix; the denominator is a plain cumulative
sum of ``phi(k)``.

Rotary positions follow RoFormer (Su et al., 2021, arXiv:2104.09864, §3.4.3): the
numerator uses rotated features ``R_i phi(q_i) . R_j phi(k_j)`` and the denominator the
unrotated ones, which keeps it positive. ALiBi is a bias on the T x T scores that linear
attention never forms, so it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.nn.attention import check_heads
from seqlab.nn.mixer import BatchState, Mixer, masked_fill_padding
from seqlab.nn.mixers import MixerArgs, register_mixer
from seqlab.nn.positions import RelativePosition, RotaryPosition, positions_from_mask
from seqlab.registry import Registry

FEATURE_MAPS: Registry = Registry("linear-attention feature map")
FEATURE_MAPS.add("elu", lambda x: F.elu(x) + 1.0)  # the paper's choice: positive, smooth
FEATURE_MAPS.add("relu", F.relu)


@dataclass
class LinearAttentionState(BatchState):
    """Streaming state of a causal linear-attention layer: O(1) in the context length.

    Shapes:
        kv: (B, Hkv, Dh, Dh) sum of R phi(k) v^T over real tokens (R: rotation, or identity);
        k_sum: (B, Hkv, Dh) sum of phi(k) over real tokens;
        seen: (B,) real tokens so far (the rotary position of the next token).
    """

    kv: Tensor
    k_sum: Tensor
    seen: Tensor


def causal_linear_attention(q: Tensor, k: Tensor, v: Tensor, qr: Tensor, kr: Tensor,
                            kv0: Tensor, k_sum0: Tensor, *, chunk_size: int,
                            eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Chunkwise causal linear attention continuing from ``(kv0, k_sum0)``.

    Args:
        q, qr: (B, Hkv, G, T, Dh) query features, plain and rotated (G query heads per kv head).
        k, kr: (B, Hkv, T, Dh) key features, plain and rotated; zero at padded tokens.
        v: (B, Hkv, T, Dh) values, zero at padded tokens.
        kv0: (B, Hkv, Dh, Dh) and k_sum0: (B, Hkv, Dh), the state before this chunk.

    Returns:
        y (B, Hkv, G, T, Dh) and the state after the last token.
    """
    B, Hkv, G, T, Dh = q.shape
    C = max(1, min(chunk_size, T))
    n = -(-T // C)
    pad = n * C - T  # zero keys/values appended at the end change no earlier output
    den = (q * (k_sum0[:, :, None] + k.cumsum(2)).unsqueeze(2)).sum(-1)  # (B, Hkv, G, T)

    qc = F.pad(qr, (0, 0, 0, pad)).view(B, Hkv, G, n, C, Dh)
    kc = F.pad(kr, (0, 0, 0, pad)).view(B, Hkv, 1, n, C, Dh)
    vc = F.pad(v, (0, 0, 0, pad)).view(B, Hkv, 1, n, C, Dh)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    scores = (qc @ kc.transpose(-1, -2)).masked_fill(~causal, 0.0)  # (B, Hkv, G, n, C, C)
    num = scores @ vc  # (B, Hkv, G, n, C, Dh)

    chunk_kv = kc.transpose(-1, -2) @ vc  # (B, Hkv, 1, n, Dh, Dh)
    running = kv0[:, :, None, None] + chunk_kv.cumsum(3)  # inclusive, (B, Hkv, 1, n, Dh, Dh)
    before = torch.cat([kv0[:, :, None, None], running[:, :, :, :-1]], 3)  # exclusive
    num = num + qc @ before  # (B, Hkv, G, n, C, Dh)
    num = num.view(B, Hkv, G, n * C, Dh)[:, :, :, :T]  # (B, Hkv, G, T, Dh)

    y = num / (den.unsqueeze(-1) + eps)
    return y, running[:, :, 0, -1], k_sum0 + k.sum(2)


def bidirectional_linear_attention(q: Tensor, k: Tensor, v: Tensor, qr: Tensor, kr: Tensor,
                                   *, eps: float) -> Tensor:
    """Every query sees every (real) key: one (Dh, Dh) summary per kv head.

    Shapes as in :func:`causal_linear_attention`; returns y (B, Hkv, G, T, Dh).
    """
    kv = kr.transpose(-1, -2) @ v  # (B, Hkv, Dh, Dh)
    den = (q * k.sum(2)[:, :, None, None]).sum(-1)  # (B, Hkv, G, T)
    return (qr @ kv.unsqueeze(2)) / (den.unsqueeze(-1) + eps)


class LinearAttention(Mixer):
    """Multi-head linear attention, causal (with an O(1) state) or bidirectional.

    Args:
        d_model: model width D.
        n_heads: query heads H (D must divide by H).
        n_kv_heads: key/value heads (grouped-query); the state is kept per kv head.
        causal: mask future tokens and allow a streaming state.
        position: a rotary position module, or None. ALiBi raises ``ValueError``.
        feature_map: ``elu`` (elu(x) + 1, the paper's) or ``relu``.
        chunk_size: tokens per chunk of the causal parallel pass (memory ~ T * chunk_size).
        eps: added to the normaliser.
        bias: whether the projections have biases.

    State: :class:`LinearAttentionState`.
    """

    def __init__(self, d_model: int, n_heads: int, *, n_kv_heads: int | None = None,
                 causal: bool = True, position: nn.Module | None = None,
                 feature_map: str = "elu", chunk_size: int = 64, eps: float = 1e-6,
                 bias: bool = True):
        super().__init__(d_model)
        n_kv_heads = check_heads(d_model, n_heads, n_kv_heads)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        if isinstance(position, RelativePosition) and not isinstance(position, RotaryPosition):
            raise ValueError(f"linear attention supports rotary positions or none, not "
                             f"{type(position).__name__}: a score bias needs the T x T scores "
                             "that linear attention never forms; use position 'rope'")
        self.phi = FEATURE_MAPS.get(feature_map)
        self.causal, self.chunk_size, self.eps = causal, chunk_size, eps
        self.n_heads, self.n_kv_heads, self.d_head = n_heads, n_kv_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.kv_proj = nn.Linear(d_model, 2 * n_kv_heads * self.d_head, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.position = position if isinstance(position, RotaryPosition) else None

    def init_state(self, batch_size: int, device=None, dtype=None) -> LinearAttentionState:
        # Sums over the whole context: keep them at least float32 whatever the model dtype.
        dtype = torch.promote_types(dtype or torch.float32, torch.float32)
        Hkv, Dh = self.n_kv_heads, self.d_head
        return LinearAttentionState(
            kv=torch.zeros(batch_size, Hkv, Dh, Dh, device=device, dtype=dtype),
            k_sum=torch.zeros(batch_size, Hkv, Dh, device=device, dtype=dtype),
            seen=torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    def forward(self, x: Tensor, state: LinearAttentionState | None = None, *,
                padding_mask: Tensor | None = None) -> tuple[Tensor, LinearAttentionState | None]:
        padding_mask = self.check_input(x, state, padding_mask)
        B, T, _ = x.shape
        H, Hkv, Dh = self.n_heads, self.n_kv_heads, self.d_head
        x = masked_fill_padding(x, padding_mask)  # also clears NaN stored in padding
        work = torch.promote_types(x.dtype, torch.float32)
        q = self.q_proj(x).view(B, T, H, Dh).transpose(1, 2).to(work)  # (B, H, T, Dh)
        k, v = self.kv_proj(x).view(B, T, 2, Hkv, Dh).permute(2, 0, 3, 1, 4).to(work)
        # k, v: (B, Hkv, T, Dh)
        q, k = self.phi(q), self.phi(k)
        if padding_mask is not None:
            keep = padding_mask[:, None, :, None]  # (B, 1, T, 1)
            k, v = k.masked_fill(~keep, 0.0), v.masked_fill(~keep, 0.0)

        qr, kr = q, k
        if self.position is not None:
            start = state.seen if state is not None else 0
            pos = positions_from_mask(start, B, T, padding_mask, device=x.device)  # (B, T)
            qr, kr = self.position.rotate(q, k, pos)
        grouped = (B, Hkv, H // Hkv, T, Dh)
        q, qr = q.reshape(grouped), qr.reshape(grouped)  # (B, Hkv, G, T, Dh)

        if not self.causal:
            y = bidirectional_linear_attention(q, k, v, qr, kr, eps=self.eps)
        else:
            if state is None:
                kv0 = k.new_zeros(B, Hkv, Dh, Dh)
                k_sum0 = k.new_zeros(B, Hkv, Dh)
            else:
                kv0, k_sum0 = state.kv.to(work), state.k_sum.to(work)
            y, kv, k_sum = causal_linear_attention(q, k, v, qr, kr, kv0, k_sum0,
                                                   chunk_size=self.chunk_size, eps=self.eps)
            if state is not None:
                real = padding_mask.sum(1) if padding_mask is not None else T
                state = LinearAttentionState(kv.to(state.kv.dtype), k_sum.to(state.k_sum.dtype),
                                             state.seen + real)
        y = y.reshape(B, H, T, Dh).transpose(1, 2).reshape(B, T, self.d_model)  # (B, T, D)
        y = self.out_proj(y.to(x.dtype))
        return masked_fill_padding(y, padding_mask), state


@dataclass
class LinearAttentionOptions:
    """``feature_map``: ``elu`` or ``relu``; ``chunk_size``: tokens per chunk of the causal
    parallel pass; ``eps``: added to the normaliser."""

    feature_map: str = "elu"
    chunk_size: int = 64
    eps: float = 1e-6
    bias: bool = True


@register_mixer("linear_attention", LinearAttentionOptions, uses_positions=True)
def _linear_attention(a: MixerArgs, o: LinearAttentionOptions) -> Mixer:
    return LinearAttention(a.d_model, a.n_heads, n_kv_heads=a.n_kv_heads, causal=a.causal,
                           position=a.position, feature_map=o.feature_map,
                           chunk_size=o.chunk_size, eps=o.eps, bias=o.bias)
