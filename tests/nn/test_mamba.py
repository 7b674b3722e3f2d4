"""Mamba: the parallel scan equals a sequential loop (values and gradients), and the
mixer's state threads chunks, decoding steps and padding exactly."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from seqlab.config import ModelConfig
from seqlab.models.build import build_backbone
from seqlab.nn.mamba import Mamba, MambaOptions, MambaState, TimeStep
from seqlab.errors import ShapeError
import seqlab.nn.scan_chunked as scan_chunked
from seqlab.nn.scan import (auto_chunk_size, lane_count, linear_scan_, selective_scan,
                            selective_step)

D = 32


def selective_scan_ref(u, dt, A, B, C, D=None, h0=None):
    """The slow sequential reference: h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, y_t = C_t . h_t
    + D u_t, one Python step per token (as ``selective_scan_ref`` of the Mamba repository).

    Shapes: u, dt (B, T, d); A (d, N); B, C (B, T, N); D (d,); h0 (B, d, N).
    """
    dA = torch.exp(dt.unsqueeze(-1) * A)  # (B, T, d, N)
    dBu = (dt * u).unsqueeze(-1) * B.unsqueeze(2)  # (B, T, d, N)
    h = u.new_zeros(u.shape[0], *A.shape) if h0 is None else h0
    ys = []
    for a_t, b_t, c_t in zip(dA.unbind(1), dBu.unbind(1), C.unbind(1)):
        h = a_t * h + b_t
        ys.append((h @ c_t.unsqueeze(-1)).squeeze(-1))  # (B, d)
    y = torch.stack(ys, 1)  # (B, T, d)
    return (y if D is None else y + u * D), h


def scan_inputs(batch=2, T=37, d=5, N=4, dtype=torch.float64, grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    A = -torch.rand(d, N, generator=g, dtype=dtype) * 3
    inputs = dict(u=r(batch, T, d), dt=F.softplus(r(batch, T, d)), A=A, B=r(batch, T, N),
                  C=r(batch, T, N), D=r(d), h0=r(batch, d, N))
    return {k: v.requires_grad_(grad) for k, v in inputs.items()}


def run_scan(x, chunk_size):
    return selective_scan(x["u"], x["dt"], x["A"], x["B"], x["C"], x["D"], h0=x["h0"],
                          chunk_size=chunk_size)


def run_ref(x):
    return selective_scan_ref(x["u"], x["dt"], x["A"], x["B"], x["C"], x["D"], h0=x["h0"])


@pytest.fixture(params=["lanes", "tree"])
def chunk_scan(request, monkeypatch):
    """Run each scan test with the CPU lane scan and with the accelerators' tree scan."""
    monkeypatch.setattr(scan_chunked, "_uses_tree", lambda device: request.param == "tree")
    return request.param


@pytest.mark.parametrize("chunk_size", [1, 3, 8, 16, 36, 37, 64])
def test_parallel_scan_equals_sequential_reference(chunk_size, chunk_scan):
    x = scan_inputs()  # T = 37: most chunk sizes leave a short last chunk
    y, h = run_scan(x, chunk_size)
    y_ref, h_ref = run_ref(x)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(h, h_ref, atol=1e-12, rtol=1e-10)


def test_scan_in_float32_and_without_initial_state():
    x = scan_inputs(dtype=torch.float32, T=50)
    y, h = selective_scan(x["u"], x["dt"], x["A"], x["B"], x["C"], chunk_size=16)
    y_ref, h_ref = selective_scan_ref(x["u"], x["dt"], x["A"], x["B"], x["C"])
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 5, 8, 32, 64])
def test_scan_gradients_equal_reference_gradients(chunk_size, chunk_scan):
    x = scan_inputs(grad=True)
    g = torch.Generator().manual_seed(1)
    gy = torch.randn(2, 37, 5, generator=g, dtype=torch.float64)
    gh = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)  # the final state is used too

    def grads(fn):
        y, h = fn()
        return torch.autograd.grad((y * gy).sum() + (h * gh).sum(), list(x.values()))

    got, want = grads(lambda: run_scan(x, chunk_size)), grads(lambda: run_ref(x))
    for name, g_scan, g_ref in zip(x, got, want):
        torch.testing.assert_close(g_scan, g_ref, atol=1e-10, rtol=1e-8, msg=f"d/d{name}")


def test_scan_gradients_pass_gradcheck():
    x = scan_inputs(batch=1, T=6, d=2, N=3, grad=True)
    fn = lambda *args: selective_scan(*args[:6], h0=args[6], chunk_size=4)  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(x.values()))


