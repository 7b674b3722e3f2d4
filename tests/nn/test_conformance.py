"""The conformance suite: every registered mixer passes the same checks.

Mixers are built with small windows, chunks and segments (``SMALL``) so that the test
lengths (up to 17 tokens) cross several of their internal boundaries, and the chunk
splits below straddle them.
"""

import dataclasses
import io

import pytest
import torch
from torch import Tensor

from seqlab.errors import StateError
from seqlab.nn import MIXERS
from seqlab.nn.mixers import MixerArgs
from seqlab.nn.positions import RotaryPosition

D, H = 32, 4
TOL = dict(atol=2e-5, rtol=1e-4)

# Options per mixer: boundaries every 2 to 8 tokens (window 4, linear-attention chunks of 4,
# segments of 4 pooled 2 to a slot, mamba scan chunks of 8: four lanes of 2 steps at batch 2,
# the tree scan at batch 3 and more). S4D has no such option: it sizes its power-table
# blocks from the length (2^ceil(log2(T) / 2): 4 at T = 9, 8 at T = 17).
SMALL = {
    "window_attention": dict(window=4),
    "sparse_attention": dict(window=4, n_global=2),
    "linear_attention": dict(chunk_size=4),
    "segment_memory": dict(segment=4, memory_segments=1, compressed_slots=2, compression_rate=2),
    "mamba": dict(chunk_size=8),
}


def build(name, causal=True, dropout=0.0):
    entry = MIXERS.get(name)
    position = RotaryPosition(D // H) if entry.uses_positions else None
    args = MixerArgs(d_model=D, n_heads=H, n_kv_heads=None, causal=causal, dropout=dropout,
                     context_length=64, position=position)
    return entry.build(args, entry.options(**SMALL.get(name, {}))).eval()


ALL = MIXERS.names()
CAUSAL = [n for n in ALL if MIXERS.get(n).supports(True)]
BIDIRECTIONAL = [n for n in ALL if MIXERS.get(n).supports(False)]
MODES = [(n, True) for n in CAUSAL] + [(n, False) for n in BIDIRECTIONAL]


def left_padding(lengths, T):
    """(B, T) mask of left-padded rows with the given numbers of real tokens."""
    return torch.arange(T)[None] >= (T - torch.tensor(lengths))[:, None]


def fields(state):
    """name -> value of every field of a state (a dataclass, or a tuple of tensors)."""
    if isinstance(state, tuple):
        return dict(enumerate(state))
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}


def snapshot(state):
    return {k: (v, v.clone() if isinstance(v, Tensor) else v) for k, v in fields(state).items()}


def assert_unchanged(state, before):
    """The same field objects as before, and every tensor bit for bit as it was."""
    now = fields(state)
    assert now.keys() == before.keys()
    for name, (obj, copy) in before.items():
        assert now[name] is obj, f"field {name!r} was replaced"
        if isinstance(obj, Tensor):
            assert torch.equal(obj, copy), f"tensor {name!r} of the state was changed in place"
        else:
            assert obj == copy, f"field {name!r} changed"


def test_small_options_name_registered_mixers():
    assert set(SMALL) <= set(ALL)


@pytest.mark.parametrize("name, causal", MODES)
def test_shape_and_finite_gradients(name, causal):
    mixer = build(name, causal).train()
    x = torch.randn(2, 11, D, requires_grad=True)
    y, state = mixer(x)
    assert y.shape == x.shape and state is None
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in mixer.parameters())


SPLITS = [[1] * 9, [3, 6], [4, 1, 4], [9], [17], [5, 12], [3, 4, 4, 6], [1, 8, 1, 7]]


@pytest.mark.parametrize("name", CAUSAL)
@pytest.mark.parametrize("splits", SPLITS, ids=lambda s: "-".join(map(str, s)))
def test_chunked_equals_full(name, splits, run_chunks):
    mixer = build(name)
    x = torch.randn(2, sum(splits), D)
    full, _ = mixer(x)
    chunked, _ = run_chunks(mixer, x, splits)
    torch.testing.assert_close(chunked, full, **TOL)


