"""Mamba: a selective state-space mixer (Gu & Dao 2023, arXiv:2312.00752).

The block of the paper's Fig. 3, as a mixer (no ffn: the gate is the channel mixing):

    x, z = in_proj(x)                       (B, T, 2 d_inner), d_inner = expand D
    x = silu(causal depthwise conv1d(x))    width d_conv: a short local mixing
    dt, B, C = x_proj(x)                    input-dependent: the "selection" (§3.2)
    dt = softplus(dt_proj(dt))              low-rank (dt_rank) step size per channel
    y = selective_scan(x, dt, A, B, C) + D x,  A = -exp(A_log)  (S4D-real init)
    out = out_proj(y * silu(z))

Because dt, B and C depend on the input, the layer is no longer a convolution; it is
computed as a linear recurrence by the parallel chunked scan of ``seqlab.nn.scan``
(training and prefill) or one recurrent step (decoding, T = 1).

State: the last ``d_conv - 1`` conv inputs and the SSM state h (``MambaState``), so
one pass equals any split into chunks threaded through the state, and a decoding
step costs O(d_inner N) whatever the prefix length.

Padding: padded inputs are zeroed first (nothing stored there can leak, NaN
included). For the conv, each sequence's real tokens are gathered to the front
(stable order, as the packing in recurrent.py) and scattered back, so the conv and
its buffer see only real tokens for any padding pattern, holes included. For the
scan, padded positions get dt = 0, i.e. decay exp(0) = 1 and no input: the state
passes through unchanged. A padded batch therefore equals each sequence alone for
left, right or inner padding, and padded outputs are zeros.

Parameter names (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``,
``out_proj``) and shapes are those of the reference ``mamba_simple.Mamba`` and of
Hugging Face's ``MambaMixer``, so their weights load unchanged.

Init is the reference's (``own_init``): torch's default for the projections and the conv,
the dt and S4D-real init below, and only ``out_proj`` scaled with depth by the model
builder. The builder's generic N(0, 0.02) makes B and C, whose product carries the
whole SSM path, start 3-4x smaller each (std 0.04 and 0.03 against 0.12 at d_model
64). Measured with it: selective copying (L 64, d 64, 2 layers, lr 3e-3, batch 32)
reached 0.27 accuracy after 600 steps against 0.38, and ``mamba-tiny`` on the quickstart
corpus 1.84 against 1.79 bits per byte after 300 steps.
``A_log`` and ``D`` are excluded from weight decay (``no_weight_decay``), as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.nn.mixer import BatchState, Mixer, masked_fill_padding, one_step, real_tokens_first
from seqlab.nn.mixers import MixerArgs, register_mixer
from seqlab.nn.scan import selective_scan, selective_step

#: The reference's dt_init_floor: no initial step size below it, unless ``dt_min`` asks
#: for smaller ones (long-memory channels for records of tens of thousands of tokens).
DT_INIT_FLOOR = 1e-4


def check_options(*, d_state: int, d_conv: int, expand: int, dt_rank: int | None,
                  dt_min: float, dt_max: float, chunk_size: int | None) -> None:
    """Raise ``ValueError`` naming the bad value (shared by the options and the layer)."""
    for name, value in (("d_state", d_state), ("d_conv", d_conv), ("expand", expand),
                        ("chunk_size", chunk_size)):
        if value is not None and value < 1:
            raise ValueError(f"mamba {name} must be >= 1, got {value}")
    if dt_rank is not None and dt_rank < 1:
        raise ValueError(f"mamba dt_rank must be >= 1 (or None for ceil(d_model / 16)), "
                         f"got {dt_rank}")
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"mamba needs 0 < dt_min <= dt_max, got dt_min={dt_min}, "
                         f"dt_max={dt_max}")


@dataclass
class MambaOptions:
    """Defaults are the paper's (§3.4, App. E): N = 16, conv width 4, expansion 2,
    dt_rank = ceil(D / 16), initial dt log-uniform in [0.001, 0.1]; no biases on the
    projections, a bias on the conv. ``chunk_size`` is the scan's time block (memory
    about 4 x (B, chunk_size, d_inner, N) floats); None sizes it to the CPU cache
    (``seqlab.nn.scan.auto_chunk_size``), which benchmarks/bench_mamba.py found best."""

    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None
    dt_min: float = 0.001
    dt_max: float = 0.1
    conv_bias: bool = True
    bias: bool = False
    chunk_size: int | None = None

    def __post_init__(self):
        check_options(d_state=self.d_state, d_conv=self.d_conv, expand=self.expand,
                      dt_rank=self.dt_rank, dt_min=self.dt_min, dt_max=self.dt_max,
                      chunk_size=self.chunk_size)


@dataclass
class MambaState(BatchState):
    """Streaming state of a Mamba layer.

    Shapes:
        conv: (B, d_inner, d_conv - 1), the last conv inputs of real tokens, oldest first;
        ssm: (B, d_inner, N), the scan state h, in at least float32.
    """

    conv: Tensor
    ssm: Tensor


class TimeStep(nn.Module):
    """dt = softplus(W dt_low + b): the low-rank step-size projection of the paper.

    It holds the paper's dt init: ``b`` is the inverse softplus of dt drawn
    log-uniformly in [dt_min, dt_max] (so every channel starts at its own time scale,
    §3.6 / App. D), and W is uniform in +-dt_rank^-1/2. Names match the reference's ``dt_proj`` (weight, bias).
    """

    def __init__(self, dt_rank: int, d_inner: int, *, dt_min: float, dt_max: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_inner, dt_rank))
        self.bias = nn.Parameter(torch.empty(d_inner))
        with torch.no_grad():
            bound = dt_rank ** -0.5
            self.weight.uniform_(-bound, bound)
            dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min))
                           + math.log(dt_min)).clamp(min=min(DT_INIT_FLOOR, dt_min))
            self.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(F.linear(x, self.weight, self.bias))


class Mamba(Mixer):
    """Selective SSM mixer (Mamba block), causal with a streaming state.

    Args:
        d_model: model width D.
        d_state: SSM state size N per channel.
        d_conv: width of the causal depthwise convolution.
        expand: inner width d_inner = expand * D.
        dt_rank: rank of the dt projection (None: ceil(D / 16)).
        dt_min, dt_max: range of the initial step sizes.
        conv_bias: bias on the convolution.
        bias: biases on in_proj and out_proj.
        chunk_size: time steps the parallel scan processes at once (None: sized to the
            cache by ``seqlab.nn.scan.auto_chunk_size``).

    Shapes:
        x: (B, T, D) -> y: (B, T, D); state: ``MambaState``.
    """

    no_weight_decay = ("A_log", "D")  # the paper leaves the SSM's A and skip undecayed

    causal = True
    own_init = True

    def __init__(self, d_model: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | None = None, dt_min: float = 0.001, dt_max: float = 0.1,
                 conv_bias: bool = True, bias: bool = False,
                 chunk_size: int | None = None):
        super().__init__(d_model)
        check_options(d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank,
                      dt_min=dt_min, dt_max=dt_max, chunk_size=chunk_size)
        self.d_state, self.d_conv, self.chunk_size = d_state, d_conv, chunk_size
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner,
                                bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = TimeStep(self.dt_rank, self.d_inner, dt_min=dt_min, dt_max=dt_max)
        # S4D-real: A_n = -(n + 1) for every channel (§3.6); stored as log(-A) so A < 0.
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))  # (d_inner, N)
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def init_state(self, batch_size: int, device=None, dtype=None) -> MambaState:
        dtype = dtype or self.in_proj.weight.dtype
        device = device if device is not None else self.A_log.device
        return MambaState(
            conv=torch.zeros(batch_size, self.d_inner, self.d_conv - 1, device=device,
                             dtype=dtype),
            ssm=torch.zeros(batch_size, self.d_inner, self.d_state, device=device,
                            dtype=torch.promote_types(dtype, torch.float32)),
        )

    def forward(self, x: Tensor, state: MambaState | None = None, *,
                padding_mask: Tensor | None = None) -> tuple[Tensor, MambaState | None]:
        padding_mask = self.check_input(x, state, padding_mask)
        if state is not None and one_step(x) and padding_mask is None:
            return self._step(x, state)
        x = masked_fill_padding(x, padding_mask)
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, T, d_inner) each
        u, conv_state = self._conv(xs, state.conv if state is not None else None, padding_mask)
        dt, B, C = self._ssm_inputs(u)
        if padding_mask is not None:  # identity steps: decay 1, no input
            dt = dt.masked_fill(~padding_mask.unsqueeze(-1), 0.0)
        A = -torch.exp(self.A_log.float())  # (d_inner, N)
        y, h = selective_scan(u, dt, A, B, C, self.D, h0=state.ssm if state is not None else None,
                              chunk_size=self.chunk_size)
        y = self.out_proj(y * F.silu(z))  # (B, T, D)
        y = masked_fill_padding(y, padding_mask)
        return y, (MambaState(conv_state, h) if state is not None else None)

    def _ssm_inputs(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """dt (.., d_inner) and B, C (.., N) from the conv output u (.., d_inner)."""
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return self.dt_proj(dt), B, C

    def _conv(self, xs: Tensor, buffer: Tensor | None,
              padding_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """silu(causal depthwise conv) over real tokens only, and the new conv buffer.

        Shapes:
            xs: (B, T, d_inner); buffer: (B, d_inner, d_conv - 1) or None (zeros);
            returns (B, T, d_inner) and the new buffer.
        """
        Bsz, T, d = xs.shape
        K = self.d_conv
        seq = xs.transpose(1, 2)  # (B, d_inner, T)
        if padding_mask is not None:
            # Stable sort puts each row's real tokens first, in their original order.
            order = real_tokens_first(padding_mask)  # (B, T)
            order = order.unsqueeze(1).expand(Bsz, d, T)  # (B, d_inner, T)
            seq = seq.gather(2, order)
        if buffer is None:
            full = F.pad(seq, (K - 1, 0))  # (B, d_inner, K - 1 + T)
        else:
            full = torch.cat([buffer.to(seq.dtype), seq], dim=2)  # (B, d_inner, K - 1 + T)
        out = self.conv1d(full)  # (B, d_inner, T)
        if padding_mask is None:
            new_buffer = full[:, :, full.shape[2] - (K - 1):].clone()  # not a view of `full`
        else:
            out = torch.empty_like(out).scatter_(2, order, out)  # back to original positions
            # The last K - 1 inputs of the real stream (buffer, then each row's real tokens).
            lengths = padding_mask.sum(1)  # (B,)
            index = lengths[:, None] + torch.arange(K - 1, device=xs.device)  # (B, K - 1)
            new_buffer = full.gather(2, index.unsqueeze(1).expand(Bsz, d, K - 1))
        return F.silu(out).transpose(1, 2), new_buffer  # (B, T, d_inner)

    def _step(self, x: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """One decoding step: a conv window update and one recurrence step, O(d_inner N)."""
        xs, z = self.in_proj(x[:, 0]).chunk(2, dim=-1)  # (B, d_inner) each
        window = torch.cat([state.conv.to(xs.dtype), xs.unsqueeze(-1)], dim=2)  # (B, d_inner, K)
        u = (window * self.conv1d.weight[:, 0]).sum(-1)  # (B, d_inner)
        if self.conv1d.bias is not None:
            u = u + self.conv1d.bias
        u = F.silu(u)
        dt, B, C = self._ssm_inputs(u)
        A = -torch.exp(self.A_log.float())  # (d_inner, N)
        y, h = selective_step(state.ssm, u, dt, A, B, C, self.D)
        y = self.out_proj(y * F.silu(z)).unsqueeze(1)  # (B, 1, D)
        return y, MambaState(window[:, :, 1:], h)


@register_mixer("mamba", MambaOptions, modes=("causal",))
def _mamba(a: MixerArgs, o: MambaOptions) -> Mixer:
    return Mamba(a.d_model, d_state=o.d_state, d_conv=o.d_conv, expand=o.expand,
                 dt_rank=o.dt_rank, dt_min=o.dt_min, dt_max=o.dt_max, conv_bias=o.conv_bias,
                 bias=o.bias, chunk_size=o.chunk_size)
