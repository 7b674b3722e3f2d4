"""S4D equals a naive step-by-step recurrence; its state threads chunks exactly."""

import math

import pytest
import torch
import torch.nn.functional as F

from seqlab.nn.s4d import S4D, S4DOptions, s4d_init

D, N = 16, 16


def make(causal=True, init="legs", seed=0):
    torch.manual_seed(seed)
    return S4D(D, d_state=N, init=init, causal=causal).eval()


def ssm_params(mixer, k):
    """Direction k's ZOH quantities in float64, written out independently of the layer."""
    dt = mixer.log_dt[k].double().exp()  # (D,)
    a = torch.complex(-mixer.log_a_real[k].double().exp(), mixer.a_imag[k].double())  # (D, M)
    da = torch.exp(dt[:, None] * a)
    db = (da - 1) / a  # B = 1, folded into C
    c = torch.complex(mixer.c[k, ..., 0].double(), mixer.c[k, ..., 1].double())
    return da, db, c


def scan(mixer, k, x, reverse=False):
    """Reference: h_t = dA h_{t-1} + dB x_t, y_t = 2 Re(C h_t), a Python loop over time.

    The reverse direction reads x_{t+1}, x_{t+2}, ... (strictly after t, as S4's
    bidirectional kernel), so x_t itself only enters through the skip term.
    """
    da, db, c = ssm_params(mixer, k)
    B, T, _ = x.shape
    x = x.double()
    h = torch.zeros(B, D, da.shape[-1], dtype=torch.complex128)
    out = [None] * T
    times = range(T - 1, -1, -1) if reverse else range(T)
    for t in times:
        if reverse:
            out[t] = 2 * (c * h).sum(-1).real
            h = da * h + db * x[:, t, :, None]
        else:
            h = da * h + db * x[:, t, :, None]
            out[t] = 2 * (c * h).sum(-1).real
    return torch.stack(out, 1)  # (B, T, D)


def finish(mixer, x, ssm):
    """Skip term, GELU and output linear on the SSM output (B, T, D)."""
    y = F.gelu(ssm + mixer.skip.double() * x.double())
    return F.linear(y, mixer.out_proj.weight.double(), mixer.out_proj.bias.double())


@pytest.mark.parametrize("init", ["legs", "lin", "inv"])
@pytest.mark.parametrize("length", [1, 37, 40, 300])  # the kernel's power tables: s j + i
def test_fft_convolution_equals_naive_recurrence(init, length):
    mixer = make(init=init)
    x = torch.randn(2, length, D)
    y, _ = mixer(x)
    ref = finish(mixer, x, scan(mixer, 0, x))
    torch.testing.assert_close(y.double(), ref, atol=1e-5, rtol=1e-4)


def test_bidirectional_equals_naive_two_direction_reference():
    mixer = make(causal=False)
    x = torch.randn(2, 33, D)
    y, _ = mixer(x)
    ref = finish(mixer, x, scan(mixer, 0, x) + scan(mixer, 1, x, reverse=True))
    torch.testing.assert_close(y.double(), ref, atol=1e-5, rtol=1e-4)
    # The reverse direction is really used: the first output depends on the last input.
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert not torch.allclose(mixer(x2)[0][:, 0], y[:, 0])


@pytest.mark.parametrize("init", ["legs", "lin", "inv"])
def test_discretisation_is_stable_for_any_parameters(init):
    mixer = make(init=init)
    assert (mixer.discretize()[0].exp().abs() < 1).all()
    re, im = s4d_init(init, N)
    assert (re == -0.5).all() and (im >= 0).all() and im.unique().numel() == N // 2
    with torch.no_grad():
        for log_a_real in (-50.0, 0.0, 10.0):  # what an optimiser might drive it to
            mixer.log_a_real.fill_(log_a_real)
            mixer.log_dt.uniform_(math.log(1e-4), math.log(10.0))
            dt_a, db, _ = mixer.discretize()
            # Re(dt A) < 0 means |dA| < 1 exactly; float32 may round exp(-1e-8) up to 1.
            assert (dt_a.real < 0).all() and (dt_a.exp().abs() <= 1).all()
            assert (mixer.double().discretize()[0].exp().abs() < 1).all()
            mixer.float()
            assert torch.isfinite(torch.view_as_real(db)).all()


