"""S4D: a diagonal state-space mixer (Gu et al. 2022, arXiv:2206.11893).

Each of the D channels is its own linear time-invariant SSM with N/2 complex modes
(N = ``d_state``; the other N/2 are the complex conjugates, which is why outputs are
``2 Re(...)``), discretised by zero-order hold (ZOH):

    dA = exp(dt A),   dB = (exp(dt A) - 1) / A * B,
    h_t = dA h_{t-1} + dB x_t,   y_t = 2 Re(C h_t) + skip * x_t,

followed, as in S4's block, by GELU and an output linear. Choices, with the paper:

- ``Re(A) = -exp(log_a_real)`` keeps every mode stable (``|dA| < 1``) whatever the
  optimiser does; S4D keeps the real part negative for exactly this reason
  (floored at -1e-4 so ``dB = (dA - 1) / A`` never becomes 0 / 0).
- ``B`` is fixed to 1 and folded into the learnable complex ``C``, exactly as the
  paper's minimal kernel (its code listing): with a diagonal ``A``, ``B_n C_n`` only ever
  appears as a product, so a learnable ``B`` adds no expressivity.
- ``dt = exp(log_dt)`` per channel, log-uniform in ``[dt_min, dt_max]`` at init, as in
  S4 and S4D (different channels watch different time scales).
- ``init`` picks ``Im(A)`` (all inits have ``Re(A) = -1/2``): ``legs`` is the diagonal
  of HiPPO-LegS's normal part (S4D-LegS), ``lin`` is ``pi n`` (S4D-Lin, Fourier-like
  frequencies), ``inv`` is ``N/pi (N/(2n+1) - 1)`` (S4D-Inv), the three S4D inits.

Without a state the layer is a long convolution: the kernel ``K_l = 2 Re(sum_n
C_n dB_n dA_n^l)`` comes from a Vandermonde product and is applied by FFT with
``n = 2T`` (no wrap-around). Writing ``l = s j + i`` with ``s ~ sqrt(T)`` turns that
product into a batched matrix product of ``C dB dA^(s j)`` with ``dA^i``, so the
(D, N/2, T) table of powers is never built: memory is O(D (N sqrt(T) + T)) per layer
and a training step at T = 1024 ran 8.8x faster than with the full table, whose
complex exponentials dominated. Bidirectional mode adds a second kernel with its own
parameters, applied anti-causally and summed, as S4 does (the reverse kernel is
shifted by one step so ``x_t`` is counted once, through ``skip``). With a state, one
token is a recurrence step and a longer chunk is the same convolution plus the
incoming state's contribution ``2 Re(C dA^{t+1} h0)``, so prefill is not a Python loop.

Padding: padded positions are skipped, not fed as zeros. Each sequence's real tokens
are gathered to the front before the convolution (like the packing in recurrent.py)
and scattered back, so a padded batch equals each sequence alone for any mask
pattern, and a padded position never advances the state (``dA`` is not applied).

A chunk run with a state (streaming prefill) takes the carried state's share the same
blocked way. ``A`` and ``dt`` are exempt from weight decay (``no_weight_decay``) but
share the model's learning rate; S4 also lowers theirs (set that with parameter groups
on ``log_dt``, ``log_a_real``, ``a_imag``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.nn.mixer import BatchState, Mixer, masked_fill_padding, one_step, real_tokens_first
from seqlab.nn.mixers import MixerArgs, register_mixer

INITS = ("legs", "lin", "inv")
_MIN_DECAY = 1e-4  # floor of -Re(A): keeps dB = (dA - 1) / A away from 0 / 0


def check_options(d_state: int, dt_min: float, dt_max: float, init: str) -> None:
    """Raise ``ValueError`` naming the bad value (shared by the options and the layer)."""
    if d_state < 2 or d_state % 2:
        raise ValueError(f"s4d d_state must be even and >= 2 (N/2 complex modes), got {d_state}")
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"s4d needs 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    if init not in INITS:
        raise ValueError(f"s4d init must be one of {INITS}, got {init!r}")


@dataclass
class S4DOptions:
    """``d_state`` is the real state size N per channel (N/2 complex modes)."""

    d_state: int = 64
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    init: str = "legs"

    def __post_init__(self):
        check_options(self.d_state, self.dt_min, self.dt_max, self.init)


def s4d_init(init: str, d_state: int) -> tuple[Tensor, Tensor]:
    """``(Re A, Im A)``, each (N/2,), of the S4D initialisations.

    For ``legs`` the HiPPO-LegS matrix plus the rank-one correction ``P P^T``
    (``P_n = sqrt(n + 1/2)``) is ``-1/2 I + S`` with ``S`` skew-symmetric (S4's
    "normal plus low-rank" form); its eigenvalues are ``-1/2 + i lambda`` with
    ``lambda`` the eigenvalues of the Hermitian ``-i S``, and one of each conjugate
    pair is kept.
    """
    n = torch.arange(d_state // 2, dtype=torch.float64)
    re = torch.full_like(n, -0.5)
    if init == "lin":
        im = math.pi * n
    elif init == "inv":
        im = d_state / math.pi * (d_state / (2 * n + 1) - 1)
    elif init == "legs":
        q = torch.arange(d_state, dtype=torch.float64)
        r = torch.sqrt(2 * q + 1)
        hippo = -(r[:, None] * r[None, :]).tril(-1) - torch.diag(q + 1)  # (N, N)
        p = torch.sqrt(q + 0.5)
        skew = hippo + p[:, None] * p[None, :] + 0.5 * torch.eye(d_state, dtype=torch.float64)
        lam = torch.linalg.eigvalsh(-1j * skew.to(torch.complex128))  # (N,) ascending, +-pairs
        im = lam[d_state // 2:]
    else:
        raise ValueError(f"s4d init must be one of {INITS}, got {init!r}")
    return re.float(), im.float()


def expm1_complex(z: Tensor) -> Tensor:
    """``exp(z) - 1`` without cancellation for small ``|z|`` (dt A is often ~1e-3):
    ``e^a cos b - 1 = expm1(a) cos b - 2 sin^2(b / 2)``."""
    a, b = z.real, z.imag
    return torch.complex(torch.expm1(a) * torch.cos(b) - 2 * torch.sin(b / 2) ** 2,
                         torch.exp(a) * torch.sin(b))


@dataclass
class S4DState(BatchState):
    """Streaming state of an S4D layer: h (B, D, N/2) complex, the conjugate-free half."""

    h: Tensor


class S4D(Mixer):
    """Diagonal state-space mixer: per-channel SSM convolution, GELU, output linear.

    Args:
        d_model: model width D (one SSM per channel).
        d_state: real state size N per channel (N/2 complex modes), even.
        dt_min, dt_max: range of the log-uniform initial step ``dt``.
        init: ``legs``, ``lin`` or ``inv`` initial ``A`` (see module docstring).
        causal: causal with a streaming state; otherwise a forward plus an
            anti-causal kernel, each with its own parameters.

    State: :class:`S4DState`, complex64 (complex128 for a float64 model).

    Shapes:
        x, y: (B, T, D); parameters with a leading direction axis K (1 causal, 2 not):
        log_dt (K, D); log_a_real, a_imag (K, D, N/2); c (K, D, N/2, 2) as (re, im).
    """

    no_weight_decay = ("log_dt", "log_a_real", "a_imag")  # S4: no decay on A and dt

    def __init__(self, d_model: int, *, d_state: int = 64, dt_min: float = 1e-3,
                 dt_max: float = 1e-1, init: str = "legs", causal: bool = True):
        super().__init__(d_model)
        check_options(d_state, dt_min, dt_max, init)
        self.causal, self.d_state, self.init = causal, d_state, init
        K, M = (1 if causal else 2), d_state // 2
        re, im = s4d_init(init, d_state)
        u = torch.rand(K, d_model)
        self.log_dt = nn.Parameter(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.log_a_real = nn.Parameter(torch.log(-re).expand(K, d_model, M).clone())
        self.a_imag = nn.Parameter(im.expand(K, d_model, M).clone())
        # Stored as real pairs so state dicts and optimisers see only real tensors.
        self.c = nn.Parameter(torch.randn(K, d_model, M, 2) * math.sqrt(0.5))
        self.skip = nn.Parameter(torch.randn(d_model))
        self.out_proj = nn.Linear(d_model, d_model)

    def _real_dtype(self) -> torch.dtype:
        """SSM arithmetic runs in float32 at least: powers dA^l lose too much in 16 bits."""
        return torch.float64 if self.log_dt.dtype == torch.float64 else torch.float32

    def discretize(self) -> tuple[Tensor, Tensor, Tensor]:
        """ZOH: ``(dt A, dB, C)``, each complex (K, D, N/2), with B = 1 folded into C."""
        real = self._real_dtype()
        dt = self.log_dt.to(real).exp()  # (K, D)
        a = torch.complex(-self.log_a_real.to(real).exp().clamp(min=_MIN_DECAY),
                          self.a_imag.to(real))  # (K, D, M)
        dt_a = a * dt[..., None]  # (K, D, M)
        c = torch.complex(self.c[..., 0].to(real), self.c[..., 1].to(real))  # (K, D, M)
        return dt_a, expm1_complex(dt_a) / a, c

    def init_state(self, batch_size: int, device=None, dtype=None) -> S4DState:
        cdtype = torch.complex128 if self._real_dtype() == torch.float64 else torch.complex64
        return S4DState(torch.zeros(batch_size, self.d_model, self.d_state // 2, dtype=cdtype,
                                    device=device or self.log_dt.device))

    def forward(self, x: Tensor, state: S4DState | None = None, *,
                padding_mask: Tensor | None = None) -> tuple[Tensor, S4DState | None]:
        padding_mask = self.check_input(x, state, padding_mask)
        B, T, D = x.shape
        u = masked_fill_padding(x, padding_mask).to(self._real_dtype()).transpose(1, 2)  # (B, D, T)
        dt_a, db, c = self.discretize()

        if state is not None and one_step(x):
            y, new = self._step(u, state.h, dt_a, db, c, padding_mask)
        else:
            front = None
            if padding_mask is not None:
                # Stable sort moves each row's real tokens to the front, in order.
                front = real_tokens_first(padding_mask)
                front = front[:, None, :].expand(B, D, T)  # (B, D, T)
                u_front = u.gather(2, front)
            else:
                u_front = u
            tables = _power_tables(dt_a, T)  # dA^(s j), dA^i: (K, D, M, J), (K, D, M, s)
            y = self._convolve(u_front, db, c, tables)
            new = None
            if state is not None:
                y_state, new = self._carry(u, state.h, dt_a, db, c, tables, padding_mask)
                y = y + y_state
            if front is not None:
                y = torch.zeros_like(y).scatter(2, front, y)

        y = F.gelu(y + self.skip.to(u.dtype)[:, None] * u)  # (B, D, T)
        y = self.out_proj(y.transpose(1, 2).to(x.dtype))  # (B, T, D)
        return masked_fill_padding(y, padding_mask), (S4DState(new) if state is not None else None)

    def _kernel(self, db: Tensor, c: Tensor, tables: tuple[Tensor, Tensor], T: int) -> Tensor:
        """The convolution kernel ``2 Re(sum_m C_m dB_m dA_m^l)`` for l < T: (K, D, T).

        With l = s j + i it is a batched matrix product over the modes m,
        ``(C dB dA^(s j))_{jm} (dA^i)_{mi}``, so the (K, D, M, T) Vandermonde matrix is
        never built: memory O(K D (M sqrt(T) + T)) instead of O(K D M T).
        """
        outer, inner = tables  # (K, D, M, J), (K, D, M, s): ``_power_tables``
        weighted = (c * db)[..., None] * outer  # (K, D, M, J)
        blocks = torch.matmul(weighted.transpose(-1, -2), inner)  # (K, D, J, s)
        return 2 * blocks.real.flatten(-2)[..., :T]  # (K, D, T)

    def _convolve(self, u: Tensor, db: Tensor, c: Tensor,
                  tables: tuple[Tensor, Tensor]) -> Tensor:
        """SSM output from a zero state, by FFT convolution; u: (B, D, T) -> (B, D, T)."""
        T = u.shape[-1]
        kernel = self._kernel(db, c, tables, T)  # (K, D, T)
        if self.causal:
            kernel = kernel[0]  # (D, T)
        else:
            # Anti-causal half sits at the end: y_t += sum_{s>t} K1_{s-t-1} x_s (S4's layout).
            kernel = F.pad(kernel[0], (0, T)) + F.pad(kernel[1].flip(-1), (T, 0))  # (D, 2T)
        spectrum = torch.fft.rfft(u, n=2 * T) * torch.fft.rfft(kernel, n=2 * T)  # (B, D, T+1)
        return torch.fft.irfft(spectrum, n=2 * T)[..., :T]  # (B, D, T)

    def _carry(self, u: Tensor, h0: Tensor, dt_a: Tensor, db: Tensor, c: Tensor,
               tables: tuple[Tensor, Tensor], padding_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Incoming state's share of a chunk's outputs, and the state after the chunk.

        Outputs (real tokens at the front): ``2 Re(C dA^{t+1} h0)``. State after the
        L real tokens of a row: ``dA^L h0 + sum_j dA^{T-1-j} dB x_j`` over the row's
        inputs moved to the *back*, so padded slots (zeros at the front) add nothing
        and never decay the state.
        """
        B, D, T = u.shape
        outer, inner = (t[0] for t in tables)  # causal (K = 1): (D, M, J), (D, M, s)
        J, s = outer.shape[-1], inner.shape[-1]
        dt_a, db, c = dt_a[0], db[0], c[0]  # (D, M) each
        h0 = h0.to(dt_a.dtype)
        # y_t = 2 Re(sum_m w_m dA_m^t), t = s j + i: a batched product over the modes m.
        w = (c * dt_a.exp() * h0)[:, :, None, :] * outer.transpose(-1, -2)  # (B, D, J, M)
        y = 2 * torch.matmul(w, inner).real.flatten(-2)[..., :T]  # (B, D, T)
        if padding_mask is None:
            length = torch.full((B,), T, device=u.device, dtype=u.dtype)
        else:
            length = padding_mask.sum(1).to(u.dtype)  # (B,)
            back = torch.sort(padding_mask.to(torch.int8), dim=1, stable=True).indices
            u = u.gather(2, back[:, None, :].expand(B, D, T))  # (B, D, T)
        # sum_t x_t dA^(T-1-t) = sum_r x_(T-1-r) dA^r, r = s j + i, likewise blocked.
        reverse = F.pad(u.flip(-1), (0, J * s - T)).view(B, D, J, s).to(dt_a.dtype)
        per_block = torch.matmul(reverse, inner.transpose(-1, -2))  # (B, D, J, M)
        inputs = (per_block * outer.transpose(-1, -2)).sum(2)  # (B, D, M)
        h = torch.exp(dt_a * length[:, None, None]) * h0 + db * inputs  # (B, D, M)
        return y, h

    def _step(self, u: Tensor, h: Tensor, dt_a: Tensor, db: Tensor, c: Tensor,
              padding_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """One recurrence step (decoding); u: (B, D, 1). A padded token keeps ``h``."""
        h = h.to(dt_a.dtype)
        new = dt_a[0].exp() * h + db[0] * u  # (B, D, M)
        if padding_mask is not None:
            new = torch.where(padding_mask[:, :, None], new, h)  # mask (B, 1, 1)
        y = 2 * torch.einsum("dm,bdm->bd", c[0], new).real  # (B, D)
        return y[..., None], new  # (B, D, 1)


def _power_tables(dt_a: Tensor, T: int) -> tuple[Tensor, Tensor]:
    """``exp(s j dt A)`` for j < ceil(T / s) and ``exp(i dt A)`` for i < s, s = 2^ceil(log2(T) / 2).

    Shapes:
        dt_a: (K, D, M) complex -> (K, D, M, J), (K, D, M, s).
    """
    s = 1 << math.ceil(math.log2(max(T, 1)) / 2)
    real = dt_a.real.dtype
    inner = torch.exp(dt_a[..., None] * torch.arange(s, device=dt_a.device, dtype=real))
    outer = torch.exp(dt_a[..., None] * torch.arange(0, T, s, device=dt_a.device, dtype=real))
    return outer, inner


@register_mixer("s4d", S4DOptions, modes=("causal", "bidirectional"))
def _s4d(a: MixerArgs, o: S4DOptions) -> Mixer:
    return S4D(a.d_model, d_state=o.d_state, dt_min=o.dt_min, dt_max=o.dt_max, init=o.init,
               causal=a.causal)
