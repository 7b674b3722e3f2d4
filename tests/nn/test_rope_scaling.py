"""Rotary positions beyond the trained context: position interpolation (linear) and
NTK-aware base scaling, against their definitions."""

import pytest
import torch

from seqlab.config import RunConfig
from seqlab.errors import ConfigError
from seqlab.nn.positions import RotaryPosition


def test_linear_scaling_is_position_interpolation():
    plain, scaled = RotaryPosition(16), RotaryPosition(16, scaling="linear", factor=4.0)
    q, k = torch.randn(2, 2, 8, 16), torch.randn(2, 2, 8, 16)
    pos = torch.arange(0, 32, 4)[None].expand(2, 8)  # positions 0, 4, ..., 28
    assert torch.allclose(torch.stack(scaled.rotate(q, k, pos)),
                          torch.stack(plain.rotate(q, k, pos // 4)), atol=1e-6)


def test_ntk_keeps_the_fastest_frequency_and_slows_the_slowest_by_the_factor():
    plain, scaled = RotaryPosition(16), RotaryPosition(16, scaling="ntk", factor=8.0)
    assert scaled.inv_freq[0] == plain.inv_freq[0]
    assert scaled.inv_freq[-1].item() == pytest.approx(plain.inv_freq[-1].item() / 8.0, rel=1e-5)
    assert bool((scaled.inv_freq <= plain.inv_freq).all())


def test_scaling_needs_rotary_positions():
    with pytest.raises(ConfigError, match="act on rotary positions; model.position is 'learned'"):
        RunConfig.from_dict({"model": {"position": "learned", "rope_scaling": "linear",
                                       "rope_factor": 2.0}})
    with pytest.raises(ConfigError, match="model.rope_scaling must be none, linear or ntk"):
        RunConfig.from_dict({"model": {"rope_scaling": "yarn"}})
    with pytest.raises(ConfigError, match="model.rope_factor must be >= 1"):
        RunConfig.from_dict({"model": {"rope_scaling": "linear", "rope_factor": 0.5}})


def test_a_run_loads_at_a_longer_context_with_scaled_positions(tmp_path):
    import seqlab
    from seqlab.errors import CheckpointError

    (tmp_path / "c.txt").write_text("the quick brown fox jumps over the lazy dog. " * 80)
    seqlab.fit(RunConfig.from_dict({
        "model": {"preset": "llama-tiny", "d_model": 32, "n_layers": 1, "context_length": 16},
        "data": {"path": str(tmp_path / "c.txt")},
        "train": {"steps": 2, "batch_size": 4, "eval_every": 2, "eval_batches": 1,
                  "progress": False}}), tmp_path / "run")
    longer = seqlab.load(tmp_path / "run", overrides=["model.context_length=64",
                                                      "model.rope_scaling=linear",
                                                      "model.rope_factor=4"])
    assert longer.config.model.context_length == 64
    assert longer.model.backbone.blocks[0].mixer.position.inv_freq[0] == pytest.approx(0.25)
    assert "val_loss" in longer.evaluate(max_batches=1)
    with pytest.raises(CheckpointError, match="do not match the model built from the config"):
        seqlab.load(tmp_path / "run", overrides=["model.d_model=48"])