@pytest.mark.parametrize("lanes", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_equals_loop(reverse, lanes):
    a, b = torch.rand(16, 3, 2, dtype=torch.float64), torch.randn(16, 3, 2, dtype=torch.float64)
    expected, h = torch.empty_like(b), torch.zeros(3, 2, dtype=torch.float64)
    for t in (range(15, -1, -1) if reverse else range(16)):
        h = a[t] * h + b[t]
        expected[t] = h
    a_before = a.clone()
    torch.testing.assert_close(linear_scan_(a, b.clone(), reverse=reverse, lanes=lanes), expected)
    assert torch.equal(a, a_before)  # decays are read, never written


def test_lanes_only_for_small_states():
    """Lanes pay only while a kernel call costs more than streaming one state."""
    assert lane_count(32, 256 * 16) == 1  # d_inner 256: the tree
    assert lane_count(128, 64 * 16) == 16  # d_inner 64: 16 lanes of 8 steps
    assert lane_count(4, 40) == 1 and lane_count(8, 40) == 4  # never two lanes


def test_dt_zero_steps_pass_the_state_through(chunk_scan):
    x = scan_inputs(T=12)
    keep = torch.tensor([0, 0, 1, 1, 1, 0, 1, 0, 0, 0, 1, 0], dtype=torch.bool)
    x["dt"][:, ~keep] = 0.0  # decay exp(0) = 1 and no input
    y, h = run_scan(x, chunk_size=4)
    alone = {k: (v[:, keep] if k in ("u", "dt", "B", "C") else v) for k, v in x.items()}
    y_alone, h_alone = run_ref(alone)
    torch.testing.assert_close(h, h_alone)
    torch.testing.assert_close(y[:, keep], y_alone)
    # Before any real step the output reads the untouched initial state.
    torch.testing.assert_close(y[:, 1], (x["h0"] @ x["C"][:, 1].unsqueeze(-1)).squeeze(-1)
                               + x["u"][:, 1] * x["D"])
    torch.testing.assert_close(h, run_scan(alone, chunk_size=4)[1])


def test_scan_working_memory_is_bounded_by_the_chunk(chunk_scan):
    """No tensor the scan makes (forward or backward) is near the (B, T, d, N) size of all
    states: the states live one (B, chunk, d, N) block at a time plus one per chunk start."""
    batch, T, d, N, chunk = 2, 512, 16, 16, 16
    x = scan_inputs(batch=batch, T=T, d=d, N=N, dtype=torch.float32, grad=True)

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    Largest.numel = max(Largest.numel, t.numel())
            return out

    with Largest():
        y, h = run_scan(x, chunk)
        (y.sum() + h.sum()).backward()
    allowed = max(batch * T * max(d, N), (T // chunk + chunk) * batch * d * N)
    assert Largest.numel <= allowed < batch * T * d * N // 8


def test_auto_chunk_size_fills_a_cache_sized_buffer():
    for batch, d, N in [(1, 256, 16), (4, 256, 16), (2, 64, 16), (64, 4096, 16), (1, 1, 1)]:
        chunk = auto_chunk_size(batch, d, N)
        assert chunk & (chunk - 1) == 0 and 4 <= chunk <= 1024
        assert chunk * batch * d * N <= 2 ** 17 * torch.get_num_threads() or chunk == 4


def test_scan_rejects_mismatched_shapes():
    x = scan_inputs()
    with pytest.raises(ShapeError, match="shapes disagree"):
        selective_scan(x["u"], x["dt"], x["A"].t(), x["B"], x["C"])


def test_selective_step_equals_one_scan_step():
    x = scan_inputs(T=1)
    y, h = selective_step(x["h0"], x["u"][:, 0], x["dt"][:, 0], x["A"], x["B"][:, 0],
                          x["C"][:, 0], x["D"])
    y_ref, h_ref = run_ref(x)
    torch.testing.assert_close(y, y_ref[:, 0])
    torch.testing.assert_close(h, h_ref)


def make(seed=0, **kwargs):
    torch.manual_seed(seed)
    return Mamba(D, **kwargs).eval()


def test_mixer_chunked_equals_full_at_length_300(run_chunks):
    mixer = make(chunk_size=64)
    x = torch.randn(2, 300, D)
    full, _ = mixer(x)
    chunked, _ = run_chunks(mixer, x, (100, 1, 137, 1, 61))
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-4)


def test_decode_steps_equal_prefill():
    mixer = make()
    x = torch.randn(3, 12, D)
    y_prefill, prefilled = mixer(x, mixer.init_state(3))
    y_head, state = mixer(x[:, :5], mixer.init_state(3))
    steps = []
    for t in range(5, 12):
        y, state = mixer(x[:, t:t + 1], state)  # the single-step path
        steps.append(y)
    torch.testing.assert_close(torch.cat([y_head] + steps, 1), y_prefill, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(state.conv, prefilled.conv)
    torch.testing.assert_close(state.ssm, prefilled.ssm, atol=1e-5, rtol=1e-4)


def test_padding_anywhere_equals_the_sequence_alone_and_skips_the_state():
    mixer = make()
    x = torch.randn(3, 9, D)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[0, 6:] = False  # right padding
    mask[1, [0, 1, 4, 5, 7]] = False  # left padding and holes
    mask[2, :] = False  # nothing real: the state must come out untouched
    y, state = mixer(x, mixer.init_state(3), padding_mask=mask)
    nxt = torch.randn(3, 1, D)
    y2, _ = mixer(nxt, state)
    for i in range(2):
        real = x[i:i + 1, mask[i]]
        alone, alone_state = mixer(real, mixer.init_state(1))
        torch.testing.assert_close(y[i, mask[i]], alone[0], atol=1e-5, rtol=1e-4)
        assert (y[i, ~mask[i]] == 0).all()
        torch.testing.assert_close(state.conv[i], alone_state.conv[0])
        torch.testing.assert_close(state.ssm[i], alone_state.ssm[0], atol=1e-5, rtol=1e-4)
        after, _ = mixer(nxt[i:i + 1], alone_state)
        torch.testing.assert_close(y2[i], after[0], atol=1e-5, rtol=1e-4)
    assert (state.conv[2] == 0).all() and (state.ssm[2] == 0).all()


def test_state_reorder_selects_rows():
    mixer = make()
    _, state = mixer(torch.randn(3, 4, D), mixer.init_state(3))
    conv, ssm = state.conv.clone(), state.ssm.clone()
    picked = state.reorder(torch.tensor([2, 0]))
    assert torch.equal(picked.conv, conv[[2, 0]]) and torch.equal(picked.ssm, ssm[[2, 0]])
    assert isinstance(picked, MambaState) and picked.conv.shape == (2, 2 * D, 3)
    assert torch.equal(state.conv, conv) and torch.equal(state.ssm, ssm)  # left unchanged


def test_paper_initialisation_survives_the_builder():
    cfg = ModelConfig(mixer="mamba", position="none", ffn="none", norm="rmsnorm", d_model=D,
                      n_layers=2, vocab_size=11,
                      mixer_options={"mamba": {"dt_min": 0.01, "dt_max": 0.05}})
    mixer = build_backbone(cfg).blocks[1].mixer
    assert isinstance(mixer, Mamba) and mixer.dt_rank == math.ceil(D / 16)
    A = -torch.exp(mixer.A_log)
    torch.testing.assert_close(A, -torch.arange(1.0, 17.0).expand(2 * D, 16))
    dt = F.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 0.01 * (1 - 1e-5) and dt.max() <= 0.05 * (1 + 1e-5)
    assert mixer.dt_proj.weight.abs().max() <= mixer.dt_rank ** -0.5
    assert torch.equal(mixer.D, torch.ones(2 * D))


@pytest.mark.parametrize("dt_min, dt_max, low", [
    (1e-3, 1e-1, 1e-3),  # the paper's range: the 1e-4 floor never binds
    (1e-6, 1e-5, 1e-6),  # asked for below the floor: honoured (long-memory channels)
])
def test_initial_step_sizes_stay_in_the_asked_range(dt_min, dt_max, low):
    torch.manual_seed(0)
    dt = F.softplus(TimeStep(4, 512, dt_min=dt_min, dt_max=dt_max).bias.double())
    assert dt.min() >= low * (1 - 1e-4) and dt.max() <= dt_max * (1 + 1e-4)
    assert dt.min() < 2 * low  # the range is filled down to its low end, not clamped above it


@pytest.mark.parametrize("bad, match", [
    (dict(d_state=0), "d_state"), (dict(d_conv=0), "d_conv"), (dict(chunk_size=0), "chunk_size"),
    (dict(dt_rank=0), "dt_rank"), (dict(dt_min=0.2, dt_max=0.1), "dt_min"),
])
def test_bad_options_name_the_value(bad, match):
    with pytest.raises(ValueError, match=match):
        MambaOptions(**bad)
    with pytest.raises(ValueError, match=match):
        Mamba(D, **bad)


def test_bfloat16_autocast_keeps_the_scan_in_float32():
    mixer = make()
    x = torch.randn(2, 10, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = mixer(x, mixer.init_state(2))
        y2, state = mixer(x[:, :1], state)
    assert torch.isfinite(y.float()).all() and torch.isfinite(y2.float()).all()
    assert state.ssm.dtype == torch.float32
    torch.testing.assert_close(y.float(), mixer(x)[0], atol=0.05, rtol=0.05)
