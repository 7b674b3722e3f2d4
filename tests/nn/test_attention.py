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


def spy_on_kernel(attn):
    """Replace ``attn.kernel`` by a wrapper that records, per call, whether each query row
    it was handed has at least one visible key; returns that list."""
    rows, kernel = [], attn.kernel

    def spy(q, k, v, *, mask, is_causal, dropout):
        if mask is not None:
            visible = mask if mask.dtype == torch.bool else mask > float("-inf")
            rows.append(visible.expand(*q.shape[:3], k.shape[2]).any(-1))  # (B, H, Tq)
        return kernel(q, k, v, mask=mask, is_causal=is_causal, dropout=dropout)

    attn.kernel = spy
    return rows


@pytest.mark.parametrize("kernel", ["sdpa", "naive"])
@pytest.mark.parametrize("position", [None, "alibi"])
@pytest.mark.parametrize("causal", [True, False])
def test_fully_masked_rows_give_zeros_and_finite_gradients(kernel, position, causal):
    """A query with no visible key (a padded slot; here also a whole row of padding) gives
    zeros and finite gradients. ``Attention._attend`` guarantees it by never handing a
    kernel such a row (it lets the row see every key, then zeroes its output): the naive
    kernel's softmax over all -inf gives NaN, and so do some fused kernels on other
    backends and torch versions, although torch 2.13's CPU SDPA returns zeros there."""
    attn = make(causal=causal, position=position, kernel=kernel)
    kernel_rows = spy_on_kernel(attn)
    attended = []  # the attention output before out_proj, (B, T, D)
    attn.out_proj.register_forward_hook(lambda module, args, out: attended.append(args[0]))
    x = torch.randn(2, 6, D, requires_grad=True)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1] = False  # a whole sequence of padding
    mask[0, :2] = False
    y, _ = attn(x, padding_mask=mask)
    assert torch.isfinite(y).all()
    assert (y[1] == 0).all() and (y[0, :2] == 0).all()
    # Rows without a key are zero already before the output projection (not just masked after).
    no_key = ~mask if causal else ~mask.any(1, keepdim=True).expand_as(mask)
    assert torch.isfinite(attended[0]).all() and (attended[0][no_key] == 0).all()
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())
    if causal:  # the streaming path: a cache that holds only padding for row 1
        state = attn.init_state(2)
        with torch.no_grad():
            _, state = attn(x, state, padding_mask=mask)
            step_mask = torch.tensor([[True], [False]])
            step, _ = attn(torch.randn(2, 1, D), state, padding_mask=step_mask)
        assert torch.isfinite(step).all() and (step[1] == 0).all()
    every_row_has_a_key = all(bool(r.all()) for r in kernel_rows)
    assert kernel_rows and every_row_has_a_key, "a kernel was handed a query row with no key"


def rope_by_formula(x, pos, base=10000.0):
    """Rotary embedding written from its definition, in float64: for position p and pair
    index i < Dh/2, the pair (x_i, x_{i + Dh/2}) is rotated by the angle p * base^(-2i/Dh).

    x: (B, H, T, Dh); pos: (B, T)."""
    Dh = x.shape[-1]
    half = Dh // 2
    out = torch.empty(x.shape, dtype=torch.float64)
    for i in range(half):
        angle = (pos.double() * base ** (-2.0 * i / Dh))[:, None, :]  # (B, 1, T)
        a, b = x[..., i].double(), x[..., i + half].double()
        out[..., i] = a * torch.cos(angle) - b * torch.sin(angle)
        out[..., i + half] = a * torch.sin(angle) + b * torch.cos(angle)
    return out


