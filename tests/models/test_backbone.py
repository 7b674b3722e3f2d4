"""Backbone, presets, positions and config-driven building."""

import pytest
import torch

from seqlab.config import RunConfig
from seqlab.errors import ConfigError, ShapeError, TokenizerError
from seqlab.models import PRESETS, build_backbone
from seqlab.nn.positions import SinusoidalPosition
from seqlab.tasks.causal_lm import build_language_model


def config(**model):
    model.setdefault("vocab_size", 40)
    return RunConfig.from_dict({"model": {"d_model": 32, "n_layers": 2, "n_heads": 4,
                                          "context_length": 16, **model}})


@pytest.mark.parametrize("name", PRESETS.names())
def test_every_preset_builds_and_runs(name):
    cfg = RunConfig.from_dict({"model": {"preset": name, "vocab_size": 50}})
    model = build_language_model(cfg)
    out = model(torch.randint(0, 50, (2, 8)))
    assert out.logits.shape == (2, 8, 50)


def test_preset_keys_are_overridden_by_explicit_keys():
    cfg = RunConfig.from_dict({"model": {"preset": "gpt-small", "n_layers": 2, "vocab_size": 9}})
    assert cfg.model.n_layers == 2 and cfg.model.d_model == 256


def test_hybrid_stack_lists_one_mixer_per_layer():
    cfg = config(mixer=["lstm", "attention"], position="rope")
    bb = build_backbone(cfg.model)
    assert [type(b.mixer).__name__ for b in bb.blocks] == ["RecurrentMixer", "Attention"]
    with pytest.raises(ConfigError, match="lists 1 mixers but model.n_layers is 2"):
        config(mixer=["lstm"])


def test_generic_init_leaves_own_init_mixers_but_scales_their_out_proj():
    torch.manual_seed(0)
    bb = build_backbone(config(mixer=["mamba", "attention"], n_layers=2, position="rope").model)
    mamba, attention = bb.blocks[0].mixer, bb.blocks[1].mixer
    # torch's default Linear init is U(+-1/sqrt(fan_in)): std 1/sqrt(3 fan_in)
    default_std = (3 * mamba.in_proj.in_features) ** -0.5
    assert mamba.in_proj.weight.std().item() == pytest.approx(default_std, rel=0.1)
    out_std = (3 * mamba.out_proj.in_features) ** -0.5 / 2  # / sqrt(2 n_layers)
    assert mamba.out_proj.weight.std().item() == pytest.approx(out_std, rel=0.1)
    assert attention.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_tied_head_shares_the_embedding():
    model = build_language_model(config(tie_embeddings=True))
    assert model.head.proj.weight is model.backbone.embed.weight
    model = build_language_model(config(tie_embeddings=False))
    assert model.head.proj.weight is not model.backbone.embed.weight


def test_feature_input_projects_continuous_values():
    cfg = config(input="features", input_dim=5, vocab_size=None)
    bb = build_backbone(cfg.model)
    out = bb(torch.randn(2, 7, 5))
    assert out.hidden.shape == (2, 7, 32)
    with pytest.raises(ShapeError, match=r"\(batch, time, 5\)"):
        bb(torch.randn(2, 7, 4))


def test_token_ids_out_of_range_are_named():
    model = build_language_model(config())
    with pytest.raises(TokenizerError, match="token id 40 is out of range.*0..39"):
        model(torch.tensor([[1, 40]]))
    with pytest.raises(TokenizerError, match="token id -1"):
        model(torch.tensor([[-1, 3]]))


def test_learned_positions_limit_names_the_alternatives():
    model = build_language_model(config(position="learned"))
    with pytest.raises(ShapeError, match="limit of 16.*rope"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_sinusoidal_has_the_textbook_values():
    pe = SinusoidalPosition(4)(torch.tensor([[0, 1]]))
    expected = torch.tensor([[0.0, 1.0, 0.0, 1.0],
                             [torch.sin(torch.tensor(1.0)), torch.cos(torch.tensor(1.0)),
                              torch.sin(torch.tensor(0.01)), torch.cos(torch.tensor(0.01))]])
    torch.testing.assert_close(pe[0], expected)


def test_learned_positions_are_per_sequence_with_left_padding():
    model = build_language_model(config(position="learned")).eval()
    ids = torch.tensor([[0, 0, 5, 6], [3, 4, 5, 6]])
    mask = torch.tensor([[False, False, True, True], [True] * 4])
    out = model(ids, padding_mask=mask)
    alone = model(ids[:1, 2:])
    torch.testing.assert_close(out.logits[0, 2:], alone.logits[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("bad, match", [
    ({"d_model": 30}, "divisible by model.n_heads"),
    ({"n_kv_heads": 3}, "n_kv_heads"),
    ({"mixer": "lstm", "position": "rope"}, "acts inside attention"),
    ({"position": "ropee"}, "did you mean 'rope'"),
    ({"norm": "batchnorm"}, "model.norm"),
    ({"mixer": "lstm", "position": "none", "mixer_options": {"lstm": {"num_layer": 2}}},
     "did you mean 'model.mixer_options.lstm.num_layers'"),
    ({"mixer_options": {"lstm": {"num_layers": 2}}},
     "mixer_options.lstm is unused: the model's mixers are attention; valid keys: attention"),
    ({"mixer_options": {"lstn": {}}}, "did you mean 'lstm'"),
    ({"dropout": 1.5}, "dropout"),
])
def test_invalid_model_configs(bad, match):
    with pytest.raises(ConfigError, match=match):
        config(**bad)
