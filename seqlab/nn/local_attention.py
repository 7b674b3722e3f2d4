"""Local attention: a sliding window, and a window plus global tokens.

Full attention costs O(T^2) time and memory. Most of what a token needs is nearby, so
``window_attention`` lets each query see only the ``window`` keys around it
(Longformer, Beltagy et al., 2020, arXiv:2004.05150), and ``sparse_attention`` adds a
few *global* tokens that see and are seen by every position, so information can still
cross the whole sequence in two layers (Longformer's global attention; BigBird, Zaheer
et al., 2020, arXiv:2007.14062).

Both are computed *blocked*: time is cut into blocks of ``window`` queries, and each
block attends to a strip of ``2 * window`` keys (``3 * window`` when it may look ahead)
under a band mask, so time and memory are O(T * window) and no (T, T) score matrix is
ever formed. The strips go through the same q/k/v kernels as full attention
(``ATTENTION_KERNELS``: fused ``sdpa`` or the ``naive`` reference).

The window counts real tokens, not slots: padding occupies no position. Each sequence's
real tokens are first moved to the front of the batch row (a stable gather), which makes
slot distance equal position distance for left, right and interior padding alike; the
outputs are scattered back at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.nn.attention import Attention
from seqlab.nn.mixer import BatchState, Mixer, masked_fill_padding, real_tokens_first
from seqlab.nn.mixers import MixerArgs, register_mixer
from seqlab.nn.positions import RelativePosition, positions_from_mask


def banded_attention(kernel, q: Tensor, k: Tensor, v: Tensor, key_valid: Tensor, q_pos: Tensor,
                     k_pos: Tensor, *, window: int, lookahead: bool,
                     position: RelativePosition | None = None, dropout: float = 0.0,
                     extra: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> Tensor:
    """Sliding-window attention computed block by block, O(T * window) memory.

    Query ``j`` sits at key slot ``P + j``, where ``P = k.shape[2] - q.shape[2]`` keys
    precede the chunk (a rolling cache). It sees the valid keys at slots
    ``P + j - window < s <= P + j`` and, with ``lookahead``, also up to ``P + j + window - 1``.
    Queries are cut into blocks of ``b = min(T, window)``; block ``i`` gets the strip of
    ``b + before + after`` keys around it (``Tensor.unfold``, one copy per strip) and a
    fixed band mask, so the largest score tensor is (b, b + before + after [+ G]).

    Args:
        kernel: an ``ATTENTION_KERNELS`` entry.
        q: (B, H, T, Dh) queries (positions already applied).
        k, v: (B, Hkv, P + T, Dh) keys and values; the last T belong to the queries' chunk.
        key_valid: (B, P + T) bool, False for padded or empty key slots.
        q_pos, k_pos: (B, T), (B, P + T) positions, for an additive position bias.
        window: keys at distance < window are visible.
        lookahead: also see later keys (bidirectional).
        position: relative position module whose ``bias`` is added (ALiBi), or None.
        dropout: attention-weight dropout.
        extra: ``(k, v, valid, pos)`` of G keys every query sees besides its band
            (global tokens), shapes (B, Hkv, G, Dh), (B, Hkv, G, Dh), (B, G), (B, G).

    Returns:
        (B, H, T, Dh); zeros for a query with no visible key.
    """
    B, H, T, Dh = q.shape
    Hkv, L = k.shape[1], k.shape[2]
    P = L - T
    before = min(window - 1, L - 1)  # no key lies further back than the first one
    after = min(window - 1, T - 1) if lookahead else 0
    if P > before:  # cache slots beyond the window's reach
        k, v = k[:, :, P - before:], v[:, :, P - before:]
        key_valid, k_pos, P = key_valid[:, P - before:], k_pos[:, P - before:], before
    b = min(T, window)
    nb = -(-T // b)
    Tp, span = nb * b, b + before + after
    left, right = before - P, nb * b - T + after
    # Pad so block i's strip is slots [i*b, i*b + span) and each query has `before` slots behind.
    k = F.pad(k, (0, 0, left, right))  # (B, Hkv, before + Tp + after, Dh)
    v = F.pad(v, (0, 0, left, right))
    key_valid = F.pad(key_valid, (left, right), value=False)  # (B, before + Tp + after)
    k_pos = F.pad(k_pos, (left, right))
    q = F.pad(q, (0, 0, 0, Tp - T))  # (B, H, Tp, Dh)
    q_pos = F.pad(q_pos, (0, Tp - T))  # (B, Tp)

    qb = q.view(B, H, nb, b, Dh).transpose(1, 2).reshape(B * nb, H, b, Dh)  # (B*nb, H, b, Dh)
    kb = k.unfold(2, span, b).permute(0, 2, 1, 4, 3).reshape(B * nb, Hkv, span, Dh)
    vb = v.unfold(2, span, b).permute(0, 2, 1, 4, 3).reshape(B * nb, Hkv, span, Dh)
    # kb, vb: (B*nb, Hkv, span, Dh)
    offset = torch.arange(span, device=q.device) - torch.arange(b, device=q.device)[:, None]
    band = (offset >= 0) & (offset <= before + after)  # (b, span): query a sees strip slot c
    mask = band & key_valid.unfold(1, span, b)[:, :, None, :]  # (B, nb, b, span)
    mask = mask.reshape(B * nb, 1, b, span)
    qp = q_pos.view(B * nb, b)
    kp = k_pos.unfold(1, span, b).reshape(B * nb, span)

    if extra is not None:
        gk, gv, g_valid, g_pos = extra
        G = gk.shape[2]
        gk = gk.unsqueeze(1).expand(B, nb, Hkv, G, Dh).reshape(B * nb, Hkv, G, Dh)
        gv = gv.unsqueeze(1).expand(B, nb, Hkv, G, Dh).reshape(B * nb, Hkv, G, Dh)
        kb, vb = torch.cat([kb, gk], 2), torch.cat([vb, gv], 2)  # (B*nb, Hkv, span + G, Dh)
        g_mask = g_valid[:, None, None, None, :].expand(B, nb, 1, b, G).reshape(B * nb, 1, b, G)
        mask = torch.cat([mask, g_mask], -1)  # (B*nb, 1, b, span + G)
        kp = torch.cat([kp, g_pos.unsqueeze(1).expand(B, nb, G).reshape(B * nb, G)], -1)

    # A query with no visible key (padding) would give NaN: let it see every key of its
    # strip, then zero its output, so values and gradients stay finite.
    has_key = mask.any(-1, keepdim=True)  # (B*nb, 1, b, 1)
    mask = mask | ~has_key
    bias = position.bias(qp, kp) if position is not None else None  # (B*nb, H, b, span [+ G])
    attn = mask if bias is None else bias.to(q.dtype).masked_fill(~mask, float("-inf"))
    y = kernel(qb, kb, vb, mask=attn, is_causal=False, dropout=dropout) * has_key.to(q.dtype)
    return y.view(B, nb, H, b, Dh).transpose(1, 2).reshape(B, H, Tp, Dh)[:, :, :T]  # (B, H, T, Dh)


@dataclass
class WindowCache(BatchState):
    """Streaming state of window attention: only the last ``window - 1`` keys, so decoding
    memory stays constant however long the sequence grows.

    Slots are right-aligned: the newest real key is in the last slot, and slots never
    filled are marked False in ``key_mask``. Keys are stored after rotation (rope).

    Shapes:
        k, v: (B, Hkv, window - 1, Dh); key_mask, key_pos: (B, window - 1);
        seen: (B,) real tokens so far (the position of the next token).
    """

    k: Tensor
    v: Tensor
    key_mask: Tensor
    key_pos: Tensor
    seen: Tensor


class WindowAttention(Attention):
    """Sliding-window multi-head attention (Longformer, arXiv:2004.05150).

    Causal: query t sees the keys in (t - window, t]; bidirectional: |t - s| < window.
    Same projections and parameter names as ``Attention``, so weights move between the two;
    with ``window >= T`` the result equals full attention.

    Args:
        d_model: model width D.
        n_heads: query heads H.
        window: keys per query (causal), or the half-width of the band (bidirectional).
        n_kv_heads: key/value heads (grouped-query attention); defaults to ``n_heads``.
        causal: look only back and allow a streaming state (a ``WindowCache``).
        position: a relative position module (rope, alibi) or None.
        kernel: ``sdpa`` (fused) or ``naive`` (reference), applied to each block.
        dropout: attention-weight dropout during training.
        bias: whether the projections have biases.

    Shapes:
        x: (B, T, D) -> y: (B, T, D); padding_mask: (B, T) bool, True = real token.
    """

    def __init__(self, d_model: int, n_heads: int, *, window: int, n_kv_heads: int | None = None,
                 causal: bool = True, position: nn.Module | None = None, kernel: str = "sdpa",
                 dropout: float = 0.0, bias: bool = True):
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        super().__init__(d_model, n_heads, n_kv_heads=n_kv_heads, causal=causal,
                         position=position, kernel=kernel, dropout=dropout, bias=bias)
        self.window = window

    def init_state(self, batch_size: int, device=None, dtype=None) -> WindowCache:
        weight = self.q_proj.weight
        device, dtype = device or weight.device, dtype or weight.dtype
        kv = torch.zeros(batch_size, self.n_kv_heads, self.window - 1, self.d_head,
                         device=device, dtype=dtype)
        slots = (batch_size, self.window - 1)
        return WindowCache(kv, kv.clone(), torch.zeros(slots, dtype=torch.bool, device=device),
                           torch.zeros(slots, dtype=torch.long, device=device),
                           seen=torch.zeros(batch_size, dtype=torch.long, device=device))

    def forward(self, x: Tensor, state: WindowCache | None = None, *,
                padding_mask: Tensor | None = None) -> tuple[Tensor, WindowCache | None]:
        padding_mask = self.check_input(x, state, padding_mask)
        B, T, D = x.shape
        x = masked_fill_padding(x, padding_mask)
        real = None
        if padding_mask is not None:
            # Real tokens to the front, in order, so the window counts positions, not slots.
            order = real_tokens_first(padding_mask)  # (B, T)
            order = order.unsqueeze(-1).expand(B, T, D)  # (B, T, D)
            x = x.gather(1, order)  # (B, T, D)
            real = torch.arange(T, device=x.device) < padding_mask.sum(1, keepdim=True)  # (B, T)
        self.warn_if_slow(self.dropout if self.training else 0.0, x.device)

        q = self.q_proj(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, Dh)
        k, v = self.kv_proj(x).view(B, T, 2, self.n_kv_heads, self.d_head).permute(2, 0, 3, 1, 4)
        # k, v: (B, Hkv, T, Dh)
        start = state.seen if state is not None else 0
        pos = positions_from_mask(start, B, T, None, device=x.device)  # (B, T), compacted slots
        if self.position is not None:
            q, k = self.position.rotate(q, k, pos)
        valid = real if real is not None else torch.ones(B, T, dtype=torch.bool, device=x.device)

        y, state = self._mix(q, k, v, pos, valid, state)  # (B, H, T, Dh)
        y = self.out_proj(y.transpose(1, 2).reshape(B, T, D))  # (B, T, D)
        if padding_mask is not None:
            y = torch.zeros_like(y).scatter(1, order, y)  # back to the original slots
        return masked_fill_padding(y, padding_mask), state

    def _mix(self, q: Tensor, k: Tensor, v: Tensor, pos: Tensor, valid: Tensor,
             state: WindowCache | None) -> tuple[Tensor, WindowCache | None]:
        """Attend over the cache plus the chunk, and roll the cache forward."""
        dropout = self.dropout if self.training else 0.0
        if state is not None:
            k_all = torch.cat([state.k.to(k.dtype), k], 2)  # (B, Hkv, window - 1 + T, Dh)
            v_all = torch.cat([state.v.to(v.dtype), v], 2)
            valid_all = torch.cat([state.key_mask, valid], 1)  # (B, window - 1 + T)
            pos_all = torch.cat([state.key_pos, pos], 1)
        else:
            k_all, v_all, valid_all, pos_all = k, v, valid, pos
        y = banded_attention(self.kernel, q, k_all, v_all, valid_all, pos, pos_all,
                             window=self.window, lookahead=not self.causal,
                             position=self.position, dropout=dropout)
        if state is None:
            return y, None
        # Real chunk tokens are at the front, so the newest window - 1 keys of sequence i
        # end at slot (window - 1) + n_i - 1 of the concatenation.
        n_real = valid.sum(1, keepdim=True)  # (B, 1)
        index = n_real + torch.arange(self.window - 1, device=q.device)  # (B, window - 1)
        kv_index = index[:, None, :, None].expand(*state.k.shape)  # (B, Hkv, window - 1, Dh)
        new = WindowCache(k_all.gather(2, kv_index).to(state.k.dtype),
                          v_all.gather(2, kv_index).to(state.v.dtype),
                          valid_all.gather(1, index), pos_all.gather(1, index),
                          seen=state.seen + n_real.squeeze(1))
        return y, new


class SparseAttention(WindowAttention):
    """Window attention plus global tokens (Longformer arXiv:2004.05150; BigBird
    arXiv:2007.14062), bidirectional only.

    The first ``n_global`` real tokens of each sequence attend to every key, and every
    query attends to them besides its band of |t - s| < window; so any two tokens are
    two layers apart at most, at O(T * (window + n_global)) cost. Global keys are
    appended to every block's strip (and removed from the band, so none counts twice);
    the few global query rows use full attention over all T keys.

    Args:
        d_model, n_heads, window, n_kv_heads, position, kernel, dropout, bias: as for
            ``WindowAttention``.
        n_global: how many leading tokens are global (e.g. a CLS token).
        causal: must be False; kept so the registry can pass its mode.
    """

    def __init__(self, d_model: int, n_heads: int, *, window: int, n_global: int,
                 n_kv_heads: int | None = None, causal: bool = False,
                 position: nn.Module | None = None, kernel: str = "sdpa",
                 dropout: float = 0.0, bias: bool = True):
        if causal:
            raise ValueError("sparse attention is bidirectional (global tokens see the whole "
                             "sequence); use window_attention for a causal model")
        if n_global < 0:
            raise ValueError(f"n_global must be non-negative, got {n_global}")
        super().__init__(d_model, n_heads, window=window, n_kv_heads=n_kv_heads, causal=False,
                         position=position, kernel=kernel, dropout=dropout, bias=bias)
        self.n_global = n_global

    def _mix(self, q: Tensor, k: Tensor, v: Tensor, pos: Tensor, valid: Tensor,
             state: None) -> tuple[Tensor, None]:
        T = q.shape[2]
        G = min(self.n_global, T)
        if G == 0:
            return super()._mix(q, k, v, pos, valid, state)
        dropout = self.dropout if self.training else 0.0
        band_valid = valid & (torch.arange(T, device=q.device) >= G)  # (B, T)
        extra = (k[:, :, :G], v[:, :, :G], valid[:, :G], pos[:, :G])
        y = banded_attention(self.kernel, q, k, v, band_valid, pos, pos, window=self.window,
                             lookahead=True, position=self.position, dropout=dropout, extra=extra)
        key_mask = None if bool(valid.all()) else valid
        y_global = self._attend(q[:, :, :G], k, v, pos[:, :G], pos, key_mask, None, 0)
        return torch.cat([y_global, y[:, :, G:]], 2), None  # (B, H, T, Dh)


@dataclass
class WindowAttentionOptions:
    """``window`` keys per query; the default exceeds short test sequences, where the
    layer equals full attention. ``dropout`` is on the attention weights."""

    window: int = 256
    kernel: str = "sdpa"
    bias: bool = True
    dropout: float = 0.0

    def __post_init__(self):
        if self.window < 1:
            raise ValueError(f"window must be at least 1, got {self.window}")


@dataclass
class SparseAttentionOptions(WindowAttentionOptions):
    """Window options plus ``n_global`` leading global tokens."""

    n_global: int = 2

    def __post_init__(self):
        super().__post_init__()
        if self.n_global < 0:
            raise ValueError(f"n_global must be non-negative, got {self.n_global}")


@register_mixer("window_attention", WindowAttentionOptions, uses_positions=True)
def _window_attention(a: MixerArgs, o: WindowAttentionOptions) -> Mixer:
    return WindowAttention(a.d_model, a.n_heads, window=o.window, n_kv_heads=a.n_kv_heads,
                           causal=a.causal, position=a.position, kernel=o.kernel,
                           dropout=o.dropout, bias=o.bias)


@register_mixer("sparse_attention", SparseAttentionOptions, uses_positions=True,
                modes=("bidirectional",))
def _sparse_attention(a: MixerArgs, o: SparseAttentionOptions) -> Mixer:
    return SparseAttention(a.d_model, a.n_heads, window=o.window, n_global=o.n_global,
                           n_kv_heads=a.n_kv_heads, causal=a.causal, position=a.position,
                           kernel=o.kernel, dropout=o.dropout, bias=o.bias)