def test_legs_init_is_the_spectrum_of_hippo_legs_normal_part():
    re, im = s4d_init("legs", N)
    q = torch.arange(N, dtype=torch.float64)
    r = torch.sqrt(2 * q + 1)
    hippo = -(r[:, None] * r[None]).tril(-1) - torch.diag(q + 1)
    normal = hippo + torch.sqrt(q + 0.5)[:, None] * torch.sqrt(q + 0.5)[None]
    eig = torch.linalg.eigvals(normal)
    eig = eig[eig.imag > 0]
    torch.testing.assert_close(eig.real, torch.full_like(eig.real, -0.5))
    torch.testing.assert_close(eig.imag.sort().values.float(), im.sort().values)


@pytest.mark.parametrize("splits", [[1, 17, 5, 1, 40], [32, 32], [63, 1],
                                    [130, 37, 133]])  # chunks of 37 and 133: blocked powers
def test_chunked_equals_full_with_state(splits, run_chunks):
    mixer = make()
    with torch.no_grad():  # short dt makes the state carry far: the hard case for precision
        mixer.log_dt.fill_(math.log(1e-3))
    x = torch.randn(2, sum(splits), D)
    full, full_state = mixer(x, mixer.init_state(2))
    torch.testing.assert_close(full, mixer(x)[0], atol=2e-5, rtol=1e-4)
    chunked, state = run_chunks(mixer, x, splits)
    torch.testing.assert_close(chunked, full, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(state.h, full_state.h, atol=2e-5, rtol=1e-4)


def test_padded_positions_leave_the_state_unchanged():
    mixer = make()
    x = torch.randn(2, 12, D)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, [2, 3, 9]] = False  # holes inside a chunk
    mask[1, 6:] = False
    prefix, state = mixer(x[:, :4], mixer.init_state(2), padding_mask=mask[:, :4])
    y, state = mixer(x[:, 4:], state, padding_mask=mask[:, 4:])
    no_token = torch.zeros(2, 1, dtype=torch.bool)
    y_pad_step, state_step = mixer(x[:, :1], state, padding_mask=no_token)
    torch.testing.assert_close(state_step.h, state.h)  # a padded decode step is a no-op
    assert (y_pad_step == 0).all()
    ys = torch.cat([prefix, y], 1)
    whole, _ = mixer(x, padding_mask=mask)  # the parallel pass skips holes the same way
    torch.testing.assert_close(ys, whole, atol=2e-5, rtol=1e-4)
    for i in range(2):
        real = x[i:i + 1, mask[i]]
        alone, alone_state = mixer(real, mixer.init_state(1))
        torch.testing.assert_close(ys[i, mask[i]], alone[0], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(state.h[i], alone_state.h[0], atol=2e-5, rtol=1e-4)


def test_gradients_finite_at_length_512():
    mixer = make().train()
    x = torch.randn(2, 512, D, requires_grad=True)
    y, _ = mixer(x)
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in mixer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_state_reorder_selects_rows():
    mixer = make()
    _, state = mixer(torch.randn(3, 5, D), mixer.init_state(3))
    h = state.h.clone()
    picked = state.reorder(torch.tensor([2, 0]))
    torch.testing.assert_close(picked.h, h[[2, 0]])
    assert torch.equal(state.h, h)  # left unchanged


@pytest.mark.parametrize("bad, match", [
    (dict(d_state=7), "d_state"), (dict(dt_min=0.2, dt_max=0.1), "dt_min"),
    (dict(init="hippo"), "init"),
])
def test_bad_options_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        S4DOptions(**bad)
    with pytest.raises(ValueError, match=match):
        S4D(D, **bad)
