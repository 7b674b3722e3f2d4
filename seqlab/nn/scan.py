"""The selective scan of Mamba in parallel, pure PyTorch, with bounded memory.

The selective state-space layer (Gu & Dao 2023, arXiv:2312.00752, Alg. 2) runs, per
channel d and state index n, the input-dependent linear recurrence

    h_t = exp(dt_t A) * h_{t-1} + dt_t B_t u_t        y_t = C_t . h_t + D u_t

``selective_scan`` runs it over a whole sequence, ``selective_step`` one step (decoding).
The work is split over three modules:

- here: the public API, the one-step recurrence and the choice of chunk length;
- ``seqlab.nn.scan_chunked``: time cut into chunks, only the state crossing from one to
  the next, as an autograd function that recomputes each chunk in backward instead of
  storing its states (the paper's §3.3.2), so memory stays bounded;
- ``seqlab.nn.scan_engines``: how one chunk is scanned in place, always a parallel
  scan: the two-level lane scan (CPU, small states) or the Blelloch tree
  (accelerators, larger states).

On CPU the default chunk is sized for the core's cache (``auto_chunk_size``): the
per-chunk buffers stay in L2 between the passes over them (the chunk sweep in
benchmarks/bench_mamba.py shows the curve).

A slow sequential reference lives in ``tests/nn/test_mamba.py``, with parity tests of
outputs, final state and every gradient against this implementation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqlab.errors import ShapeError
from seqlab.nn.scan_chunked import _SelectiveScan
from seqlab.nn.scan_engines import lane_count, linear_scan_

__all__ = ["auto_chunk_size", "lane_count", "linear_scan_", "selective_scan", "selective_step"]

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
