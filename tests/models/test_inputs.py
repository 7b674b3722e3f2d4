"""Input adapters: token embedding and feature projection, their errors, the registry."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.errors import ConfigError, ShapeError, TokenizerError
from seqlab.models.inputs import INPUTS, FeatureProjection, TokenEmbedding


def test_token_embedding_looks_up_valid_ids():
    emb = TokenEmbedding(10, 4)
    ids = torch.tensor([[0, 9, 3]])
    torch.testing.assert_close(emb(ids), F.embedding(ids, emb.weight))
    assert emb(torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0, 4)


@pytest.mark.parametrize("bad", [10, 57, -1])
def test_token_embedding_names_an_out_of_range_id_and_the_valid_range(bad):
    emb = TokenEmbedding(10, 4)
    with pytest.raises(TokenizerError, match=rf"token id {bad} is out of range.*0\.\.9"):
        emb(torch.tensor([[1, bad, 2]]))


def test_token_embedding_rejects_float_ids():
    with pytest.raises(ShapeError, match="integer tensor"):
        TokenEmbedding(10, 4)(torch.tensor([[1.0, 2.0]]))


def test_feature_projection_projects_and_checks_the_width():
    proj = FeatureProjection(3, 5)
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(proj(x), F.linear(x.float(), proj.weight, proj.bias))
    with pytest.raises(ShapeError, match=r"\(batch, time, 3\), got \(2, 4, 6\)"):
        proj(torch.randn(2, 4, 6))
    with pytest.raises(ShapeError, match=r"got \(4, 3\)"):
        proj(torch.randn(4, 3))


def test_registry_builds_both_adapters_and_asks_for_their_size():
    tokens, features = INPUTS.get("tokens"), INPUTS.get("features")
    assert (tokens.needs, tokens.dtype, features.needs, features.dtype) == (
        "vocab_size", "ids", "input_dim", "float")
    emb = tokens.build(32, 50, None)
    assert isinstance(emb, TokenEmbedding) and emb.weight.shape == (50, 32)
    proj = features.build(32, None, 7)
    assert isinstance(proj, FeatureProjection) and proj.weight.shape == (32, 7)
    with pytest.raises(ConfigError, match="model.vocab_size is not set"):
        tokens.build(32, None, 7)
    with pytest.raises(ConfigError, match="model.input_dim is not set"):
        features.build(32, 50, None)
    with pytest.raises(ConfigError, match="did you mean 'tokens'"):
        INPUTS.get("token")
