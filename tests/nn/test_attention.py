"""Attention against a naive softmax(QK^T/sqrt(d))V reference, masks, positions, GQA."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.errors import ShapeError, StateError
from seqlab.nn.attention import Attention
from seqlab.nn.positions import ALiBiPosition, RotaryPosition

D, H = 32, 4


def reference(attn: Attention, x, *, causal, padding_mask=None):
    """Plain-loop-free but kernel-free attention written from the textbook formula."""
    B, T, _ = x.shape
    Dh, Hkv = attn.d_head, attn.n_kv_heads
    if padding_mask is not None:
        x = x.masked_fill(~padding_mask[..., None], 0.0)
    q = attn.q_proj(x).view(B, T, H, Dh).transpose(1, 2)
    kv = attn.kv_proj(x).view(B, T, 2, Hkv, Dh)
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    pos = torch.arange(T).expand(B, T) if padding_mask is None else (padding_mask.long().cumsum(1) - 1).clamp(min=0)
    if attn.position is not None and isinstance(attn.position, RotaryPosition):
        q, k = attn.position.rotate(q, k, pos)
    k = k.repeat_interleave(H // Hkv, 1)
    v = v.repeat_interleave(H // Hkv, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)
    if isinstance(attn.position, ALiBiPosition):
        scores = scores + attn.position.bias(pos, pos)
    allowed = torch.ones(B, 1, T, T, dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones(T, T, dtype=torch.bool).tril()
    if padding_mask is not None:
        allowed = allowed & padding_mask[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    w = scores.softmax(-1).nan_to_num(0.0)  # rows with no key: zero weights
    y = (w @ v).transpose(1, 2).reshape(B, T, D)
    y = attn.out_proj(y)
    if padding_mask is not None:
        y = y * padding_mask[..., None]
    return y


def make(causal=True, position=None, n_kv_heads=None, kernel="sdpa"):
    pos = {"rope": RotaryPosition(D // H), "alibi": ALiBiPosition(H), None: None}[position]
    return Attention(D, H, n_kv_heads=n_kv_heads, causal=causal, position=pos, kernel=kernel).eval()


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("position", [None, "rope", "alibi"])
@pytest.mark.parametrize("n_kv_heads", [None, 2, 1])
@pytest.mark.parametrize("kernel", ["sdpa", "naive"])
def test_matches_naive_reference(causal, position, n_kv_heads, kernel):
    attn = make(causal, position, n_kv_heads, kernel)
    x = torch.randn(3, 9, D)
    y, state = attn(x)
    assert state is None
    torch.testing.assert_close(y, reference(attn, x, causal=causal), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("position", [None, "rope", "alibi"])
def test_padding_mask_matches_reference(causal, position):
    attn = make(causal, position)
    x = torch.randn(3, 8, D)
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[0, 5:] = False  # right padding
    mask[1, :3] = False  # left padding
    mask[2, [1, 4]] = False  # holes
    y, _ = attn(x, padding_mask=mask)
    torch.testing.assert_close(y, reference(attn, x, causal=causal, padding_mask=mask), atol=1e-5, rtol=1e-4)


def test_fully_masked_rows_give_zeros_and_finite_gradients():
    attn = make(causal=True)
    x = torch.randn(2, 6, D, requires_grad=True)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1] = False  # a whole sequence of padding
    mask[0, :2] = False
    y, _ = attn(x, padding_mask=mask)
    assert torch.isfinite(y).all()
    assert (y[1] == 0).all() and (y[0, :2] == 0).all()
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())


@settings(max_examples=25, deadline=None)
@given(shift=st.integers(0, 500), i=st.integers(0, 20), j=st.integers(0, 20))
def test_rotary_scores_depend_only_on_relative_offset(shift, i, j):
    rope = RotaryPosition(8)
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 1, 1, 8, generator=g)
    k = torch.randn(1, 1, 1, 8, generator=g)

    def score(pi, pj):
        qr, _ = rope.rotate(q, q, torch.tensor([[pi]]))
        _, kr = rope.rotate(k, k, torch.tensor([[pj]]))
        return float((qr * kr).sum())

    assert score(i, j) == pytest.approx(score(i + shift, j + shift), abs=1e-4)


def test_alibi_slopes_follow_the_paper():
    slopes = ALiBiPosition(8).slopes
    torch.testing.assert_close(slopes, torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    assert ALiBiPosition(6).slopes.shape == (6,)  # not a power of two


@pytest.mark.parametrize("position", [None, "rope", "alibi"])
def test_left_padded_batch_with_state_equals_each_sequence_alone(position):
    attn = make(True, position)
    a, b = torch.randn(1, 6, D), torch.randn(1, 3, D)
    batch = torch.cat([a, torch.cat([torch.zeros(1, 3, D), b], 1)])
    mask = torch.tensor([[True] * 6, [False] * 3 + [True] * 3])
    state = attn.init_state(2)
    y, state = attn(batch, state, padding_mask=mask)
    step = torch.randn(2, 1, D)
    y2, _ = attn(step, state)
    ya, _ = attn(torch.cat([a, step[:1]], 1))
    yb, _ = attn(torch.cat([b, step[1:]], 1))
    torch.testing.assert_close(y[0], ya[0, :6], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y[1, 3:], yb[0, :3], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y2[0, 0], ya[0, 6], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y2[1, 0], yb[0, 3], atol=1e-5, rtol=1e-4)


def test_bad_inputs_raise_clear_errors():
    attn = make()
    with pytest.raises(ShapeError, match=r"\(batch, time, 32\)"):
        attn(torch.randn(2, 5, 16))
    with pytest.raises(ShapeError, match="padding_mask"):
        attn(torch.randn(2, 5, D), padding_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ShapeError, match="bool"):
        attn(torch.randn(2, 5, D), padding_mask=torch.ones(2, 5))
    enc = make(causal=False)
    with pytest.raises(StateError, match="bidirectional"):
        enc(torch.randn(1, 3, D), enc.init_state(1))
    with pytest.raises(ValueError, match="divisible"):
        Attention(30, 4)
    with pytest.raises(ValueError, match="n_kv_heads"):
        Attention(32, 4, n_kv_heads=3)


def test_slow_paths_warn_once_saying_why(caplog_seqlab):
    from seqlab.nn import mixer as mixer_module

    mixer_module._warned.clear()
    naive = make(kernel="naive")
    naive(torch.randn(1, 3, D))
    naive(torch.randn(1, 3, D))
    dropped = Attention(D, H, dropout=0.1).train()
    dropped(torch.randn(1, 3, D))
    dropped(torch.randn(1, 3, D))
    messages = [r.getMessage() for r in caplog_seqlab.records]
    assert sum("slow reference path" in m for m in messages) == 1
    assert sum("off its fused kernel" in m for m in messages) == 1
    make()(torch.randn(1, 3, D))  # the fast path says nothing
    assert len(caplog_seqlab.records) == 2
