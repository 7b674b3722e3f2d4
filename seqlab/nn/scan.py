"""The selective scan of Mamba in parallel, pure PyTorch, with bounded memory.

The selective state-space layer (Gu & Dao 2023, arXiv:2312.00752, Alg. 2) runs, per
channel d and state index n, the input-dependent linear recurrence

    h_t = exp(dt_t A) * h_{t-1} + dt_t B_t u_t        y_t = C_t . h_t + D u_t

Time is cut into chunks; each chunk's decays a_t = exp(dt_t A) and inputs
b_t = dt_t B_t u_t are formed in a few whole-chunk kernels, the chunk is scanned, and
only the state crosses from one chunk to the next (a loop over chunks).

How a chunk is scanned depends on what a kernel call costs, but it is always a
parallel scan, never a loop over every time step. Two are implemented:

- the two-level lane scan (``_Lanes``, CPU with small states: B * N * d up to 2048
  floats): the chunk is cut into lanes of consecutive steps; all lanes are scanned
  side by side to their ends (one fused multiply-add per step, in place, across every
  lane at once), a short loop carries the true state from lane to lane, and every lane
  is scanned again from its true start. On CPU a call costs about a microsecond and
  past that the scan is bound by memory traffic, so this makes the fewest passes;
- the work-efficient Blelloch tree (``_Tree``; Blelloch 1990, "Prefix sums and their
  applications"), 2 log2(chunk) - 1 launches over strided views: accelerators, where
  launches dominate, and CPU states too large for lanes to pay.

Neither forms exp of growing positive numbers (the shortcut
exp(cumsum) * cumsum(exp(-cumsum) ...) does, and overflows): every multiply is by one
step's decay or by a product of decays in [0, 1], and products below
``_NEGLIGIBLE_DECAY`` are flushed to 0.

Memory is bounded the way the paper's kernel bounds it (§3.3.2, recomputation): the
(chunk, B, N, d) states live one chunk at a time and are never stored for backward.
The backward pass re-runs each chunk's forward scan from its saved start state and
walks the chunks in reverse with the adjoint recurrence ``g_t = C_t gy_t +
exp(dt_{t+1} A) g_{t+1}``, the same scan run backwards. Saved for backward are the
inputs and one (B, d, N) state per chunk.

On CPU the default chunk is sized for the core's cache (``auto_chunk_size``): the
per-chunk buffers stay in L2 between the passes over them (the chunk sweep in
benchmarks/bench_mamba.py shows the curve).

A slow sequential reference lives in ``tests/nn/test_mamba.py``, with parity tests of
outputs, final state and every gradient against this implementation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from seqlab.errors import ShapeError

# Products of decays at or below this are set to exactly 0: their share of the state is
# far below float32 resolution, and it keeps products out of the subnormal range, where
# x86 CPUs take a microcode assist roughly ten times slower per element (measured: 2.7x
# slower scans once dt A reaches about -2 per step). A single decay exp(dt A) only gets
# there for dt A < -87, so it is left as computed.
_NEGLIGIBLE_DECAY = 1e-18
# Exponents of lane decay products are clamped here first: float32 exp on x86 runs about a
# hundred times slower below -87 (measured), and exp of this is flushed to 0 anyway.
_LOG_FLUSHED_DECAY = math.log(_NEGLIGIBLE_DECAY) - 1.0
_CPU_CHUNK_ELEMENTS = 2 ** 17  # per thread: one 512 KiB float32 buffer, L2-sized
_DEVICE_CHUNK_ELEMENTS = 2 ** 22  # accelerators: fewer, larger launches
_LANE_ELEMENTS = 2 ** 14  # CPU lane scan: floats per call (see lane_count)
_LANE_MAX_STATE = 2 ** 11  # CPU lane scan: larger states are scanned as one lane


def auto_chunk_size(batch: int, d: int, N: int, device: torch.device | str = "cpu") -> int:
    """The chunk length whose (chunk, B, N, d) buffer fits the cache: a power of two.

    On CPU that is 2^17 floats per intra-op thread (the measured optimum for batch 1..4,
    d 64..256, 1 and 2 threads); elsewhere 2^22, where per-launch overhead dominates.
    Clamped to [4, 1024].
    """
    if torch.device(device).type == "cpu":
        budget = _CPU_CHUNK_ELEMENTS * torch.get_num_threads()
    else:
        budget = _DEVICE_CHUNK_ELEMENTS
    chunk = max(budget // max(batch * d * N, 1), 1)
    return min(max(1 << (chunk.bit_length() - 1), 4), 1024)


def selective_scan(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   D: Tensor | None = None, *, h0: Tensor | None = None,
                   chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Run the selective scan over a whole sequence in parallel chunks.

    The scan runs in at least float32 whatever the input dtype (the paper keeps the
    SSM parameters and recurrence in full precision, App. D); ``y`` is returned in
    ``u``'s dtype, the state in the scan's.

    Args:
        u: inputs x_t of the SSM, one per channel.
        dt: step sizes, already positive (softplus applied). ``dt = 0`` at a position
            makes it an identity step: decay exp(0) = 1 and no input, which is how
            padded positions pass the state through unchanged.
        A: continuous-time state matrix (diagonal per channel), negative entries.
        B: input-dependent input projection.
        C: input-dependent output projection.
        D: skip connection, or None.
        h0: state before the first step (zeros when None).
        chunk_size: time steps scanned at once (None: ``auto_chunk_size``); the working
            memory is two (three in backward) (chunk_size, B, N, d) buffers plus one
            (B, N, d) state per chunk when gradients are needed. A chunk is padded with
            identity steps to whole lanes (CPU) or to a power of two (accelerators).

    Returns:
        ``(y, h_last)``: outputs and the state after the last step.

    Shapes:
        u, dt: (B, T, d); A: (d, N); B, C: (B, T, N); D: (d,); h0, h_last: (B, d, N);
        y: (B, T, d).
    """
    batch, T, d = u.shape
    N = A.shape[-1]
    if dt.shape != u.shape or A.shape != (d, N) or B.shape != (batch, T, N) or C.shape != B.shape:
        raise ShapeError(
            f"selective_scan shapes disagree: u {tuple(u.shape)}, dt {tuple(dt.shape)}, "
            f"A {tuple(A.shape)}, B {tuple(B.shape)}, C {tuple(C.shape)}; expected u, dt "
            "(B, T, d), A (d, N), B, C (B, T, N)")
    if chunk_size is None:
        chunk_size = auto_chunk_size(batch, d, N, u.device)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    dtype = torch.promote_types(u.dtype, torch.float32)
    if h0 is None:
        h0 = u.new_zeros(batch, d, N, dtype=dtype)
    if T == 0:
        return u.new_zeros(batch, 0, d), h0.to(dtype)
    with torch.autocast(u.device.type, enabled=False):
        y, h_last = _SelectiveScan.apply(*(t.to(dtype) for t in (u, dt, A, B, C)),
                                         None if D is None else D.to(dtype), h0.to(dtype),
                                         chunk_size)
    return y.to(u.dtype), h_last


