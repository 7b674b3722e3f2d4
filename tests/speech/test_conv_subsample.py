"""The convolutional subsampling front end: its causal convolutions equal a naive
reference, padding never reaches a real position, and a stream fed in chunks through
the backbone's state gives the outputs of one pass."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from seqlab.config_sections import ModelConfig
from seqlab.errors import ConfigError, ShapeError
from seqlab.models.build import build_backbone
from seqlab.models.inputs import ConvSubsampling


def naive(front: ConvSubsampling, x: torch.Tensor) -> torch.Tensor:
    """Each output step j of a convolution read from input steps 2j-2..2j, zeros before 0."""
    h = x.transpose(1, 2)
    for conv in front.convs:
        padded = torch.nn.functional.pad(h, (2, 0))
        n = (h.shape[2] + 1) // 2
        out = torch.stack([torch.einsum("bck,ock->bo", padded[:, :, 2 * j:2 * j + 3], conv.weight)
                           + conv.bias for j in range(n)], dim=2)
        h = torch.nn.functional.gelu(out)
    return front.proj(h.transpose(1, 2))


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_equals_the_naive_convolution(factor):
    torch.manual_seed(0)
    front = ConvSubsampling(5, 8, factor)
    x = torch.randn(2, 13, 5)
    y = front(x)
    assert y.shape == (2, front.positions(13), 8) == (2, -(-13 // factor), 8)
    assert torch.allclose(y, naive(front, x), atol=1e-5)


def test_padding_never_reaches_a_real_position():
    torch.manual_seed(0)
    front = ConvSubsampling(3, 8, 4)
    x = torch.randn(1, 10, 3)
    padded = torch.cat([x, torch.full((1, 7, 3), 1e4)], dim=1)
    mask = torch.tensor([[True] * 10 + [False] * 7])
    keep = front.positions_mask(mask)
    assert int(keep.sum()) == front.positions(10)
    assert torch.allclose(front(padded)[keep], front(x)[0], atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 9), min_size=1, max_size=5), mixer=st.sampled_from(["attention", "lstm"]))
def test_a_stream_in_chunks_equals_one_pass(cuts, mixer):
    torch.manual_seed(0)
    cfg = ModelConfig(mixer=mixer, d_model=8, n_layers=1, n_heads=2, input="conv_subsample",
                      input_dim=4, patch=4, position="rope" if mixer == "attention" else "none",
                      context_length=64)
    backbone = build_backbone(cfg).eval()
    x = torch.randn(2, 23, 4)
    whole = backbone(x).hidden
    state, pieces, at = backbone.init_state(2), [], 0
    for cut in cuts + [23]:
        out = backbone(x[:, at:min(at + cut, 23)], state)
        pieces.append(out.hidden)
        state, at = out.state, min(at + cut, 23)
        if at == 23:
            break
    streamed = torch.cat(pieces, dim=1)
    assert streamed.shape == whole.shape
    assert torch.allclose(streamed, whole, atol=1e-5)
    assert int(state.seen[0]) == whole.shape[1]


def test_a_state_passed_in_is_not_changed():
    backbone = build_backbone(ModelConfig(mixer="lstm", d_model=8, n_layers=1, position="none",
                                          input="conv_subsample", input_dim=4, patch=2))
    state = backbone.init_state(1)
    before = [t.clone() for t in state.front]
    backbone(torch.randn(1, 5, 4), state)
    assert all(torch.equal(a, b) for a, b in zip(before, state.front))


def test_bad_factor_and_shapes_are_refused():
    with pytest.raises(ConfigError, match="power of two"):
        ConvSubsampling(4, 8, 3)
    with pytest.raises(ShapeError, match=r"\(batch, time, 4\)"):
        ConvSubsampling(4, 8, 2)(torch.randn(2, 5, 3))
    backbone = build_backbone(ModelConfig(mixer="lstm", d_model=8, n_layers=1, position="none",
                                          input="conv_subsample", input_dim=4, patch=2))
    with pytest.raises(ShapeError, match="unpadded chunks"):
        backbone(torch.randn(2, 5, 4), backbone.init_state(2),
                 padding_mask=torch.tensor([[True] * 5, [True] * 3 + [False] * 2]))
