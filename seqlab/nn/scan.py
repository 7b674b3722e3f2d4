"""The selective scan of Mamba in parallel, pure PyTorch, with bounded memory.

The selective state-space layer (Gu & Dao 2023, arXiv:2312.00752, Alg. 2) runs, per
channel d and state index n, the input-dependent linear recurrence

    h_t = exp(dt_t A) * h_{t-1} + dt_t B_t u_t        y_t = C_t . h_t + D u_t

A loop over time costs one tiny kernel launch per step (and per step again in the
backward pass), so here time is cut into chunks and each chunk is scanned in
parallel; only the state crosses from one chunk to the next (a loop over chunks).

Within a chunk the pairs ``(a_t, b_t) = (exp(dt_t A), dt_t B_t u_t)`` are combined
with the associative operator ``(a1, b1) o (a2, b2) = (a2 a1, a2 b1 + b2)`` by a
work-efficient tree scan (Blelloch 1990, "Prefix sums and their applications"):
an up-sweep and a down-sweep of log2(chunk) in-place steps over strided views, so
the work stays O(T d N) like the loop. Only products of decays in [0, 1] are ever
formed, which cannot overflow; the shortcut exp(cumsum) * cumsum(exp(-cumsum) ...)
needs exp of growing positive numbers and does.

Memory is bounded the way the paper's kernel bounds it (§3.3.2, recomputation): the
(B, chunk, d, N) states live one chunk at a time and are never stored for backward.
The backward pass re-runs each chunk's forward scan from its saved start state and
walks the chunks in reverse with the adjoint recurrence ``g_t = C_t gy_t +
exp(dt_{t+1} A) g_{t+1}``, itself a (reversed) linear scan. Saved for backward are
the inputs and one (B, d, N) state per chunk.

On CPU the scan is bound by memory traffic, so the default chunk is sized for the
core's cache (``auto_chunk_size``): the per-chunk buffers stay in L2 between the
passes over them (measured 1.6x faster than a fixed chunk of 64 at batch 4, d 256,
one thread; the chunk sweep in benchmarks/bench_mamba.py shows the curve).

A slow sequential reference lives in ``tests/nn/test_mamba.py``, with parity tests of
outputs, final state and every gradient against this implementation.
"""