def selective_step(h: Tensor, u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   D: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One recurrent step, for decoding: no chunking, padding or scan machinery.

    Shapes:
        h: (B, d, N); u, dt: (B, d); A: (d, N); B, C: (B, N); D: (d,).
        Returns y (B, d) in ``u``'s dtype and the new h (B, d, N) in at least float32.
    """
    dtype = torch.promote_types(u.dtype, torch.float32)
    uf, dtf = u.to(dtype), dt.to(dtype)
    dA = torch.exp(dtf.unsqueeze(-1) * A.to(dtype))  # (B, d, N)
    h = torch.addcmul(dA * h.to(dtype), (dtf * uf).unsqueeze(-1), B.to(dtype).unsqueeze(1))
    y = (h @ C.to(dtype).unsqueeze(-1)).squeeze(-1)  # (B, d)
    if D is not None:
        y = y + uf * D.to(dtype)
    return y.to(u.dtype), h


def lane_count(chunk: int, state_elements: int) -> int:
    """How many lanes the CPU scan of one chunk runs side by side (see ``_Lanes``).

    A scan step is one kernel call over the states of all lanes, so lanes trade calls
    (about 2 chunk / lanes + lanes instead of chunk) for a second pass over all lanes
    but one. That pays while a call costs more than streaming its state: for states up
    to ``_LANE_MAX_STATE`` floats (measured, one thread: d_inner 64 and 128 gain, 256
    loses), lanes being added until a call covers ``_LANE_ELEMENTS`` floats, and at
    most about sqrt(2 chunk). Fewer than three lanes save no calls.

    Returns 1 where lanes do not pay; such chunks are scanned by the tree (``_Tree``),
    not by a loop over every step: one lane would be a sequential loop over time,
    measured 1.3x faster than the tree at d_inner 256 but not a parallel scan.

    Args:
        chunk: time steps in the chunk.
        state_elements: floats in one state, B * N * d.
    """
    if state_elements > _LANE_MAX_STATE:
        return 1
    lanes = min(_LANE_ELEMENTS // max(state_elements, 1), math.isqrt(2 * chunk))
    lanes = 1 << (lanes.bit_length() - 1)  # a power of two: whole lanes in a power-of-two chunk
    return 1 if lanes < 3 else lanes


class _Lanes:
    """The in-place two-level scan of one time-major chunk buffer, views built once.

    ``x`` becomes h_t = a_t h_{t-1} + x_t along dim 0 (h_{-1} = 0: fold an initial
    state into ``x_0``); ``reverse`` runs h_t = a_t h_{t+1} + x_t from the last position
    (h_P = 0). ``a`` is read, never written.

    The P steps are cut into ``lanes`` runs of K = P / lanes consecutive steps, and each
    line of ``run`` is one fused multiply-add over all the lanes it names: (1) every
    lane but the last (in scan order) is scanned alone to its end value, into
    ``ends``; (2) a loop over lanes makes those the true end values, end(m) += prod(m)
    end(m - 1), with ``prod`` the lane's whole decay product, which the caller writes
    into ``prod[1:lanes - 1]`` before ``run``, flushed to 0 below ``_NEGLIGIBLE_DECAY``;
    (3) every lane is scanned again from its true start. One lane is the plain loop.

    Shapes:
        a, x: (P, ...) contiguous, P a multiple of ``lanes``.
    """

    def __init__(self, a: Tensor, x: Tensor, lanes: int, *, reverse: bool = False):
        P = x.shape[0]
        if P % lanes or a.shape != x.shape:
            raise ValueError(f"lane scan needs equal shapes with a length divisible by "
                             f"{lanes} lanes, got {tuple(a.shape)}, {tuple(x.shape)}")
        M, K = lanes, P // lanes
        # Step k of every lane, in scan order: (M, ...) views, made in one call per buffer.
        xs, as_ = (t.view(M, K, *t.shape[1:]).unbind(1) for t in (x, a))
        if reverse:
            xs, as_ = xs[::-1], as_[::-1]
        self.steps = list(zip(xs[1:], as_[1:], xs[:-1]))
        self.lanes = M
        if M == 1:
            return
        ends = x.new_empty(M, *x.shape[1:])
        self.prod = x.new_empty(M, *x.shape[1:])
        # Lanes but the last / but the first, in scan order; the lane before lane m.
        first, rest = (slice(1, M), slice(0, M - 1)) if reverse else (slice(0, M - 1), slice(1, M))
        pred = (lambda m: m + 1) if reverse else (lambda m: m - 1)
        self.ends = ends[first]
        self.alone = [(x_k[first], a_k[first]) for x_k, a_k in zip(xs[1:], as_[1:])]
        self.alone_start = xs[0][first]
        lanes_order = range(M - 2, 0, -1) if reverse else range(1, M - 1)
        self.carry = [(ends[m], self.prod[m], ends[pred(m)]) for m in lanes_order]
        self.start = (xs[0][rest], as_[0][rest])

    def run(self) -> None:
        if self.lanes > 1:
            e = self.ends
            if self.alone:
                x_k, a_k = self.alone[0]
                torch.addcmul(x_k, a_k, self.alone_start, out=e)
                for x_k, a_k in self.alone[1:]:
                    torch.addcmul(x_k, a_k, e, out=e)
            else:
                e.copy_(self.alone_start)
            for end, prod, prev in self.carry:
                end.addcmul_(prod, prev)
            x_0, a_0 = self.start
            x_0.addcmul_(a_0, e)
        for x_k, a_k, x_prev in self.steps:
            x_k.addcmul_(a_k, x_prev)


class _Tree:
    """The in-place Blelloch tree scan of a time-major buffer, its strided views built once.

    The same recurrences as ``_Lanes`` in 2 log2(P) - 1 fused multiply-adds over strided
    views (an up-sweep, then a down-sweep), for accelerators, where the number of
    launches matters more than the four or so passes over the buffer, and for CPU
    states too large for lanes to pay (``lane_count``). Partial products
    of decays go to the workspace ``p``, flushed to 0 below ``_NEGLIGIBLE_DECAY``.

    Shapes:
        a, x, p: (P, ...) contiguous, P a power of two.
    """

    def __init__(self, a: Tensor, x: Tensor, p: Tensor, *, reverse: bool = False):
        P = x.shape[0]
        if P & (P - 1) or not (a.shape == x.shape == p.shape):
            raise ValueError(f"tree scan needs equal shapes with a power-of-two length, got "
                             f"{tuple(a.shape)}, {tuple(x.shape)}, {tuple(p.shape)}")

        def blocks(t: Tensor, s: int) -> Tensor:
            return t.view(P // (2 * s), 2 * s, *t.shape[1:])  # (blocks, 2s, ...)

        # Inside a block of 2s steps, the step ending the second half absorbs the first
        # half (forward: offset 2s-1 takes s-1; reverse mirrors offsets: 0 takes s).
        # Decays over spans of one step are a itself; longer spans were written to p.
        self.up, self.down = [], []
        s = 1
        while s < P:
            r, l = (0, s) if reverse else (2 * s - 1, s - 1)
            xv, dec = blocks(x, s), blocks(a if s == 1 else p, s)
            prod = blocks(p, s)[:, r] if 2 * s < P else None  # whole-chunk product unused
            self.up.append((xv[:, r], dec[:, r], xv[:, l], dec[:, l], prod))
            s *= 2
        s = P // 4
        while s >= 1:
            xv, dec = blocks(x, s), blocks(a if s == 1 else p, s)
            if reverse:  # offset s of block m takes the finished suffix at offset 0 of m+1
                self.down.append((xv[:-1, s], dec[:-1, s], xv[1:, 0]))
            else:  # offset s-1 of block m+1 takes the finished prefix at offset 2s-1 of m
                self.down.append((xv[1:, s - 1], dec[1:, s - 1], xv[:-1, 2 * s - 1]))
            s //= 2

    def run(self) -> None:
        for x_out, a_out, x_in, a_in, prod in self.up:
            x_out.addcmul_(a_out, x_in)
            if prod is not None:
                torch.mul(a_out, a_in, out=prod)
                F.threshold_(prod, _NEGLIGIBLE_DECAY, 0.0)
        for x_out, a_out, x_in in self.down:
            x_out.addcmul_(a_out, x_in)


def linear_scan_(a: Tensor, b: Tensor, *, reverse: bool = False, lanes: int = 1) -> Tensor:
    """In place, turn ``b`` into the scan ``h_t = a_t h_{t-1} + b_t`` along dim 0.

    ``h_{-1} = 0``; ``reverse`` runs ``h_t = a_t h_{t+1} + b_t`` from the last position
    to the first; ``a`` is not modified. The CPU lane scan of one chunk, for direct use
    and tests (the lanes' decay products multiplied out here).

    Shapes:
        a, b: (P, ...) with P a multiple of ``lanes``.
    """
    a, b_ = a.contiguous(), b.contiguous()
    scan = _Lanes(a, b_, lanes, reverse=reverse)
    if lanes > 2:
        prod = a.view(lanes, -1, *a.shape[1:])[1:-1].prod(1)  # (lanes - 2, ...)
        scan.prod[1:-1] = F.threshold(prod, _NEGLIGIBLE_DECAY, 0.0)
    scan.run()
    if b_ is not b:
        b.copy_(b_)
    return b


def _uses_tree(device: torch.device) -> bool:
    """Accelerators scan chunks with ``_Tree``; CPUs with ``_Lanes`` where ``lane_count``
    gives lanes, else with ``_Tree`` too (module docstring)."""
    return device.type != "cpu"


def _chunk_sizes(T: int, L: int) -> list[int]:
    return [min(L, T - t0) for t0 in range(0, T, L)]


class _Chunk:
    """Views of the work buffers for a chunk of ``n`` steps, made once per length.

    The chunk is padded at its end with identity steps (decay 1, no input), which
    change nothing before them and, backwards, pass the adjoint through unchanged. A
    reverse scan's step t takes the decay a_{t+1}, one row on, so the decay buffer has
    a spare row past the padded chunk, which is never read.
    """

    def __init__(self, work: _Chunks, n: int):
        a, xs = work.buffers[0], work.buffers[1:]
        N, d = a.shape[-2:]
        P = work.padded(n)
        self.n, self.K, self.lanes = n, work.K, P // work.K if work.K else 1
        self.a, self.a0 = a[:n], a[0]
        self.x = [t[:n] for t in xs]  # (n, B, N, d)
        self.flat = [t.view(-1, N, d) for t in self.x]  # (n B, N, d)
        self.first = [t[0] for t in xs]
        self.last = [t[P - 1] for t in xs]
        self.small = work.small[:n]  # (n, B, 1, d)
        self.pads = [t[n:P] for t in work.buffers] if n < P else []
        if work.workspace is not None:
            p = work.workspace[:P]
            self.scan = _Tree(a[:P], xs[0][:P], p)
            self.reverse = _Tree(a[1:P + 1], xs[1][:P], p, reverse=True) if work.reverse else None
        else:
            self.scan = _Lanes(a[:P], xs[0][:P], self.lanes)
            self.reverse = (_Lanes(a[1:P + 1], xs[1][:P], self.lanes, reverse=True)
                            if work.reverse else None)

    def decays(self, dt_c: Tensor, A_: Tensor, lane_dt: tuple[Tensor, ...] = ()) -> None:
        """a_t = exp(dt_t A) into the decay buffer, identity steps after the chunk
        (decay 1, every other buffer 0), and the lane scans' decay products, from the
        lanes' sums of dt (forward, then reverse) where given."""
        torch.mul(dt_c, A_, out=self.a)  # (n, B, N, d)
        self.a.exp_()
        if self.pads:
            self.pads[0].fill_(1.0)
            for t in self.pads[1:]:
                t.zero_()
        if self.lanes > 2:
            scans = (self.scan,) if self.reverse is None else (self.scan, self.reverse)
            for shift, scan in enumerate(scans):  # a reverse scan's steps take a_{t+1}
                sums = lane_dt[shift] if lane_dt else self.lane_dt(dt_c, shift)
                prod = scan.prod[1:self.lanes - 1]
                torch.mul(sums, A_, out=prod)  # (lanes - 2, B, N, d)
                prod.clamp_(min=_LOG_FLUSHED_DECAY).exp_()
                F.threshold_(prod, _NEGLIGIBLE_DECAY, 0.0)

    def lane_dt(self, dt_c: Tensor, shift: int) -> Tensor:
        """Sums of dt over the middle lanes, each step's taken ``shift`` rows on (all real
        steps: only the last lane reaches into the padding)."""
        M, K = self.lanes, self.K
        return dt_c[K + shift:(M - 1) * K + shift].view(M - 2, K, *dt_c.shape[1:]).sum(1)


class _Chunks:
    """The work buffers of one pass over the sequence in chunks of ``L`` steps.

    Shapes:
        buffers: ``count`` of (P + 1, B, N, d), the first for decays, P = L padded to
        whole lanes (CPU) or to a power of two (the tree: ``workspace`` likewise);
        small: (L, B, 1, d), for dt_t u_t.
    """

    def __init__(self, like: Tensor, L: int, batch: int, N: int, d: int, count: int, *,
                 reverse: bool = False):
        lanes = 1 if _uses_tree(like.device) else lane_count(L, batch * N * d)
        if lanes == 1:
            self.K, P = 0, 1 << max(L - 1, 0).bit_length()
        else:
            self.K = -(-L // lanes)
            P = self.K * lanes
        self.buffers = [like.new_empty(P + 1, batch, N, d) for _ in range(count)]
        self.buffers[0][P:].fill_(1.0)  # the spare decay row: never read, kept finite
        self.workspace = like.new_empty(P, batch, N, d) if self.K == 0 else None
        self.small = like.new_empty(L, batch, 1, d)
        self.P, self.reverse = P, reverse
        self._views: dict[int, _Chunk] = {}

    def padded(self, n: int) -> int:
        return -(-n // self.K) * self.K if self.K else self.P

    def lane_dt(self, dt_: Tensor, L: int) -> list[tuple[Tensor, ...]]:
        """Per chunk, the middle lanes' sums of dt (forward, and for a reverse pass also
        one row on) from one reduction over all chunks; empty where the chunk's own
        ``_Chunk.lane_dt`` has to do it: a short last chunk, lanes not tiling ``L``."""
        T, batch, d = dt_.shape
        n_chunks, full = -(-T // L), T // L
        M, K = (L // self.K, self.K) if self.K else (0, 0)
        if M < 3 or M * K != L or full == 0:
            return [()] * n_chunks
        chunks = dt_[:full * L].view(full, L, batch, 1, d)
        sums = [chunks[:, K + s:(M - 1) * K + s].reshape(full, M - 2, K, batch, 1, d).sum(2)
                for s in ((0, 1) if self.reverse else (0,))]  # (full, M - 2, B, 1, d)
        return list(zip(*(x.unbind(0) for x in sums))) + [()] * (n_chunks - full)

    def __getitem__(self, n: int) -> _Chunk:
        if n not in self._views:
            self._views[n] = _Chunk(self, n)
        return self._views[n]


class _SelectiveScan(torch.autograd.Function):
    """Chunked scan, recomputed chunk by chunk in backward (module docstring).

    Internally time-major with the state as (N, d): every chunk is then a contiguous
    slice (split once into views, outside the loop), and the contraction
    y_t = C_t . h_t is a row-vector-times-matrix product, several times faster on CPU
    than the (d, N) matrix-times-vector one (the backward's h_t gy_t and g_t dt_t u_t
    are taken transposed for the same reason). Temporaries are per chunk: a fresh
    (T, B, d) one costs its page faults on every call.

    The adjoint g_t = dL/dh_t obeys the reversed recurrence g_t = C_t gy_t + a_{t+1}
    g_{t+1}: the chunk's scan run backwards on its decays one row on. With g and the
    recomputed h every gradient is a contraction of one (n, B, N, d) buffer:
    dL/dC_t = h_t gy_t, dL/d(dt_t u_t) = B_t . g_t, dL/dB_t = g_t dt_t u_t (batched
    matrix-vector products) and dL/d(dt_t A) = g_t a_t h_{t-1} = g_t (h_t - dt_t u_t B_t).
    """

    @staticmethod
    def forward(ctx, u, dt, A, B, C, D, h0, chunk_size):
        batch, T, d = u.shape
        N = A.shape[-1]
        L = min(chunk_size, T)
        sizes = _chunk_sizes(T, L)
        work = _Chunks(u, L, batch, N, d, 2)
        A_ = A.t().contiguous()  # (N, d)
        dt_, u_ = (t.transpose(0, 1).contiguous() for t in (dt, u))  # (T, B, d)
        B_, C_ = (t.transpose(0, 1).contiguous() for t in (B, C))  # (T, B, N)
        y = u.new_empty(T, batch, d)
        keep = any(ctx.needs_input_grad)
        # The state before each chunk (kept for backward) and after the last; without
        # gradients two slots alternate.
        starts = u.new_empty(len(sizes) + 1 if keep else 2, batch, N, d)
        starts[0] = h0.transpose(1, 2)
        slots = starts.unbind(0)
        chunks = zip(sizes, dt_.unsqueeze(2).split(L), u_.unsqueeze(2).split(L),
                     B_.unsqueeze(-1).split(L), C_.view(-1, 1, N).split(L * batch),
                     y.view(-1, 1, d).split(L * batch), work.lane_dt(dt_, L))
        # dt_c, u_c: (n, B, 1, d); B_c: (n, B, N, 1); C_c: (n B, 1, N); y_c: (n B, 1, d)
        # Every op below writes into tensors made above: inference mode skips autograd's
        # dispatch, a tenth of the time of these small calls.
        with torch.inference_mode():
            for c, (n, dt_c, u_c, B_c, C_c, y_c, lane_dt) in enumerate(chunks):
                v = work[n]
                h_in, h_out = (slots[c], slots[c + 1]) if keep else (slots[c % 2], slots[1 - c % 2])
                v.decays(dt_c, A_, lane_dt)
                torch.mul(torch.mul(dt_c, u_c, out=v.small), B_c, out=v.x[0])  # (n, B, N, d)
                v.first[0].addcmul_(v.a0, h_in)
                v.scan.run()
                torch.bmm(C_c, v.flat[0], out=y_c)  # (n B, 1, d)
                h_out.copy_(v.last[0])
        if D is not None:
            y.addcmul_(u_, D)
        ctx.chunk = L
        if keep:
            ctx.save_for_backward(u, dt, A, B, C, D, starts[:-1])
        return y.transpose(0, 1), h_out.transpose(1, 2).clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gh):
        u, dt, A, B, C, D, starts = ctx.saved_tensors
        batch, T, d = u.shape
        N = A.shape[-1]
        L = ctx.chunk
        sizes = _chunk_sizes(T, L)
        work = _Chunks(u, L, batch, N, d, 3, reverse=True)
        A_ = A.t().contiguous()  # (N, d)
        dt_, u_ = (t.transpose(0, 1).contiguous() for t in (dt, u))  # (T, B, d)
        B_, C_ = (t.transpose(0, 1).contiguous() for t in (B, C))  # (T, B, N)
        gy_ = gy.transpose(0, 1).contiguous()  # (T, B, d)
        g_u, g_dt = torch.empty_like(u_), torch.empty_like(u_)
        g_B, g_C = torch.empty_like(B_), torch.empty_like(C_)
        g_A, g_A_c = torch.zeros_like(A_), torch.empty_like(A_)
        g_D = None if D is None else torch.zeros_like(D)
        g_dtu = u.new_empty(L * batch, 1, d)
        # dL/dh after the current chunk, decayed into it (a_{t+1} g_{t+1})
        carry = gh.transpose(1, 2).clone(memory_format=torch.contiguous_format)
        starts = starts.unbind(0)
        chunks = list(zip(
            sizes, dt_.unsqueeze(2).split(L), u_.unsqueeze(2).split(L),
            B_.unsqueeze(-1).split(L), B_.view(-1, 1, N).split(L * batch),
            C_.unsqueeze(-1).split(L), gy_.unsqueeze(2).split(L),
            gy_.view(-1, 1, d).split(L * batch), g_C.view(-1, 1, N).split(L * batch),
            g_B.view(-1, 1, N).split(L * batch), g_u.unsqueeze(2).split(L),
            g_dt.unsqueeze(2).split(L), work.lane_dt(dt_, L)))
        # (n, B, 1, d): dt_c, u_c, gy_c, g_u_c, g_dt_c; (n, B, N, 1): B_c, C_c;
        # (n B, 1, N): B_r, g_C_c, g_B_c; (n B, 1, d): gy_r
        with torch.inference_mode():  # as in forward
            for c in reversed(range(len(chunks))):
                (n, dt_c, u_c, B_c, B_r, C_c, gy_c, gy_r, g_C_c, g_B_c, g_u_c, g_dt_c,
                 lane_dt) = chunks[c]
                v = work[n]
                (h, g), (h_flat, g_flat) = v.x, v.flat
                dtu_c, g_dtu_c = v.small, g_dtu[:n * batch]
                # Recompute the chunk's states h_t from its start state.
                v.decays(dt_c, A_, lane_dt)
                torch.mul(torch.mul(dt_c, u_c, out=dtu_c), B_c, out=h)  # (n, B, N, d)
                v.first[0].addcmul_(v.a0, starts[c])
                v.scan.run()
                # dL/dC_t = h_t gy_t, as gy_t^T h_t^T: MKL reads h_t^T as a transposed matrix.
                torch.bmm(gy_r, h_flat.transpose(1, 2), out=g_C_c)  # (n B, 1, N)
                # Adjoint g_t = C_t gy_t + a_{t+1} g_{t+1}, the chunk's last step taking the carry.
                torch.mul(gy_c, C_c, out=g)  # (n, B, N, d)
                v.last[1].add_(carry)
                v.reverse.run()
                torch.mul(v.a0, v.first[1], out=carry)
                dtu_r = dtu_c.view(-1, 1, d)  # (n B, 1, d)
                torch.bmm(B_r, g_flat, out=g_dtu_c)  # (n B, 1, d)
                torch.bmm(dtu_r, g_flat.transpose(1, 2), out=g_B_c)  # (n B, 1, N)
                # dL/d(dt_t A) = g_t a_t h_{t-1} = g_t (h_t - dt_t u_t B_t), in h; its contractions.
                w = h.addcmul_(dtu_c, B_c, value=-1.0).mul_(g)
                torch.sum(torch.mul(w, A_, out=v.a), -2, keepdim=True, out=g_dt_c)  # (n, B, 1, d)
                g_A += torch.sum(w.mul_(dt_c), (0, 1), out=g_A_c)  # (N, d)
                # Through dt_t u_t: into u and dt; then the skip connection D u_t.
                g_dtu_c = g_dtu_c.view_as(dtu_c)  # (n, B, 1, d)
                g_dt_c.addcmul_(g_dtu_c, u_c)
                torch.mul(g_dtu_c, dt_c, out=g_u_c)
                if D is not None:
                    g_u_c.addcmul_(gy_c, D)
                    g_D += torch.mul(gy_c, u_c, out=dtu_c).sum((0, 1, 2))
        return (g_u.transpose(0, 1), g_dt.transpose(0, 1), g_A.t(), g_B.transpose(0, 1),
                g_C.transpose(0, 1), g_D, carry.transpose(1, 2), None)
