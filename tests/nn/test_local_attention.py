"""Window and sparse (window + global) attention against a dense masked reference."""

import math

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from seqlab.nn import MIXERS
from seqlab.nn.attention import Attention
from seqlab.nn.local_attention import SparseAttention, WindowAttention, WindowAttentionOptions
from seqlab.nn.positions import ALiBiPosition, RotaryPosition

D, H = 32, 4


def make(window, *, causal=True, position=None, n_kv_heads=None, n_global=None, kernel="sdpa"):
    pos = {"rope": RotaryPosition(D // H), "alibi": ALiBiPosition(H), None: None}[position]
    if n_global is None:
        return WindowAttention(D, H, window=window, n_kv_heads=n_kv_heads, causal=causal,
                               position=pos, kernel=kernel).eval()
    return SparseAttention(D, H, window=window, n_global=n_global, n_kv_heads=n_kv_heads,
                           position=pos, kernel=kernel).eval()


def reference(layer, x, *, padding_mask=None):
    """Dense O(T^2) attention with the band / global / causal / padding pattern as a mask."""
    B, T, _ = x.shape
    Dh, Hkv = layer.d_head, layer.n_kv_heads
    mask = torch.ones(B, T, dtype=torch.bool) if padding_mask is None else padding_mask
    x = x * mask[..., None]
    q = layer.q_proj(x).view(B, T, H, Dh).transpose(1, 2)
    kv = layer.kv_proj(x).view(B, T, 2, Hkv, Dh)
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    pos = (mask.long().cumsum(1) - 1).clamp(min=0)  # padding occupies no position
    if isinstance(layer.position, RotaryPosition):
        q, k = layer.position.rotate(q, k, pos)
    k, v = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)  # (B, H, T, T)
    if isinstance(layer.position, ALiBiPosition):
        scores = scores + layer.position.bias(pos, pos)
    offset = pos[:, :, None] - pos[:, None, :]  # query minus key position
    allowed = offset.abs() < layer.window
    if layer.causal:
        allowed &= offset >= 0
    n_global = getattr(layer, "n_global", 0)
    if n_global:
        glob = pos < n_global
        allowed |= glob[:, None, :] | glob[:, :, None]
    allowed &= mask[:, None, :]
    w = scores.masked_fill(~allowed[:, None], float("-inf")).softmax(-1).nan_to_num(0.0)
    y = layer.out_proj((w @ v).transpose(1, 2).reshape(B, T, D))
    return y * mask[..., None]


def holey_mask(B, T):
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, T - 4:] = False  # right padding
    mask[1, :5] = False  # left padding
    mask[2, [2, 3, 9]] = False  # holes
    return mask


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("position", [None, "rope", "alibi"])
@pytest.mark.parametrize("n_kv_heads", [None, 1])
def test_window_matches_dense_reference(causal, position, n_kv_heads):
    layer = make(4, causal=causal, position=position, n_kv_heads=n_kv_heads)
    x = torch.randn(3, 13, D)  # 13 is not a multiple of the window
    torch.testing.assert_close(layer(x)[0], reference(layer, x), atol=1e-5, rtol=1e-4)
    mask = holey_mask(3, 13)
    torch.testing.assert_close(layer(x, padding_mask=mask)[0],
                               reference(layer, x, padding_mask=mask), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("window", [1, 2, 5, 12, 13, 40])
def test_window_sizes_including_larger_than_sequence(window):
    for causal in (True, False):
        layer = make(window, causal=causal, position="alibi", n_kv_heads=2)
        x, mask = torch.randn(3, 13, D), holey_mask(3, 13)
        torch.testing.assert_close(layer(x, padding_mask=mask)[0],
                                   reference(layer, x, padding_mask=mask), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("position", [None, "rope", "alibi"])
@pytest.mark.parametrize("n_kv_heads", [None, 2])
@pytest.mark.parametrize("n_global", [1, 3])
def test_sparse_matches_dense_reference(position, n_kv_heads, n_global):
    layer = make(3, position=position, n_kv_heads=n_kv_heads, n_global=n_global)
    x = torch.randn(3, 13, D)
    torch.testing.assert_close(layer(x)[0], reference(layer, x), atol=1e-5, rtol=1e-4)
    mask = holey_mask(3, 13)
    mask[0, 1:] = False  # fewer real tokens than global slots
    torch.testing.assert_close(layer(x, padding_mask=mask)[0],
                               reference(layer, x, padding_mask=mask), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n_global", [0, 2])
def test_naive_kernel_matches_sdpa(n_global):
    layer = make(4, causal=n_global == 0, position="alibi", n_global=n_global or None)
    naive = make(4, causal=n_global == 0, position="alibi", n_global=n_global or None,
                 kernel="naive")
    naive.load_state_dict(layer.state_dict())
    x, mask = torch.randn(3, 13, D), holey_mask(3, 13)
    torch.testing.assert_close(naive(x, padding_mask=mask)[0], layer(x, padding_mask=mask)[0],
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("causal, n_global", [(True, None), (False, None), (False, 2)])
@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_window_at_least_T_equals_full_attention(causal, n_global, position):
    layer = make(16, causal=causal, position=position, n_kv_heads=2, n_global=n_global)
    full = Attention(D, H, n_kv_heads=2, causal=causal, position=layer.position).eval()
    full.load_state_dict(layer.state_dict())  # same parameter layout
    x, mask = torch.randn(3, 13, D), holey_mask(3, 13)
    torch.testing.assert_close(layer(x)[0], full(x)[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(layer(x, padding_mask=mask)[0], full(x, padding_mask=mask)[0],
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("splits", [[1] * 17, [9, 8], [3, 1, 13], [4, 4, 4, 5], [17]])
@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_chunked_equals_full_with_small_window(splits, position, run_chunks):
    layer = make(4, position=position, n_kv_heads=2)
    x = torch.randn(2, sum(splits), D)
    full, _ = layer(x)
    chunked, _ = run_chunks(layer, x, splits)
    torch.testing.assert_close(chunked, full, atol=2e-5, rtol=1e-4)


def test_padded_chunks_equal_each_sequence_alone():
    """Left padding in the prompt and holes inside later chunks occupy no position."""
    layer = make(3, position="alibi", n_kv_heads=2)
    x = torch.randn(2, 14, D)
    mask = torch.ones(2, 14, dtype=torch.bool)
    mask[0, :4] = False  # left-padded prompt
    mask[1, [7, 8, 12]] = False  # holes in later chunks
    state, outs = layer.init_state(2), []
    for a, b in [(0, 6), (6, 7), (7, 11), (11, 14)]:
        y, state = layer(x[:, a:b], state, padding_mask=mask[:, a:b])
        outs.append(y)
    y = torch.cat(outs, 1)
    for i in range(2):
        alone, _ = layer(x[i:i + 1, mask[i]])
        torch.testing.assert_close(y[i, mask[i]], alone[0], atol=2e-5, rtol=1e-4)
        assert (y[i, ~mask[i]] == 0).all()
    assert state.seen.tolist() == mask.sum(1).tolist()


def test_decoding_state_size_is_constant():
    layer = make(4, position="rope", n_kv_heads=2)
    state = layer.init_state(2)
    shapes = [tuple(t.shape) for t in (state.k, state.v, state.key_mask, state.key_pos)]
    assert shapes == [(2, 2, 3, D // H)] * 2 + [(2, 3)] * 2
    _, state = layer(torch.randn(2, 20, D), state)
    for _ in range(24):
        _, state = layer(torch.randn(2, 1, D), state)
        assert [tuple(t.shape) for t in (state.k, state.v, state.key_mask, state.key_pos)] == shapes
    assert state.seen.tolist() == [44, 44] and state.key_pos[0].tolist() == [41, 42, 43]


def test_reorder_selects_batch_rows():
    layer = make(4)
    _, state = layer(torch.randn(3, 6, D), layer.init_state(3))
    k = state.k.clone()
    picked = state.reorder(torch.tensor([2, 0]))
    assert torch.equal(picked.k, k[[2, 0]]) and picked.seen.shape == (2,)
    assert torch.equal(state.k, k) and state.seen.shape == (3,)  # left unchanged


class LargestTensor(TorchFunctionMode):
    """Records the largest tensor any torch function or tensor method returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def largest_tensor(layer, x, **kwargs):
    with torch.no_grad(), LargestTensor() as mode:
        layer(x, **kwargs)
    return mode.largest


@pytest.mark.parametrize("causal, n_global", [(True, None), (False, None), (False, 2)])
def test_no_T_by_T_tensor_is_materialised(causal, n_global):
    T, W, G = 192, 4, 2
    x = torch.randn(1, T, D)
    mask = torch.ones(1, T, dtype=torch.bool)
    mask[0, 150:] = False
    layer = make(W, causal=causal, position="alibi", n_global=n_global, kernel="naive")
    full = Attention(D, H, causal=causal, position=layer.position, kernel="naive").eval()
    assert largest_tensor(full, x) >= H * T * T  # negative control: the probe sees scores
    scores = H * T * (3 * W + G)  # (T / W blocks, H, W, <= 3W + G)
    strips = T * D * (3 * W + G) // W  # each block's copy of its keys / values
    # O(T * window); a single (T, T) mask would already exceed it.
    assert largest_tensor(layer, x, padding_mask=mask) <= max(scores, strips) < T * T


def test_sdpa_blocks_are_bounded_by_the_window():
    layer = make(4, causal=False, n_global=2)
    seen = []
    kernel = layer.kernel

    def record(q, k, v, **kwargs):
        seen.append((q.shape[-2], k.shape[-2]))
        return kernel(q, k, v, **kwargs)

    layer.kernel = record
    layer(torch.randn(2, 100, D))
    band, global_rows = seen
    assert band == (4, 3 * 4 - 2 + 2) and global_rows == (2, 100)


def test_fully_padded_rows_give_zeros_and_finite_gradients():
    for layer in (make(3, position="alibi"), make(3, causal=False, n_global=2)):
        x = torch.randn(2, 7, D, requires_grad=True)
        mask = torch.ones(2, 7, dtype=torch.bool)
        mask[1] = False
        y, _ = layer(x, padding_mask=mask)
        assert (y[1] == 0).all() and torch.isfinite(y).all()
        y.square().sum().backward()
        assert torch.isfinite(x.grad).all()


def test_bad_options_raise():
    with pytest.raises(ValueError, match="window"):
        WindowAttention(D, H, window=0)
    with pytest.raises(ValueError, match="window"):
        WindowAttentionOptions(window=0)
    with pytest.raises(ValueError, match="bidirectional"):
        SparseAttention(D, H, window=4, n_global=1, causal=True)
    with pytest.raises(ValueError, match="n_global"):
        SparseAttention(D, H, window=4, n_global=-1)
    assert MIXERS.get("sparse_attention").modes == ("bidirectional",)
    assert MIXERS.get("window_attention").supports(True)
