"""The two in-place scan engines that scan one time-major chunk of the selective scan.

How a chunk is scanned depends on what a kernel call costs, but it is always a
parallel scan, never a loop over every time step:

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

The chunking, the autograd function and the public API are in ``seqlab.nn.scan_chunked``
and ``seqlab.nn.scan``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# Products of decays at or below this are set to exactly 0: their share of the state is
# far below float32 resolution, and it keeps products out of the subnormal range, where
# x86 CPUs take a microcode assist roughly ten times slower per element (measured: 2.7x
# slower scans once dt A reaches about -2 per step). A single decay exp(dt A) only gets
# there for dt A < -87, so it is left as computed.
_NEGLIGIBLE_DECAY = 1e-18
_LANE_ELEMENTS = 2 ** 14  # CPU lane scan: floats per call (see lane_count)
_LANE_MAX_STATE = 2 ** 11  # CPU lane scan: larger states are scanned as one lane


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
