"""The chunked selective scan as an autograd function, recomputed in backward.

Time is cut into chunks; each chunk's decays a_t = exp(dt_t A) and inputs
b_t = dt_t B_t u_t are formed in a few whole-chunk kernels, the chunk is scanned by
one of the engines of ``seqlab.nn.scan_engines``, and only the state crosses from one
chunk to the next (a loop over chunks).

Memory is bounded the way the paper's kernel bounds it (Gu & Dao 2023,
arXiv:2312.00752, §3.3.2, recomputation): the (chunk, B, N, d) states live one chunk at
a time and are never stored for backward. The backward pass re-runs each chunk's
forward scan from its saved start state and walks the chunks in reverse with the
adjoint recurrence ``g_t = C_t gy_t + exp(dt_{t+1} A) g_{t+1}``, the same scan run
backwards. Saved for backward are the inputs and one (B, d, N) state per chunk.

Call it through ``seqlab.nn.scan.selective_scan``, which checks shapes and dtypes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from seqlab.nn.scan_engines import _NEGLIGIBLE_DECAY, _Lanes, _Tree, lane_count

# Exponents of lane decay products are clamped here first: float32 exp on x86 runs about a
# hundred times slower below -87 (measured), and exp of this is flushed to 0 anyway.
_LOG_FLUSHED_DECAY = math.log(_NEGLIGIBLE_DECAY) - 1.0


def _uses_tree(device: torch.device) -> bool:
    """Accelerators scan chunks with ``_Tree``; CPUs with ``_Lanes`` where ``lane_count``
    gives lanes, else with ``_Tree`` too (see ``seqlab.nn.scan_engines``)."""
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
