"""Recurrent mixers equal a step-by-step loop over torch.nn cells."""

import pytest
import torch
from torch import nn

from seqlab.errors import StateError
from seqlab.nn.recurrent import RecurrentMixer

D = 16
CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def cell_loop(mixer: RecurrentMixer, x):
    """Reference: one torch.nn cell per layer, copied weights, a Python loop over time."""
    cells = []
    for layer in range(mixer.num_layers):
        cell = CELLS[mixer.cell](D, D)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).data.copy_(getattr(mixer.rnn, f"{name}_l{layer}"))
        cells.append(cell)
    B, T, _ = x.shape
    h = [torch.zeros(B, D) for _ in cells]
    c = [torch.zeros(B, D) for _ in cells]
    out = []
    for t in range(T):
        inp = x[:, t]
        for i, cell in enumerate(cells):
            if mixer.cell == "lstm":
                h[i], c[i] = cell(inp, (h[i], c[i]))
            else:
                h[i] = cell(inp, h[i])
            inp = h[i]
        out.append(inp)
    return torch.stack(out, 1)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_equals_step_by_step_cell_loop(cell, num_layers, impl):
    mixer = RecurrentMixer(D, cell, num_layers=num_layers, impl=impl).eval()
    x = torch.randn(3, 7, D)
    y, _ = mixer(x)
    torch.testing.assert_close(y, cell_loop(mixer, x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_padding_any_pattern_equals_each_sequence_alone(cell):
    mixer = RecurrentMixer(D, cell, num_layers=2).eval()
    seqs = [torch.randn(1, n, D) for n in (5, 2, 4)]
    masks = [[1, 1, 1, 1, 1, 0], [0, 0, 1, 0, 1, 0], [0, 0, 1, 1, 1, 1]]
    mask = torch.tensor(masks, dtype=torch.bool)
    x = torch.full((3, 6, D), float("nan"))
    for i, s in enumerate(seqs):
        x[i, mask[i]] = s[0]
    state = mixer.init_state(3)
    y, state = mixer(x, state, padding_mask=mask)
    step = torch.randn(3, 1, D)
    y_next, _ = mixer(step, state)
    for i, s in enumerate(seqs):
        alone, _ = mixer(torch.cat([s, step[i:i + 1]], 1))
        torch.testing.assert_close(y[i, mask[i]], alone[0, :-1], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(y_next[i, 0], alone[0, -1], atol=1e-5, rtol=1e-4)
    assert (y[~mask] == 0).all()


def test_bidirectional_padding_equals_each_sequence_alone():
    mixer = RecurrentMixer(D, "lstm", causal=False).eval()
    a, b = torch.randn(1, 5, D), torch.randn(1, 3, D)
    x = torch.cat([a, torch.cat([b, torch.zeros(1, 2, D)], 1)])
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    y, _ = mixer(x, padding_mask=mask)
    torch.testing.assert_close(y[1, :3], mixer(b)[0][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y[0], mixer(a)[0][0], atol=1e-5, rtol=1e-4)


def test_chunk_of_pure_padding_keeps_the_state():
    mixer = RecurrentMixer(D, "gru").eval()
    x = torch.randn(2, 3, D)
    state = mixer.init_state(2)
    _, state = mixer(x, state)
    mask = torch.tensor([[False, False], [True, True]])
    _, new = mixer(torch.randn(2, 2, D), tuple(s.clone() for s in state), padding_mask=mask)
    torch.testing.assert_close(new[0][:, 0], state[0][:, 0])
    assert not torch.allclose(new[0][:, 1], state[0][:, 1])


def test_loop_impl_warns_once(caplog_seqlab):
    from seqlab.nn import mixer as mixer_module

    mixer_module._warned.discard("recurrent-loop")
    mixer = RecurrentMixer(D, "lstm", impl="loop")
    mixer(torch.randn(1, 2, D))
    mixer(torch.randn(1, 2, D))
    warnings = [r for r in caplog_seqlab.records if "fused kernel" in r.getMessage()]
    assert len(warnings) == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown recurrent cell"):
        RecurrentMixer(D, "lstn")
    with pytest.raises(ValueError, match="even d_model"):
        RecurrentMixer(15, "gru", causal=False)
    with pytest.raises(StateError):
        m = RecurrentMixer(D, "gru", causal=False)
        m(torch.randn(1, 2, D), m.init_state(1))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("causal", [True, False])
def test_right_padded_fast_path_equals_packing_in_values_and_gradients(cell, causal):
    """Training batches from the collator are right-padded: they skip packing (4-6x
    slower on CPU) and must give exactly what the packed path gives."""
    from seqlab.nn.recurrent import is_right_padded

    mixer = RecurrentMixer(16, cell, num_layers=2, causal=causal)
    lengths = torch.tensor([9, 4, 1, 7])
    mask = torch.arange(9)[None] < lengths[:, None]
    assert is_right_padded(mask) and not is_right_padded(mask.flip(1))
    x = torch.randn(4, 9, 16)
    x[~mask] = float("nan")  # padding must not leak either way
    fast_in, packed_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast, _ = mixer(fast_in, padding_mask=mask)
    packed, _ = mixer._packed(packed_in, None, mask)
    torch.testing.assert_close(fast, packed, atol=1e-5, rtol=1e-4)
    weights = torch.randn_like(fast)
    grads = []
    for out, inp in ((fast, fast_in), (packed, packed_in)):
        mixer.zero_grad()
        (out * weights).sum().backward()
        grads.append([inp.grad[mask]] + [p.grad.clone() for p in mixer.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
