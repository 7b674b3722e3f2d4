"""Linear attention against naive references, chunkwise == recurrent, options and errors."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.config import RunConfig
from seqlab.nn.linear_attention import LinearAttention, LinearAttentionState
from seqlab.nn.positions import ALiBiPosition, RotaryPosition

D, H = 32, 4


def make(causal=True, rope=False, n_kv_heads=None, **options):
    position = RotaryPosition(D // H) if rope else None
    return LinearAttention(D, H, n_kv_heads=n_kv_heads, causal=causal, position=position,
                           **options).eval()


def features(m, x, padding_mask):
    """Projections, elu + 1 features and (rotated) copies, as the paper writes them."""
    B, T, _ = x.shape
    Hkv, Dh = m.n_kv_heads, m.d_head
    x = x.masked_fill(~padding_mask[..., None], 0.0)
    q = F.elu(m.q_proj(x).view(B, T, H, Dh).transpose(1, 2)) + 1  # (B, H, T, Dh)
    kv = m.kv_proj(x).view(B, T, 2, Hkv, Dh)
    k = F.elu(kv[:, :, 0].transpose(1, 2)) + 1
    v = kv[:, :, 1].transpose(1, 2)
    keep = padding_mask[:, None, :, None]
    k, v = k * keep, v * keep
    qr, kr = q, k
    if m.position is not None:
        pos = (padding_mask.long().cumsum(1) - 1).clamp(min=0)
        qr, kr = m.position.rotate(q, k, pos)
    g = H // Hkv
    k, kr, v = (t.repeat_interleave(g, 1) for t in (k, kr, v))
    return q, k, v, qr, kr


def finish(m, y, padding_mask):
    B, _, T, _ = y.shape
    return m.out_proj(y.transpose(1, 2).reshape(B, T, D)) * padding_mask[..., None]


def quadratic_reference(m, x, padding_mask):
    """O(T^2): weights phi(q_i) . phi(k_j), causal-masked, normalised by their row sum."""
    q, k, v, qr, kr = features(m, x, padding_mask)
    T = x.shape[1]
    allowed = torch.ones(T, T, dtype=torch.bool)
    if m.causal:
        allowed = allowed.tril()
    num = ((qr @ kr.transpose(-1, -2)) * allowed) @ v  # (B, H, T, Dh)
    den = ((q @ k.transpose(-1, -2)) * allowed).sum(-1, keepdim=True)
    return finish(m, num / (den + m.eps), padding_mask)


def cumsum_reference(m, x, padding_mask):
    """The RNN form: running S_t = sum_{j<=t} phi(k_j) v_j^T and z_t = sum_{j<=t} phi(k_j)."""
    q, k, v, qr, kr = features(m, x, padding_mask)
    S = torch.einsum("bhtd,bhte->bhtde", kr, v).cumsum(2)  # (B, H, T, Dh, Dh)
    z = k.cumsum(2)  # (B, H, T, Dh)
    num = torch.einsum("bhtd,bhtde->bhte", qr, S)
    den = (q * z).sum(-1, keepdim=True)
    return finish(m, num / (den + m.eps), padding_mask)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("n_kv_heads", [None, 1])
def test_matches_naive_references(causal, rope, n_kv_heads):
    m = make(causal, rope, n_kv_heads, chunk_size=4)
    x = torch.randn(3, 13, D)
    mask = torch.arange(13)[None] < torch.tensor([13, 9, 1])[:, None]
    y, _ = m(x, padding_mask=mask)
    torch.testing.assert_close(y, quadratic_reference(m, x, mask), atol=1e-5, rtol=1e-4)
    if causal:
        torch.testing.assert_close(y, cumsum_reference(m, x, mask), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("rope", [False, True])
def test_chunked_state_equals_full_pass(rope, run_chunks):
    """T = 100 with chunk_size 16: splits cut through chunks, steps of one, and more."""
    m = make(rope=rope, n_kv_heads=2, chunk_size=16)
    x = torch.randn(2, 100, D)
    full, _ = m(x)
    chunked, state = run_chunks(m, x, [1, 1, 14, 16, 3, 33, 1, 31])
    torch.testing.assert_close(chunked, full, atol=2e-5, rtol=1e-4)
    assert int(state.seen[0]) == 100


def test_chunk_size_only_changes_rounding():
    x = torch.randn(2, 50, D)
    a = make(chunk_size=7)
    b = make(chunk_size=64)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x)[0], b(x)[0], atol=1e-5, rtol=1e-4)


def test_state_is_constant_size_and_per_kv_head():
    m = make(n_kv_heads=2)
    state = m.init_state(3)
    sizes = set()
    for _ in range(20):
        _, state = m(torch.randn(3, 1, D), state)
        sizes.add((tuple(state.kv.shape), tuple(state.k_sum.shape)))
    assert sizes == {((3, 2, 8, 8), (3, 2, 8))}
    assert isinstance(state, LinearAttentionState)
    picked = state.reorder(torch.tensor([2, 0]))
    assert picked.kv.shape[0] == 2 and picked.seen.tolist() == [20, 20]
    assert isinstance(picked, LinearAttentionState) and state.kv.shape[0] == 3


def test_relu_feature_map_and_errors():
    m = make(feature_map="relu")
    y, _ = m(torch.randn(2, 6, D))
    assert torch.isfinite(y).all()
    with pytest.raises(ValueError, match="unknown linear-attention feature map 'softmax'"):
        make(feature_map="softmax")
    with pytest.raises(ValueError, match="use position 'rope'"):
        LinearAttention(D, H, position=ALiBiPosition(H))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        make(chunk_size=0)


def test_half_precision_input_keeps_float32_sums():
    m = make().to(torch.bfloat16)
    state = m.init_state(1, dtype=torch.bfloat16)
    y, state = m(torch.randn(1, 5, D, dtype=torch.bfloat16), state)
    assert y.dtype == torch.bfloat16 and state.kv.dtype == torch.float32


def test_builds_from_config_with_options():
    from seqlab.tasks.causal_lm import build_language_model

    cfg = RunConfig.from_dict({"model": {
        "d_model": 32, "n_layers": 2, "n_heads": 4, "vocab_size": 11, "context_length": 16,
        "mixer": "linear_attention", "position": "rope",
        "mixer_options": {"linear_attention": {"chunk_size": 4}}}})
    model = build_language_model(cfg)
    assert model(torch.randint(0, 11, (2, 9))).logits.shape == (2, 9, 11)
