"""Recurrent mixers (Elman RNN, LSTM, GRU) on torch's fused multi-layer kernels.

Causal mixers run left to right and carry the hidden (and cell) state; non-causal
ones are bidirectional with half the width per direction. Padding of any pattern is
handled by packing: each sequence's real tokens are moved to the front, run through
the packed kernel, and scattered back, so a padded sequence gives exactly what it
gives alone and its state skips the padding.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqlab.nn.mixer import Mixer, masked_fill_padding, one_step, real_tokens_first, warn_once
from seqlab.nn.mixers import MixerArgs, register_mixer

_KERNELS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
_CELL_OPS = {"rnn": torch.rnn_tanh_cell, "lstm": torch.lstm_cell, "gru": torch.gru_cell}
_KERNEL_OPS = {"rnn": torch.rnn_tanh, "lstm": torch.lstm, "gru": torch.gru}

IMPLS = ("fused", "loop")


def is_right_padded(padding_mask: Tensor) -> bool:
    """Whether every row's real tokens form a prefix (no padding before a real token)."""
    return not bool((padding_mask[:, 1:] & ~padding_mask[:, :-1]).any())


class RecurrentMixer(Mixer):
    """A stack of ``num_layers`` recurrent layers as one mixer.

    Args:
        d_model: input and output width D.
        cell: ``rnn`` (tanh), ``lstm`` or ``gru``.
        num_layers: layers inside the fused kernel (a classic stacked RNN).
        dropout: dropout between the stacked layers.
        causal: unidirectional with a streaming state; otherwise bidirectional
            (D must be even: each direction has D/2 units).
        impl: ``fused`` (torch kernel) or ``loop`` (per-step cells; slow, warns once).

    State: ``(h,)`` for rnn/gru, ``(h, c)`` for lstm; each (num_layers, B, D).
    """

    def __init__(self, d_model: int, cell: str, *, num_layers: int = 1, dropout: float = 0.0,
                 causal: bool = True, impl: str = "fused"):
        super().__init__(d_model)
        if cell not in _KERNELS:
            raise ValueError(f"unknown recurrent cell {cell!r}; valid: {sorted(_KERNELS)}")
        if impl not in IMPLS:
            raise ValueError(f"recurrent impl must be one of {IMPLS}, got {impl!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not causal and d_model % 2:
            raise ValueError(f"a bidirectional {cell} needs an even d_model, got {d_model}")
        if not causal and impl == "loop":
            raise ValueError("impl 'loop' is unidirectional only; use impl 'fused'")
        self.cell, self.causal, self.impl, self.num_layers = cell, causal, impl, num_layers
        hidden = d_model if causal else d_model // 2
        self.rnn = _KERNELS[cell](d_model, hidden, num_layers=num_layers, batch_first=True,
                                  dropout=dropout if num_layers > 1 else 0.0,
                                  bidirectional=not causal)

    def init_state(self, batch_size: int, device=None, dtype=None) -> tuple[Tensor, ...]:
        h = torch.zeros(self.num_layers, batch_size, self.d_model, device=device,
                        dtype=dtype or self.rnn.weight_ih_l0.dtype)
        return (h, h.clone()) if self.cell == "lstm" else (h,)

    def forward(self, x: Tensor, state: tuple[Tensor, ...] | None = None, *,
                padding_mask: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        if x.device.type == "cpu" and _cpu_low_precision(x) and not _cpu_bf16_kernels():
            # oneDNN's bf16 recurrent kernels need AVX512-BF16 or AMX; elsewhere they fail
            # to build, so this CPU runs the recurrence in float32 and returns x's dtype.
            with torch.autocast("cpu", enabled=False):
                y, new = self.forward(x.float(), None if state is None else
                                      tuple(s.float() for s in state), padding_mask=padding_mask)
            return y.to(x.dtype), None if new is None else tuple(s.to(x.dtype) for s in new)
        padding_mask = self.check_input(x, state, padding_mask)
        hx = None
        if state is not None:
            hx = tuple(s.to(x.dtype) for s in state)
        if self.impl == "loop":
            warn_once("recurrent-loop", f"{self.cell} impl 'loop' runs one Python step per "
                      "token instead of torch's fused kernel; use impl 'fused' for speed")
            y, new = self._loop(x, hx, padding_mask)
        elif padding_mask is None and one_step(x) and self.causal and x.device.type == "cpu":
            y, new = self._decode_step(x, hx)
        elif padding_mask is None:
            y, new = self.rnn(x, self._kernel_hx(hx))
        elif state is None and x.device.type == "cpu" and is_right_padded(padding_mask):
            y, new = self._right_padded(x, padding_mask), None
        else:
            y, new = self._packed(x, hx, padding_mask)
        if state is None:
            return y, None
        new = new if isinstance(new, tuple) else (new,)
        return y, new

    def _kernel_hx(self, hx):
        if hx is None:
            return None
        return hx if self.cell == "lstm" else hx[0]

    def _decode_step(self, x: Tensor, hx):
        """One token through torch's fused cell ops. On CPU the multi-layer kernel goes
        through oneDNN, whose per-call set-up makes a single step about 5x slower than
        the cell ops on the same weights; longer chunks keep the multi-layer kernel."""
        if hx is None:
            hx = self.init_state(x.shape[0], x.device, x.dtype)
        inp, out = x[:, 0], []
        for layer in range(self.num_layers):
            weights = [getattr(self.rnn, f"{name}_l{layer}")
                       for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            prev = (hx[0][layer], hx[1][layer]) if self.cell == "lstm" else hx[0][layer]
            cur = _CELL_OPS[self.cell](inp, prev, *weights)
            cur = cur if isinstance(cur, tuple) else (cur,)
            out.append(cur)
            inp = cur[0]
            if layer < self.num_layers - 1 and self.training and self.rnn.dropout:
                inp = nn.functional.dropout(inp, self.rnn.dropout)
        new = tuple(torch.stack([o[i] for o in out]) for i in range(len(out[0])))
        return inp.unsqueeze(1), new

    def _right_padded(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        """A right-padded batch without a state, on the unpacked kernel. Each row's real
        tokens come first, so the forward direction reads them before any padding and is
        exact there; the backward direction reads each row's real tokens reversed in
        place (padding stays behind them). On CPU this is 4-6x faster than packing, which
        takes torch's RNNs off oneDNN; the packed path stays for states and left padding."""
        B, T, _ = x.shape
        inp = masked_fill_padding(x, padding_mask)
        reverse = None
        if not self.causal:
            # Row b's position t reads flat row b*T + (its mirror in the real tokens, or t
            # itself in the padding). A permutation of whole rows: index_select copies
            # rows of D floats (and index_add_ in backward), several times cheaper than
            # an element-wise gather.
            lengths = padding_mask.sum(1, keepdim=True)  # (B, 1)
            t = torch.arange(T, device=x.device)[None]  # (1, T)
            mirror = torch.where(t < lengths, lengths - 1 - t, t)  # (B, T)
            reverse = (mirror + torch.arange(B, device=x.device)[:, None] * T).flatten()
        for layer in range(self.num_layers):
            out = self._direction(inp, layer, "")
            if reverse is not None:
                back = self._direction(_rows(inp, reverse), layer, "_reverse")
                out = torch.cat([out, _rows(back, reverse)], -1)
            if layer < self.num_layers - 1 and self.training and self.rnn.dropout:
                out = nn.functional.dropout(out, self.rnn.dropout)
            inp = out
        return masked_fill_padding(inp, padding_mask)

    def _direction(self, x: Tensor, layer: int, suffix: str) -> Tensor:
        """One direction of one layer over (B, T, D) from a zero state, on torch's kernel."""
        params = [getattr(self.rnn, f"{name}_l{layer}{suffix}")
                  for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h0 = x.new_zeros(1, x.shape[0], params[1].shape[1])
        hx = (h0, h0) if self.cell == "lstm" else h0
        return _KERNEL_OPS[self.cell](x, hx, params, True, 1, 0.0, self.training, False, True)[0]

    def _packed(self, x: Tensor, hx, padding_mask: Tensor):
        B, T, D = x.shape
        lengths = padding_mask.sum(1)  # (B,)
        # Stable sort puts each row's real tokens first, in their original order.
        order = real_tokens_first(padding_mask)  # (B, T)
        gather = order.unsqueeze(-1).expand(B, T, D)
        packed = pack_padded_sequence(x.gather(1, gather), lengths.clamp(min=1).cpu(),
                                      batch_first=True, enforce_sorted=False)
        out, new = self.rnn(packed, self._kernel_hx(hx))
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, D)
        y = torch.zeros_like(out).scatter(1, gather, out)
        y = masked_fill_padding(y, padding_mask)
        empty = lengths == 0
        if bool(empty.any()):  # a row with no real token keeps its incoming state
            new = new if isinstance(new, tuple) else (new,)
            old = hx if hx is not None else tuple(torch.zeros_like(s) for s in new)
            new = tuple(torch.where(empty.view(1, B, 1), o, n) for o, n in zip(old, new))
        return y, new

    def _loop(self, x: Tensor, hx, padding_mask: Tensor | None):
        """Step-by-step reference with the same weights (torch cell equations)."""
        B, T, _ = x.shape
        if hx is None:
            hx = self.init_state(B, x.device, x.dtype)
        hs = [list(s.unbind(0)) for s in hx]  # per state tensor, per layer: (B, D)
        outputs = []
        for t in range(T):
            inp = x[:, t]
            keep = None if padding_mask is None else padding_mask[:, t].unsqueeze(-1)
            for layer in range(self.num_layers):
                prev = tuple(s[layer] for s in hs)
                cur = self._cell_step(layer, inp, prev)
                if keep is not None:
                    cur = tuple(torch.where(keep, c, p) for c, p in zip(cur, prev))
                for s, c in zip(hs, cur):
                    s[layer] = c
                inp = cur[0]
                if layer < self.num_layers - 1 and self.training and self.rnn.dropout:
                    inp = nn.functional.dropout(inp, self.rnn.dropout)
            outputs.append(inp if keep is None else inp * keep)
        new = tuple(torch.stack(s, 0) for s in hs)
        return torch.stack(outputs, 1), new

    def _cell_step(self, layer: int, x: Tensor, prev: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        w_ih, w_hh = getattr(self.rnn, f"weight_ih_l{layer}"), getattr(self.rnn, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(self.rnn, f"bias_ih_l{layer}"), getattr(self.rnn, f"bias_hh_l{layer}")
        gi = nn.functional.linear(x, w_ih, b_ih)
        gh = nn.functional.linear(prev[0], w_hh, b_hh)
        if self.cell == "lstm":
            i, f, g, o = (gi + gh).chunk(4, dim=-1)
            c = torch.sigmoid(f) * prev[1] + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        if self.cell == "gru":
            ir, iz, i_n = gi.chunk(3, dim=-1)
            hr, hz, h_n = gh.chunk(3, dim=-1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            n = torch.tanh(i_n + r * h_n)
            return ((1 - z) * n + z * prev[0],)
        return (torch.tanh(gi + gh),)


@dataclass
class RecurrentOptions:
    num_layers: int = 1
    impl: str = "fused"


def _rows(x: Tensor, index: Tensor) -> Tensor:
    """``x`` (B, T, D) with its B*T rows permuted by the flat ``index``."""
    B, T, D = x.shape
    return x.reshape(B * T, D).index_select(0, index).view(B, T, D)


def _recurrent(cell: str):
    def build(a: MixerArgs, o: RecurrentOptions) -> Mixer:
        return RecurrentMixer(a.d_model, cell, num_layers=o.num_layers, dropout=a.dropout,
                              causal=a.causal, impl=o.impl)

    return build


for _cell in ("rnn", "lstm", "gru"):
    register_mixer(_cell, RecurrentOptions)(_recurrent(_cell))


def _cpu_low_precision(x: Tensor) -> bool:
    """Whether the recurrence would run in bf16 or fp16 on the CPU."""
    return x.dtype in (torch.bfloat16, torch.float16) or (
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") != torch.float32)


@functools.lru_cache(maxsize=1)
def _cpu_bf16_kernels() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