from __future__ import annotations

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
_CPU_CHUNK_ELEMENTS = 2 ** 17  # per thread: one 512 KiB float32 buffer, L2-sized
_DEVICE_CHUNK_ELEMENTS = 2 ** 22  # accelerators: fewer, larger launches


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
            memory is four (chunk_size, B, N, d) buffers plus one (B, N, d) state per
            chunk when gradients are needed. A chunk shorter than a power of two is
            padded up to it with identity steps.

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
    if D is None:
        D = u.new_zeros(d, dtype=dtype)
    if T == 0:
        return u.new_zeros(batch, 0, d), h0.to(dtype)
    with torch.autocast(u.device.type, enabled=False):
        y, h_last = _SelectiveScan.apply(*(t.to(dtype) for t in (u, dt, A, B, C, D, h0)),
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


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


class _Tree:
    """The in-place tree scan of a time-major buffer, its strided views built once.

    ``b`` becomes the inclusive scan h_t = a_t h_{t-1} + b_t along dim 0 (``h_{-1} = 0``,
    so ``a_0`` is never read: fold an initial state into ``b_0``); ``reverse`` runs the
    recurrence from the last position to the first. ``a`` is read, never written:
    partial products of decays go to the workspace ``p``. Up-sweep then down-sweep
    (Blelloch 1990), 2 log2(P) - 1 steps, each one fused multiply-add over a strided
    view, so a chunk costs a few passes over its buffer and no temporaries. The views
    are made once per buffer triple because building them costs more than a small step.

    Shapes:
        a, b, p: (P, ...) contiguous, P a power of two.
    """

    def __init__(self, a: Tensor, b: Tensor, p: Tensor, *, reverse: bool = False):
        P = b.shape[0]
        if P & (P - 1) or not (a.shape == b.shape == p.shape):
            raise ValueError(f"tree scan needs equal shapes with a power-of-two length, got "
                             f"{tuple(a.shape)}, {tuple(b.shape)}, {tuple(p.shape)}")

        def blocks(t: Tensor, s: int) -> Tensor:
            return t.view(P // (2 * s), 2 * s, *t.shape[1:])  # (blocks, 2s, ...)

        # Inside a block of 2s steps, the step ending the second half absorbs the first
        # half (forward: offset 2s-1 takes s-1; reverse mirrors offsets: 0 takes s).
        # Decays over spans of one step are a itself; longer spans were written to p.
        self.up, self.down = [], []
        s = 1
        while s < P:
            r, l = (0, s) if reverse else (2 * s - 1, s - 1)
            bv, dec = blocks(b, s), blocks(a if s == 1 else p, s)
            prod = blocks(p, s)[:, r] if 2 * s < P else None  # whole-chunk product unused
            self.up.append((bv[:, r], dec[:, r], bv[:, l], dec[:, l], prod))
            s *= 2
        s = P // 4
        while s >= 1:
            bv, dec = blocks(b, s), blocks(a if s == 1 else p, s)
            if reverse:  # offset s of block m takes the finished suffix at offset 0 of m+1
                self.down.append((bv[:-1, s], dec[:-1, s], bv[1:, 0]))
            else:  # offset s-1 of block m+1 takes the finished prefix at offset 2s-1 of m
                self.down.append((bv[1:, s - 1], dec[1:, s - 1], bv[:-1, 2 * s - 1]))
            s //= 2

    def run(self) -> None:
        for b_out, a_out, b_in, a_in, prod in self.up:
            b_out.addcmul_(a_out, b_in)
            if prod is not None:
                torch.mul(a_out, a_in, out=prod)
                F.threshold_(prod, _NEGLIGIBLE_DECAY, 0.0)
        for b_out, a_out, b_in in self.down:
            b_out.addcmul_(a_out, b_in)


def linear_scan_(a: Tensor, b: Tensor, *, reverse: bool = False) -> Tensor:
    """In place, turn ``b`` into the scan ``h_t = a_t h_{t-1} + b_t`` along dim 0.

    ``h_{-1} = 0``; ``reverse`` runs from the last position to the first; ``a`` is not
    modified. The tree the selective scan runs chunk by chunk, for direct use and tests.

    Shapes:
        a, b: (P, ...) with P a power of two.
    """
    a, b_ = a.contiguous(), b.contiguous()
    _Tree(a, b_, torch.empty_like(a), reverse=reverse).run()
    if b_ is not b:
        b.copy_(b_)
    return b


def _chunk_sizes(T: int, L: int) -> list[int]:
    return [min(L, T - t0) for t0 in range(0, T, L)]


class _SelectiveScan(torch.autograd.Function):
    """Chunked tree scan, recomputed chunk by chunk in backward (module docstring).

    Internally time-major with the state as (N, d): every chunk is then a contiguous
    slice (split once into views, outside the loop), and the contraction
    y_t = C_t . h_t is a row-vector-times-matrix product, several times faster on CPU
    than the (d, N) matrix-times-vector one.

    The adjoint is run on q_t = dA_t g_t, where g_t = dL/dh_t: q obeys the reversed
    recurrence q_t = dA_t q_{t+1} + dA_t C_t gy_t with the chunk's own decays (no
    shifted copy), and g_t = C_t gy_t + q_{t+1}, whose first term contracts without
    being formed.
    """

    @staticmethod
    def forward(ctx, u, dt, A, B, C, D, h0, chunk_size):
        batch, T, d = u.shape
        N = A.shape[-1]
        L = min(chunk_size, T)
        P = _next_pow2(L)
        sizes = _chunk_sizes(T, L)
        A_ = A.t().contiguous()  # (N, d)
        dt_, u_ = (t.transpose(0, 1).contiguous() for t in (dt, u))  # (T, B, d)
        B_, C_ = (t.transpose(0, 1).contiguous() for t in (B, C))  # (T, B, N)
        a, b, p = (u.new_empty(P, batch, N, d) for _ in range(3))
        dtu = u.new_empty(P, batch, 1, d)
        tree = _Tree(a, b, p)
        y = u.new_empty(T, batch, d)
        keep = any(ctx.needs_input_grad)
        # The state before each chunk (kept for backward) and after the last; without
        # gradients two slots alternate.
        starts = u.new_empty(len(sizes) + 1 if keep else 2, batch, N, d)
        starts[0] = h0.transpose(1, 2)
        slots = starts.unbind(0)
        a_first, b_first = a[0], b[0]
        chunks = zip(sizes, dt_.unsqueeze(2).split(L), u_.unsqueeze(2).split(L),
                     B_.unsqueeze(-1).split(L), C_.view(-1, 1, N).split(L * batch),
                     y.view(-1, 1, d).split(L * batch))
        # dt_c, u_c: (n, B, 1, d); B_c: (n, B, N, 1); C_c: (n B, 1, N); y_c: (n B, 1, d)
        for c, (n, dt_c, u_c, B_c, C_c, y_c) in enumerate(chunks):
            a_c, b_c, dtu_c = (a, b, dtu) if n == P else (a[:n], b[:n], dtu[:n])
            h_in, h_out = (slots[c], slots[c + 1]) if keep else (slots[c % 2], slots[1 - c % 2])
            torch.mul(dt_c, A_, out=a_c)  # (n, B, N, d)
            a_c.exp_()
            torch.mul(torch.mul(dt_c, u_c, out=dtu_c), B_c, out=b_c)  # (n, B, N, d)
            b_first.addcmul_(a_first, h_in)
            if n < P:  # identity steps pad the chunk to a power of two
                b[n:].zero_()
            tree.run()
            torch.bmm(C_c, b_c.view(-1, N, d), out=y_c)  # (n B, 1, d)
            h_out.copy_(b_c[-1])
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
        P = _next_pow2(L)
        sizes = _chunk_sizes(T, L)
        A_ = A.t().contiguous()  # (N, d)
        dt_, u_ = (t.transpose(0, 1).contiguous() for t in (dt, u))  # (T, B, d)
        B_, C_ = (t.transpose(0, 1).contiguous() for t in (B, C))  # (T, B, N)
        gy_ = gy.transpose(0, 1).contiguous()  # (T, B, d)
        gh_ = gh.transpose(1, 2)  # (B, N, d)
        # dt u and B with a zero step in front: [1:] is step t, [:-1] is step t - 1.
        dtu_ext = u.new_zeros(T + 1, batch, d)
        torch.mul(dt_, u_, out=dtu_ext[1:])
        B_ext = torch.cat([B_.new_zeros(1, batch, N), B_])  # (T + 1, B, N)
        dtu_, dtu_prev, B_prev = dtu_ext[1:], dtu_ext[:-1], B_ext[:-1]
        da, h, q, p = (u.new_empty(P, batch, N, d) for _ in range(4))
        forward_tree, adjoint_tree = _Tree(da, h, p), _Tree(da, q, p, reverse=True)
        # Gradients through g_t's C_t gy_t part, contracted without forming it.
        g_dtu = gy_ * (B_ * C_).sum(-1, keepdim=True)  # (T, B, d)
        g_B = C_ * torch.bmm(gy_.view(-1, 1, d), dtu_.reshape(-1, d, 1)).view(T, batch, 1)
        # Its q_{t+1} part pairs q_t with step t-1: accumulate at t, shift once at the end.
        q_dtu, q_B = torch.empty_like(u_), torch.empty_like(B_)
        g_C, g_dt_A = torch.empty_like(C_), torch.empty_like(u_)
        g_A = torch.zeros_like(A_)
        carry = gh_.contiguous()  # dL/dh after the current chunk, from later steps
        chunks = list(zip(
            sizes, dt_.unsqueeze(2).split(L), dtu_.unsqueeze(2).split(L),
            B_.unsqueeze(-1).split(L), gy_.unsqueeze(2).split(L), C_.unsqueeze(-1).split(L),
            g_C.split(L), B_prev.reshape(-1, 1, N).split(L * batch),
            q_dtu.view(-1, 1, d).split(L * batch), dtu_prev.unsqueeze(2).split(L),
            q_B.split(L), g_dt_A.split(L)))
        # (n, B, 1, d): dt_c, dtu_c, gy_c, dtu_prev_c; (n, B, N, 1): B_c, C_c;
        # (n, B, N): g_C_c, q_B_c; (n B, 1, N): B_prev_c; (n B, 1, d): q_dtu_c; (n, B, d): g_dt_A_c
        da_first, h_first, q_first, w_first = da[0], h[0], q[0], p[0]
        for c in reversed(range(len(chunks))):
            (n, dt_c, dtu_c, B_c, gy_c, C_c, g_C_c, B_prev_c, q_dtu_c, dtu_prev_c, q_B_c,
             g_dt_A_c) = chunks[c]
            da_c, h_c, q_c, w = (da, h, q, p) if n == P else (da[:n], h[:n], q[:n], p[:n])
            if n < P:  # identity decays, no input: pads reach nothing real either way
                da[n:].fill_(1.0)
                h[n:].zero_()
                q[n:].zero_()
            # Recompute the chunk's states h_t from its start state.
            torch.mul(dt_c, A_, out=da_c)  # (n, B, N, d)
            da_c.exp_()
            torch.mul(dtu_c, B_c, out=h_c)  # (n, B, N, d)
            h_first.addcmul_(da_first, starts[c])
            forward_tree.run()
            torch.sum(torch.mul(h_c, gy_c, out=w), -1, out=g_C_c)  # dy_t / dC_t = h_t
            # Adjoint q_t = dA_t (C_t gy_t + q_{t+1}), the chunk's last step taking the carry.
            torch.mul(gy_c, C_c, out=q_c)  # (n, B, N, d)
            q_c[-1] += carry
            q_c.mul_(da_c)
            adjoint_tree.run()
            torch.bmm(B_prev_c, q_c.view(-1, N, d), out=q_dtu_c)  # (n B, 1, d)
            torch.sum(torch.mul(q_c, dtu_prev_c, out=w), -1, out=q_B_c)  # (n, B, N)
            carry = q_first.clone()
            # dL/d(dt_t A) = g_t dA_t h_{t-1} = q_t h_{t-1}, in p; then its two contractions.
            torch.mul(q_c[1:], h_c[:-1], out=w[1:])
            torch.mul(q_first, starts[c], out=w_first)
            torch.sum(torch.mul(w, A_, out=h_c), -2, out=g_dt_A_c)  # (n, B, d)
            g_A += w.mul_(dt_c).sum((0, 1))
        g_dtu[:-1] += q_dtu[1:]
        g_dtu[-1] += (B_[-1, :, None] @ gh_).squeeze(1)
        g_B[:-1] += q_B[1:]
        g_B[-1] += (gh_ @ dtu_[-1, :, :, None]).squeeze(-1)
        g_D = torch.mul(gy_, u_, out=q_dtu).sum((0, 1))
        g_u = torch.mul(g_dtu, dt_).addcmul_(gy_, D)  # (T, B, d)
        g_dt = g_dt_A.addcmul_(g_dtu, u_)  # (T, B, d)
        return (g_u.transpose(0, 1), g_dt.transpose(0, 1), g_A.t(), g_B.transpose(0, 1),
                g_C.transpose(0, 1), g_D, carry.transpose(1, 2), None)
