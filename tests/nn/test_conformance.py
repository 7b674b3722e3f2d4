"""The conformance suite: every registered mixer passes the same checks."""

import io

import pytest
import torch

from seqlab.errors import StateError
from seqlab.nn import MIXERS
from seqlab.nn.mixers import MixerArgs
from seqlab.nn.positions import RotaryPosition

D, H = 32, 4


def build(name, causal=True, dropout=0.0):
    entry = MIXERS.get(name)
    position = RotaryPosition(D // H) if entry.uses_positions else None
    args = MixerArgs(d_model=D, n_heads=H, n_kv_heads=None, causal=causal, dropout=dropout,
                     context_length=64, position=position)
    return entry.build(args, entry.options()).eval()


ALL = MIXERS.names()
CAUSAL = [n for n in ALL if MIXERS.get(n).supports(True)]
BIDIRECTIONAL = [n for n in ALL if MIXERS.get(n).supports(False)]
MODES = [(n, True) for n in CAUSAL] + [(n, False) for n in BIDIRECTIONAL]


@pytest.mark.parametrize("name, causal", MODES)
def test_shape_and_finite_gradients(name, causal):
    mixer = build(name, causal).train()
    x = torch.randn(2, 11, D, requires_grad=True)
    y, state = mixer(x)
    assert y.shape == x.shape and state is None
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in mixer.parameters())


@pytest.mark.parametrize("name", CAUSAL)
@pytest.mark.parametrize("splits", [[1] * 10, [3, 7], [4, 1, 5], [10]])
def test_chunked_equals_full(name, splits, run_chunks):
    mixer = build(name)
    x = torch.randn(2, sum(splits), D)
    full, _ = mixer(x)
    chunked, _ = run_chunks(mixer, x, splits)
    torch.testing.assert_close(chunked, full, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name, causal", MODES)
def test_right_padded_batch_equals_each_sequence_alone(name, causal):
    mixer = build(name, causal)
    lengths = [7, 4, 1]
    x = torch.randn(3, 7, D)
    mask = torch.arange(7)[None] < torch.tensor(lengths)[:, None]
    y, _ = mixer(x, padding_mask=mask)
    for i, n in enumerate(lengths):
        alone, _ = mixer(x[i:i + 1, :n])
        torch.testing.assert_close(y[i, :n], alone[0], atol=2e-5, rtol=1e-4)
        assert (y[i, n:] == 0).all()  # padded slots are zeros, never garbage


@pytest.mark.parametrize("name", CAUSAL)
def test_left_padded_generation_batch_equals_each_sequence_alone(name):
    mixer = build(name)
    lengths = [6, 2]
    x = torch.randn(2, 6, D)
    mask = torch.arange(6)[None] >= (6 - torch.tensor(lengths))[:, None]
    state = mixer.init_state(2)
    y, state = mixer(x, state, padding_mask=mask)
    nxt = torch.randn(2, 1, D)
    y2, _ = mixer(nxt, state)
    for i, n in enumerate(lengths):
        alone, _ = mixer(torch.cat([x[i:i + 1, 6 - n:], nxt[i:i + 1]], 1))
        torch.testing.assert_close(y[i, 6 - n:], alone[0, :-1], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(y2[i, 0], alone[0, -1], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name, causal", MODES)
def test_save_load_round_trip(name, causal):
    mixer = build(name, causal)
    buf = io.BytesIO()
    torch.save(mixer.state_dict(), buf)
    other = build(name, causal)
    buf.seek(0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(2, 5, D)
    torch.testing.assert_close(other(x)[0], mixer(x)[0])


@pytest.mark.parametrize("name", BIDIRECTIONAL)
def test_bidirectional_refuses_state(name):
    mixer = build(name, causal=False)
    with pytest.raises(StateError, match="cannot carry a streaming state"):
        mixer(torch.randn(1, 3, D), mixer.init_state(1))


@pytest.mark.parametrize("name, causal", MODES)
def test_nan_in_padding_cannot_reach_real_positions(name, causal):
    mixer = build(name, causal)
    x = torch.randn(2, 9, D)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 6:] = False
    mask[1, :3] = False
    clean, _ = mixer(x, padding_mask=mask)
    dirty = x.clone()
    dirty[~mask] = float("nan")
    y, _ = mixer(dirty, padding_mask=mask)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, clean)
