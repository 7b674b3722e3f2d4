"""Patched feature inputs (``model.patch``): P steps per position, against a plain
reshape + Linear; the forecast head over patches; a patched forecaster end to end,
exported with equal outputs; and the errors for inputs that do not fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import seqlab
from seqlab.config import ModelConfig
from seqlab.errors import ConfigError, ShapeError
from seqlab.export import ExportedModel, export_run
from seqlab.models.build import build_backbone
from seqlab.models.forecast_head import ForecastHead
from seqlab.models.inputs import FeatureProjection


def test_a_patch_is_one_linear_map_of_its_steps_in_time_order():
    proj = FeatureProjection(3, 8, patch=4)
    x = torch.randn(2, 12, 3)
    ref = torch.nn.functional.linear(
        torch.stack([x[:, i:i + 4].reshape(2, 12) for i in range(0, 12, 4)], 1),
        proj.weight, proj.bias)
    torch.testing.assert_close(proj(x), ref)
    assert proj(x).shape == (2, 3, 8)
    with pytest.raises(ShapeError, match="10 steps do not split into patches of 4"):
        proj(torch.randn(2, 10, 3))


def test_a_patched_head_reads_the_last_horizon_over_patch_positions():
    head = ForecastHead(8, 6, 2, loss="normal", patch=3)
    hidden = torch.randn(4, 5, 8)
    out = head(hidden)
    assert out.shape == (4, 6, 2, 2)
    changed = hidden.clone()
    changed[:, :3] += 5.0  # all but the last 6 / 3 = 2 positions
    torch.testing.assert_close(head(changed), out)
    with pytest.raises(ConfigError, match="multiple of model.patch"):
        ForecastHead(8, 7, 2, patch=3)


def test_patches_refuse_tokens_padding_and_misfit_windows(tmp_path):
    with pytest.raises(ConfigError, match="token inputs take none"):
        build_backbone(ModelConfig(vocab_size=11, patch=2, d_model=8, n_layers=1, n_heads=2))
    with pytest.raises(ConfigError, match="model.patch must be >= 1"):
        ModelConfig(patch=0)
    backbone = build_backbone(ModelConfig(input="features", input_dim=3, patch=2, d_model=8,
                                          n_layers=1, n_heads=2, position="none", mixer="gru"))
    with pytest.raises(ShapeError, match="padding mask covers 6 steps"):
        backbone(torch.randn(2, 6, 3), padding_mask=torch.ones(2, 6, dtype=torch.bool))
    table = pd.DataFrame({"ds": pd.date_range("2020-01-01", periods=40), "y": np.arange(40.0)})
    table.to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(ConfigError, match="must be multiples of it"):
        seqlab.RunConfig.from_dict({"task": "forecast", "model": {"patch": 4, "context_length": 8},
                                    "data": {"source": "series", "path": str(tmp_path / "s.csv"),
                                             "context": 10, "horizon": 4}})


def test_a_patched_forecaster_trains_predicts_and_exports(tmp_path):
    t = np.arange(300)
    df = pd.DataFrame({"ds": pd.date_range("2021-01-01", periods=300, freq="h"),
                       "y": np.sin(2 * np.pi * t / 24) + 0.05 * np.random.default_rng(0).normal(size=300)})
    model = {"mixer": "attention", "position": "rope", "d_model": 16, "n_layers": 1, "n_heads": 2,
             "patch": 6}
    f = seqlab.Forecaster(model, context=48, horizon=12, calendar=["hour"], steps=60, lr=5e-3,
                          batch_size=8, run_dir=tmp_path / "run", **{"train.num_threads": 1}).fit(df)
    assert f.metrics["mase"] < 1.0  # a clean daily cycle: better than the seasonal naive
    assert len(f.predict()) == 12
    export_run(tmp_path / "run", tmp_path / "onnx")
    loaded = seqlab.load(tmp_path / "run").model
    x = torch.randn(2, 60, loaded.backbone.embed.input_dim)
    with torch.no_grad():
        torch.testing.assert_close(ExportedModel(tmp_path / "onnx").forward(x), loaded(x).logits,
                                   atol=1e-4, rtol=1e-4)