@pytest.mark.parametrize("name, causal", MODES)
def test_right_padded_batch_equals_each_sequence_alone(name, causal):
    mixer = build(name, causal)
    lengths = [17, 9, 5, 1]
    x = torch.randn(4, 17, D)
    mask = torch.arange(17)[None] < torch.tensor(lengths)[:, None]
    y, _ = mixer(x, padding_mask=mask)
    for i, n in enumerate(lengths):
        alone, _ = mixer(x[i:i + 1, :n])
        torch.testing.assert_close(y[i, :n], alone[0], **TOL)
        assert (y[i, n:] == 0).all()  # padded slots are zeros, never garbage


@pytest.mark.parametrize("name", CAUSAL)
def test_left_padded_generation_batch_equals_each_sequence_alone(name):
    mixer = build(name)
    lengths = [13, 5, 1]
    x = torch.randn(3, 13, D)
    mask = left_padding(lengths, 13)
    state = mixer.init_state(3)
    y, state = mixer(x, state, padding_mask=mask)
    steps = torch.randn(3, 4, D)
    outs = []
    for t in range(4):
        out, state = mixer(steps[:, t:t + 1], state)
        outs.append(out)
    decoded = torch.cat(outs, 1)
    for i, n in enumerate(lengths):
        alone, _ = mixer(torch.cat([x[i:i + 1, 13 - n:], steps[i:i + 1]], 1))
        torch.testing.assert_close(y[i, 13 - n:], alone[0, :n], **TOL)
        torch.testing.assert_close(decoded[i], alone[0, n:], **TOL)


# (prefix chunks, continuation A chunks, continuation B chunks): several tokens at once,
# decode-sized single tokens, and continuations that cross windows and segments.
FORKS = [([5], [4], [1, 1, 1]), ([3, 2], [1], [1]), ([4], [1] * 5, [9]), ([6], [2, 3], [1, 4])]


@pytest.mark.parametrize("name", CAUSAL)
@pytest.mark.parametrize("prefix, a, b", FORKS, ids=lambda s: "-".join(map(str, s)))
def test_two_continuations_of_one_state_equal_fresh_runs(name, prefix, a, b, run_chunks):
    """Continuing a state never changes it: a beam fork or a shared prompt can be
    continued twice, and each continuation equals a fresh run over its whole sequence."""
    mixer = build(name)
    P, A = sum(prefix), sum(a)
    xp, xa, xb = torch.randn(2, P, D), torch.randn(2, A, D), torch.randn(2, sum(b), D)
    xz = torch.randn(2, 1, D)
    _, state = run_chunks(mixer, xp, prefix)
    ya, state_a = run_chunks(mixer, xa, a, state=state)
    yb, _ = run_chunks(mixer, xb, b, state=state)
    yz, _ = mixer(xz, state_a)  # A's state continued after B ran from their common source
    ya_again, _ = run_chunks(mixer, xa, a, state=state)
    fresh_a, _ = mixer(torch.cat([xp, xa, xz], 1))
    fresh_b, _ = mixer(torch.cat([xp, xb], 1))
    torch.testing.assert_close(ya, fresh_a[:, P:P + A], **TOL)
    torch.testing.assert_close(yb, fresh_b[:, P:], **TOL)
    torch.testing.assert_close(yz, fresh_a[:, P + A:], **TOL)
    torch.testing.assert_close(ya_again, ya, atol=0, rtol=0)


