"""The recursive forecast strategy: the next-step layout, rollout through the state
against re-reading the whole prefix, and a recursive model end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import seqlab
from seqlab.config import RunConfig
from seqlab.data import Batch
from seqlab.data.series_layout import lag_targets
from seqlab.errors import ConfigError
from seqlab.tasks import OBJECTIVES
from seqlab.tasks.rollout import rollout

C, H = 12, 4


def test_lagged_layout_shifts_targets_one_step():
    B, K, F = 2, 2, 6  # targets, observed flags, history flag, one covariate
    x = torch.randn(B, C + H, F)
    x[:, C:, :K] = 0
    x[:, :, K:2 * K] = 1.0
    x[0, 3, 0], x[0, 3, K] = 0.0, 0.0  # one missing context value
    y = torch.randn(B, H, K)
    y[1, 2, 1] = float("nan")
    out = lag_targets(Batch(x, y, None, {}), context=C, n_targets=K, masked=True)
    values = torch.cat([x[:, :C, :K], y], 1)
    values[0, 3, 0] = float("nan")
    assert torch.equal(out.targets[:, 1:].isnan(), values[:, 1:].isnan())
    torch.testing.assert_close(out.targets[:, 1:].nan_to_num(), values[:, 1:].nan_to_num())
    assert out.targets[:, 0].isnan().all()  # position 0 predicts from nothing: never counted
    torch.testing.assert_close(out.inputs[:, 1:, :K], values[:, :-1].nan_to_num())
    assert (out.inputs[:, 0, :2 * K] == 0).all()
    assert out.inputs[0, 4, K] == 0 and out.inputs[1, C + 3, 2 * K - 1] == 0  # lagged missing
    torch.testing.assert_close(out.inputs[..., 2 * K:], x[..., 2 * K:])  # covariates stay
    blank = lag_targets(Batch(x), context=C, n_targets=K, masked=False)
    assert blank.targets is None and (blank.inputs[:, C + 1:, :K] == 0).all()


def model(mixer: str, loss: str = "normal", seed: int = 0):
    torch.manual_seed(seed)
    cfg = RunConfig.from_dict({
        "task": "forecast", "task_options": {"loss": loss, "strategy": "recursive"},
        "model": {"mixer": mixer, "d_model": 16, "n_layers": 2, "context_length": C + H,
                  "input": "features", "input_dim": 5,
                  "position": "rope" if mixer == "attention" else "none",
                  **({"n_heads": 2} if mixer == "attention" else {})},
        "data": {"source": "series", "path": "unused.csv", "context": C, "horizon": H}})
    objective = OBJECTIVES.get("forecast").cls(cfg)
    return objective.build_model().eval()


def reference(net, inputs, loc, scale, paths, generator):
    """Rollout without state: the whole prefix re-read at every step."""
    x = inputs.repeat(paths, 1, 1)
    loc_n, scale_n = loc.repeat(paths, 1), scale.repeat(paths, 1)
    drawn = []
    for h in range(H):
        params = net(x[:, :C + 1 + h]).logits[:, -1:]
        if net.head.probabilistic:
            value = net.head.sample(params, 1, loc_n, scale_n, generator=generator)[0]
        else:
            value = net.head.point(params, loc_n, scale_n)
        drawn.append(value[:, 0])
        if h + 1 < H:
            x[:, C + 1 + h, :1] = (value[:, 0] - loc_n) / scale_n
    return torch.stack(drawn, 1).reshape(paths, inputs.shape[0], H, 1)


@pytest.mark.parametrize("mixer,loss", [("lstm", "normal"), ("gru", "mse"),
                                        ("attention", "student_t"), ("mamba", "quantile")])
def test_rollout_through_the_state_equals_rereading_the_prefix(mixer, loss):
    net = model(mixer, loss)
    inputs = torch.randn(3, C + H, 5)
    loc, scale = torch.randn(3, 1), torch.rand(3, 1) + 0.5
    paths = rollout(net, inputs, context=C, horizon=H, n_targets=1, masked=False, loc=loc,
                    scale=scale, paths=4, generator=torch.Generator().manual_seed(3))
    expected = reference(net, inputs, loc, scale, 1 if loss == "mse" else 4,
                         torch.Generator().manual_seed(3))
    torch.testing.assert_close(paths, expected, rtol=1e-4, atol=1e-4)
    if loss != "mse":  # paths differ from one another; a point head rolls out one path
        assert paths.std(0).min() > 0
    else:
        assert paths.shape[0] == 1


def table(n_series: int = 3, n: int = 80, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(n_series):
        t = np.arange(n)
        y = 5 * s + 10 + 2 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 0.1, n)
        parts.append(pd.DataFrame({"ds": pd.date_range("2022-01-01", periods=n, freq="D"),
                                   "id": f"s{s}", "y": y, "promo": (t % 5 == 0).astype(float)}))
    return pd.concat(parts, ignore_index=True)


def test_a_recursive_forecaster_trains_predicts_and_reloads(tmp_path):
    df = table()
    f = seqlab.Forecaster("gru", context=C, horizon=H, id="id", future_covariates=["promo"],
                          steps=150, lr=1e-2, batch_size=8, d_model=16, n_layers=1,
                          run_dir=tmp_path / "run", calendar=["dayofweek"],
                          **{"task_options.strategy": "recursive", "task_options.paths": 50,
                             "train.num_threads": 1})
    f.fit(df)
    assert f.metrics["mase"] < 1.5  # near seasonal naive, the best a weekly cycle allows
    future = pd.DataFrame({"ds": np.tile(pd.date_range("2022-03-22", periods=H), 3),
                           "id": np.repeat(["s0", "s1", "s2"], H), "promo": 0.0})
    out = f.predict(future=future)
    assert list(out.columns) == ["id", "ds", "y", "y-lo-80", "y-hi-80", "y-lo-95", "y-hi-95"]
    assert (out["y-lo-95"] <= out["y-lo-80"]).all() and (out["y-hi-80"] <= out["y-hi-95"]).all()
    means = out.groupby("id")["y"].mean()
    assert means["s0"] < means["s1"] < means["s2"]
    pd.testing.assert_frame_equal(seqlab.load(tmp_path / "run").predict(df, future), out)


def test_recursive_needs_a_causal_unpatched_model(tmp_path):
    base = {"task": "forecast", "task_options": {"strategy": "recursive"},
            "model": {"mixer": "lstm", "d_model": 8, "n_layers": 1, "context_length": C + H,
                      "position": "none"},
            "data": {"source": "series", "path": "x.csv", "context": C, "horizon": H}}
    with pytest.raises(ConfigError, match="model.patch must be 1"):
        OBJECTIVES.get("forecast").cls.check(RunConfig.from_dict(
            {**base, "model": {**base["model"], "patch": 4}}))
    with pytest.raises(ConfigError, match="strategy must be one of direct, recursive"):
        RunConfig.from_dict({**base, "task_options": {"strategy": "beam"}})