@pytest.mark.parametrize("d_head, base", [(8, 10000.0), (16, 10000.0), (8, 500.0)])
def test_rotary_matches_the_formula(d_head, base):
    rope = RotaryPosition(d_head, base=base)
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 4, 5, d_head, generator=g)  # (B, H, T, Dh)
    k = torch.randn(2, 2, 5, d_head, generator=g)  # (B, Hkv, T, Dh)
    pos = torch.tensor([[0, 1, 7, 3, 300], [41, 40, 2, 129, 5]])  # (B, T), any order
    qr, kr = rope.rotate(q, k, pos)
    torch.testing.assert_close(qr.double(), rope_by_formula(q, pos, base), atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(kr.double(), rope_by_formula(k, pos, base), atol=2e-4, rtol=1e-4)


def test_rotary_scores_of_whole_chunks_depend_only_on_offsets():
    """q_i . k_j after rotation at positions (p_i, p_j) equals that at (p_i + s, p_j + s),
    and changes when the offsets change."""
    rope = RotaryPosition(8)
    q, k = torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    pos = torch.tensor([[3, 0, 9, 4, 17, 5], [60, 61, 2, 33, 8, 8]])

    def scores(q_pos, k_pos):
        qr, _ = rope.rotate(q, q, q_pos)
        _, kr = rope.rotate(k, k, k_pos)
        return qr @ kr.transpose(-1, -2)  # (B, H, T, T)

    base = scores(pos, pos)
    for shift in (1, 37, 250):
        torch.testing.assert_close(scores(pos + shift, pos + shift), base, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(scores(pos, pos + 3), base, atol=1e-2)


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
    """Press et al. 2022: for n heads (a power of two) the geometric sequence starting at
    2^(-8/n) with that ratio; otherwise the slopes of the closest smaller power of two,
    then every other slope of twice that many heads."""
    expected = {
        8: [2 ** -1, 2 ** -2, 2 ** -3, 2 ** -4, 2 ** -5, 2 ** -6, 2 ** -7, 2 ** -8],
        4: [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8],
        6: [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3],
    }
    for n_heads, slopes in expected.items():
        torch.testing.assert_close(ALiBiPosition(n_heads).slopes, torch.tensor(slopes),
                                   atol=0, rtol=1e-6)


def test_alibi_bias_is_minus_slope_times_distance():
    alibi = ALiBiPosition(4)
    slopes = [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8]
    q_pos = torch.tensor([[0, 5, 9], [3, 3, 12]])  # (B, Tq)
    k_pos = torch.tensor([[0, 1, 5, 9, 20], [7, 3, 0, 12, 2]])  # (B, Tk)
    bias = alibi.bias(q_pos, k_pos)
    assert bias.shape == (2, 4, 3, 5)
    for b in range(2):
        for h, slope in enumerate(slopes):
            for i in range(3):
                for j in range(5):
                    expected = -slope * abs(int(q_pos[b, i]) - int(k_pos[b, j]))
                    assert float(bias[b, h, i, j]) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("kernel", ["sdpa", "naive"])
def test_alibi_attention_matches_the_formula(kernel):
    """The layer adds -slope_h |i - j| to the scores (checked with slopes written out),
    in one pass and when decoding from the cache."""
    attn = make(True, "alibi", kernel=kernel)
    slopes = torch.tensor([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8])  # 4 heads
    x = torch.randn(2, 7, D)
    B, T, Dh = 2, 7, D // H
    q = attn.q_proj(x).view(B, T, H, Dh).transpose(1, 2)
    k, v = attn.kv_proj(x).view(B, T, 2, H, Dh).permute(2, 0, 3, 1, 4)
    distance = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).abs()  # (T, T)
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh) - slopes[:, None, None] * distance
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    expected = attn.out_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D))
    y, _ = attn(x)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-4)
    state, outs = attn.init_state(B), []
    for lo, hi in ((0, 3), (3, 4), (4, 5), (5, 7)):
        out, state = attn(x[:, lo:hi], state)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 1), expected, atol=1e-5, rtol=1e-4)


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


def test_cache_reorder_returns_the_rows_and_leaves_the_cache_alone():
    attn = make(True, "alibi")  # ALiBi keeps key positions in the cache too
    x = torch.randn(3, 5, D)
    mask = torch.tensor([[True] * 5, [True] * 5, [False, False, True, True, True]])
    _, state = attn(x, attn.init_state(3), padding_mask=mask)
    before = [t.clone() for t in (state.k, state.v, state.key_mask, state.key_pos, state.seen)]
    picked = state.reorder(torch.tensor([2, 0]))
    for old, new in zip(before, (picked.k, picked.v, picked.key_mask, picked.key_pos, picked.seen)):
        assert torch.equal(new, old[[2, 0]])
    for old, now in zip(before, (state.k, state.v, state.key_mask, state.key_pos, state.seen)):
        assert torch.equal(now, old)
    step = torch.randn(3, 1, D)
    y_all, _ = attn(step, state)
    y_picked, _ = attn(step[[2, 0]], picked)
    torch.testing.assert_close(y_picked, y_all[[2, 0]], atol=1e-6, rtol=1e-5)
    y_again, _ = attn(step, state)  # the picked rows wrote into buffers of their own
    torch.testing.assert_close(y_again, y_all, atol=0, rtol=0)


def test_decoding_appends_in_place_and_forks_copy():
    """Decoding reuses the growing buffers (amortised O(1) per token: a new store only
    when the capacity doubles), while a second continuation of a state copies."""
    attn = make()
    state = attn.init_state(1)
    stores = []
    for _ in range(100):
        _, state = attn(torch.randn(1, 1, D), state)
        stores.append(state.store)
    assert len({id(s) for s in stores}) == 4  # capacities 16, 32, 64, 128
    _, first = attn(torch.randn(1, 1, D), state)
    _, second = attn(torch.randn(1, 1, D), state)
    assert first.store is state.store and second.store is not state.store
    assert first.length == second.length == 101
