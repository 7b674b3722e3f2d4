"""Self-supervised pre-training on series: the masks and targets of both methods, the
configs refused, and a forecaster fine-tuned from a pre-trained run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import seqlab
from seqlab.config import RunConfig
from seqlab.data.series_layout import blank_steps
from seqlab.errors import ConfigError
from seqlab.tasks import OBJECTIVES

C, H, P = 16, 8, 4


def table(n_series: int = 3, n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    parts = []
    for s in range(n_series):
        t = np.arange(n)
        parts.append(pd.DataFrame({
            "ds": pd.date_range("2022-01-01", periods=n, freq="h"), "id": f"s{s}",
            "y": 5 + s + np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.1, n),
            "temp": rng.normal(size=n), "promo": (t % 7 == 0).astype(float)}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("pretrain") / "series.csv"
    table().to_csv(path, index=False)
    return path


def config(path, method="masked", causal=False, **task) -> dict:
    return {"task": "series_pretrain", "seed": 3,
            "task_options": {"method": method, **task},
            "model": {"mixer": "attention", "d_model": 16, "n_layers": 1, "n_heads": 2,
                      "context_length": (C + H) // P, "position": "rope", "patch": P,
                      "causal": causal},
            "data": {"source": "series", "path": str(path), "id": "id", "context": C,
                     "horizon": H, "past_covariates": ["temp"], "future_covariates": ["promo"],
                     "calendar": ["hour"]},
            "train": {"steps": 20, "batch_size": 8, "lr": 3e-3, "eval_every": 10,
                      "progress": False, "num_threads": 1}}


def prepared(cfg: dict):
    objective = OBJECTIVES.get("series_pretrain").cls(RunConfig.from_dict(cfg))
    objective.prepare(None)
    return objective


def test_masked_patches_are_hidden_like_a_horizon_and_are_the_targets(csv):
    obj = prepared(config(csv, mask_ratio=0.5))
    raw = obj.source.train_batch(0, 0)
    assert raw.inputs[:, :, 1].eq(1).all()  # every step of a pre-training window is history
    batch = obj.transform(raw, key=(0, 0, 0))
    hidden = torch.isfinite(batch.targets[..., 0])  # (B, T)
    per_patch = hidden.reshape(hidden.shape[0], -1, P)
    assert (per_patch.all(-1) | ~per_patch.any(-1)).all()  # whole patches
    assert (per_patch.all(-1).sum(1) == 3).all()  # round(0.5 * 6) of each window's patches
    torch.testing.assert_close(batch.targets[hidden], raw.inputs[..., :1][hidden])
    # targets, history flag and past covariate blanked; the promotion and calendar kept
    assert (batch.inputs[hidden][:, :3] == 0).all()
    torch.testing.assert_close(batch.inputs[..., 3:], raw.inputs[..., 3:])
    torch.testing.assert_close(batch.inputs[~hidden], raw.inputs[~hidden])
    again = obj.transform(raw, key=(0, 0, 0))
    assert torch.equal(again.inputs, batch.inputs)  # a pure function of the key
    other = obj.transform(raw, key=(0, 1, 0))
    assert not torch.equal(other.targets.isnan(), batch.targets.isnan())


def test_next_patch_targets_are_the_following_patch(csv):
    obj = prepared(config(csv, method="next", causal=True))
    raw = obj.source.train_batch(0, 0)
    batch = obj.transform(raw, key=(0, 0, 0))
    torch.testing.assert_close(batch.targets[:, :-P], raw.inputs[:, P:, :1])
    assert batch.targets[:, -P:].isnan().all() and torch.equal(batch.inputs, raw.inputs)


def test_blank_steps_keeps_known_channels():
    x = torch.arange(2 * 3 * 7, dtype=torch.float).reshape(2, 3, 7)
    where = torch.tensor([[True, False, False], [False, False, True]])
    out = blank_steps(x, where, n_targets=1, masked=True, n_past=2)  # 1 + 1 + 1 + 2 zeroed
    assert (out[where][:, :5] == 0).all() and torch.equal(out[where][:, 5:], x[where][:, 5:])
    assert torch.equal(out[~where], x[~where])


def test_bad_pretraining_configs_are_refused(csv):
    with pytest.raises(ConfigError, match="needs model.causal: true"):
        RunConfig.from_dict(config(csv, method="next", causal=False))
    bad = config(csv)
    bad["data"]["horizon"] = 6
    with pytest.raises(ConfigError, match="must be a multiple of the span 4"):
        RunConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="mask_ratio must be in"):
        RunConfig.from_dict(config(csv, mask_ratio=1.0))
    with pytest.raises(ConfigError, match="method must be one of masked, next"):
        RunConfig.from_dict(config(csv, method="contrastive"))


def test_a_forecaster_fine_tunes_from_a_pretrained_run(csv, tmp_path):
    result = seqlab.fit(RunConfig.from_dict(config(csv)), tmp_path / "pre")
    assert result.metrics["mse"] < 1.0  # reconstructs better than the scaled mean
    forecast = config(csv)
    forecast.update(task="forecast", task_options={"loss": "normal"},
                    init={"run": str(tmp_path / "pre")})
    forecast["train"]["steps"] = 4
    seqlab.fit(RunConfig.from_dict(forecast), tmp_path / "fine")
    init = json.loads((tmp_path / "fine" / "init.json").read_text())
    assert "backbone.embed.weight" in init["loaded"]  # the same feature layout
    assert any(n.startswith("backbone.blocks.0.mixer") for n in init["loaded"])
    assert "head.proj.weight" in init["dropped"]  # a new head: points, not distributions


def test_features_pretraining_hides_real_spans_and_a_classifier_fine_tunes(tmp_path):
    from seqlab.datasets.dynamics import write_dynamics

    write_dynamics(tmp_path / "dyn", n_train=40, n_val=16, min_length=20, max_length=48)
    cfg = {"task": "series_pretrain", "seed": 1, "task_options": {"span": 4},
           "model": {"mixer": "gru", "d_model": 16, "n_layers": 1, "context_length": 48,
                     "position": "none", "ffn": "none"},
           "data": {"source": "features", "path": str(tmp_path / "dyn" / "train.npz"),
                    "val_path": str(tmp_path / "dyn" / "val.npz")},
           "train": {"steps": 6, "batch_size": 8, "lr": 3e-3, "eval_every": 3,
                     "progress": False, "num_threads": 1}}
    obj = OBJECTIVES.get("series_pretrain").cls(RunConfig.from_dict(cfg))
    obj.prepare(None)
    raw = obj.source.train_batch(0, 0)
    assert raw.padding_mask is not None  # sequences of different lengths
    batch = obj.transform(raw, key=(0, 0, 0))
    hidden = torch.isfinite(batch.targets).all(-1)
    assert not (hidden & ~raw.padding_mask).any()  # never a padded step
    lengths = raw.padding_mask.sum(1)
    share = hidden.sum(1).float() / (lengths // 4 * 4).float()
    assert ((share > 0.2) & (share < 0.6)).all()  # about 0.4 of each row's spans
    assert (batch.inputs[hidden] == 0).all()
    torch.testing.assert_close(batch.targets[hidden], raw.inputs[hidden])
    seqlab.fit(RunConfig.from_dict(cfg), tmp_path / "pre")
    classify = {**cfg, "task": "classify", "task_options": {},
                "init": {"run": str(tmp_path / "pre")}}
    seqlab.fit(RunConfig.from_dict(classify), tmp_path / "fine")
    init = json.loads((tmp_path / "fine" / "init.json").read_text())
    assert "backbone.embed.weight" in init["loaded"]
    assert any(n.startswith("backbone.blocks.0.mixer") for n in init["loaded"])