@pytest.mark.parametrize("name", CAUSAL)
def test_forks_of_a_padded_prompt_decoded_in_turn(name):
    """Two forks of one left-padded prompt state, decoded a token at a time in
    alternation (as beam search does), each equal to its own fresh run."""
    mixer = build(name)
    lengths = [7, 3]
    prompt = torch.randn(2, 7, D)
    _, state = mixer(prompt, mixer.init_state(2), padding_mask=left_padding(lengths, 7))
    xa, xb = torch.randn(2, 6, D), torch.randn(2, 6, D)
    sa = sb = state
    ya, yb = [], []
    for t in range(6):
        out, sa = mixer(xa[:, t:t + 1], sa)
        ya.append(out)
        out, sb = mixer(xb[:, t:t + 1], sb)
        yb.append(out)
    for ys, xs in ((torch.cat(ya, 1), xa), (torch.cat(yb, 1), xb)):
        for i, n in enumerate(lengths):
            fresh, _ = mixer(torch.cat([prompt[i:i + 1, 7 - n:], xs[i:i + 1]], 1))
            torch.testing.assert_close(ys[i], fresh[0, n:], **TOL)


@pytest.mark.parametrize("name", CAUSAL)
def test_forward_leaves_the_state_passed_in_unchanged(name):
    """The state object given to forward, and every tensor in it, are bit-identical
    afterwards, for every path: decoding, chunks, padded chunks, a fresh state."""
    mixer = build(name)
    x = torch.randn(2, 17, D)
    mask = left_padding([9, 4], 9)
    calls = [  # (chunk, padding mask) continued from the state after a padded prompt
        (x[:, 9:10], None), (x[:, 9:12], None), (x[:, 9:17], None),
        (x[:, 9:12], torch.tensor([[True, False, True], [False, True, True]])),
        (x[:, 9:10], torch.tensor([[True], [False]])),
    ]
    state = mixer.init_state(2)
    before = snapshot(state)
    _, prompt_state = mixer(x[:, :9], state, padding_mask=mask)
    assert_unchanged(state, before)
    prompt_before = snapshot(prompt_state)
    _, stepped = mixer(x[:, 9:10], prompt_state)
    for base in (prompt_state, stepped):
        for chunk, chunk_mask in calls:
            before = snapshot(base)
            mixer(chunk, base, padding_mask=chunk_mask)
            assert_unchanged(base, before)
            assert_unchanged(prompt_state, prompt_before)  # nor the state it came from


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
    x = torch.randn(2, 17, D)
    mask = torch.ones(2, 17, dtype=torch.bool)
    mask[0, 11:] = False
    mask[1, :5] = False
    mask[1, 8] = False  # a hole
    clean, _ = mixer(x, padding_mask=mask)
    dirty = x.clone()
    dirty[~mask] = float("nan")
    y, _ = mixer(dirty, padding_mask=mask)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, clean)


@pytest.mark.parametrize("name", CAUSAL)
@pytest.mark.parametrize("splits", [[17], [3, 6, 8], [4, 1, 4, 8], [5, 5, 7], [1] * 17],
                         ids=lambda s: "-".join(map(str, s)))
def test_nan_in_padding_of_a_chunked_prompt(name, splits, run_chunks):
    """A left-padded prompt with NaN in its padded slots, fed through the state in
    chunks (some all padding for the short rows): finite outputs equal to the clean
    run, and a state that continues exactly as each row alone."""
    mixer = build(name)
    lengths = [17, 9, 4]
    x = torch.randn(3, 17, D)
    mask = left_padding(lengths, 17)
    dirty = x.masked_fill(~mask[..., None], float("nan"))
    y, state = run_chunks(mixer, dirty, splits, padding_mask=mask)
    clean, _ = run_chunks(mixer, x, splits, padding_mask=mask)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, clean)
    nxt = torch.randn(3, 1, D)
    y2, _ = mixer(nxt, state)
    assert torch.isfinite(y2).all()
    for i, n in enumerate(lengths):
        alone, _ = mixer(torch.cat([x[i:i + 1, 17 - n:], nxt[i:i + 1]], 1))
        torch.testing.assert_close(y[i, 17 - n:], alone[0, :n], **TOL)
        assert (y[i, :17 - n] == 0).all()
        torch.testing.assert_close(y2[i], alone[0, n:], **TOL)
