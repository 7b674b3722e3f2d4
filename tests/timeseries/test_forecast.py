"""The series source and the forecast objective: windows never cross the split, are a
pure function of the step, carry the documented features; metrics equal a NumPy
reference; the Forecaster trains, predicts, saves and loads; bad inputs are named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import seqlab
from seqlab.config import RunConfig
from seqlab.data.series_source import SeriesSource, Windows
from seqlab.errors import ConfigError, DataError
from seqlab.models.forecast_head import ForecastHead
from seqlab.models.heads import LossSum
from seqlab.tasks import OBJECTIVES
from seqlab.tasks.forecast import ForecastMetric
from seqlab.tasks.rollout import HeadPredictive

C, H = 12, 4


def table(n_series: int = 3, n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(n_series):
        t = np.arange(n)
        y = 5 * s + 10 + 2 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 0.1, n)
        parts.append(pd.DataFrame({"ds": pd.date_range("2022-01-01", periods=n, freq="D"),
                                   "id": f"s{s}", "y": y, "promo": (t % 5 == 0).astype(float),
                                   "temp": rng.normal(size=n)}))
    return pd.concat(parts, ignore_index=True)


def config(path, **data) -> RunConfig:
    return RunConfig.from_dict({
        "task": "forecast", "seed": 1,
        "model": {"mixer": "gru", "d_model": 16, "n_layers": 1, "context_length": C + H,
                  "position": "none"},
        "data": {"source": "series", "path": str(path), "id": "id", "context": C, "horizon": H,
                 "future_covariates": ["promo"], "past_covariates": ["temp"],
                 "calendar": ["dayofweek"], **data},
        "train": {"steps": 30, "batch_size": 8, "lr": 5e-3, "eval_every": 15, "progress": False,
                  "num_threads": 1}})


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "series.csv"
    table().to_csv(path, index=False)
    return path


def source(cfg: RunConfig) -> SeriesSource:
    objective = OBJECTIVES.get("forecast").cls(cfg)
    objective.prepare(None)
    return objective.source


def test_windows_follow_the_split_and_the_step(tmp_path):
    n, held = 60, 2 * H
    df = table()
    df["y"] = df.groupby("id").cumcount().astype(float)  # the target is the step's index
    df.to_csv(tmp_path / "steps.csv", index=False)
    src = source(config(tmp_path / "steps.csv", test_steps=H, scaling="none"))
    assert src.train_end.tolist() == [n - held] * 3
    assert src.train_windows.tolist() == [n - held - (C + H) + 1] * 3
    seen = set()
    for step in range(100):
        batch = src.train_batch(step, 0)
        assert torch.equal(batch.inputs, src.train_batch(step, 0).inputs)  # a pure function
        ends = batch.targets[:, -1, 0]
        assert (ends < n - held).all()  # every training horizon ends inside the training split
        seen.update(ends.long().tolist())
    assert seen == set(range(C + H - 1, n - held))  # ... and every end is drawn
    assert not torch.equal(src.train_batch(0, 0).inputs, src.train_batch(1, 0).inputs)
    val, test = src.val_windows, src.test_windows
    assert (val.end == n - H).all() and sorted(val.series.tolist()) == [0, 1, 2]
    assert (test.end == n).all()
    for batch in src.eval_sets()["val"]():
        assert batch.targets[:, :, 0].tolist() == [list(range(n - 2 * H, n - H))] * 3


def test_a_window_carries_the_documented_features(csv):
    cfg = config(csv)
    src = source(cfg)
    data, st = src.data, src.stats
    batch = src.batch(data, Windows(np.array([1]), np.array([40])), src.train_scale)
    x = batch.inputs[0].numpy()  # (C + H, F)
    assert x.shape == (C + H, src.input_dim) == (C + H, 1 + 1 + 1 + 1 + 2)
    y = data.target[data.rows(1)][40 - C - H:40, 0]
    loc, scale = src.train_scale[0][1, 0], src.train_scale[1][1, 0]
    np.testing.assert_allclose(x[:C, 0], (y[:C] - loc) / scale, rtol=1e-5)
    assert (x[C:, 0] == 0).all() and (x[:C, 1] == 1).all() and (x[C:, 1] == 0).all()
    temp = data.past[data.rows(1)][40 - C - H:40, 0]
    np.testing.assert_allclose(x[:C, 2], (temp[:C] - st["past"]["mean"][0]) / st["past"]["std"][0],
                               rtol=1e-5)
    assert (x[C:, 2] == 0).all()  # past covariates are unknown in the horizon
    promo = data.future[data.rows(1)][40 - C - H:40, 0]
    np.testing.assert_allclose(x[:, 3], (promo - st["future"]["mean"][0]) / st["future"]["std"][0],
                               rtol=1e-5)  # ... future covariates are known
    np.testing.assert_allclose(batch.targets[0, :, 0].numpy(), (y[C:] - loc) / scale, rtol=1e-5)
    # scale statistics come from the training split only
    train = data.target[data.rows(1)][:int(src.train_end[1]), 0]
    assert loc == pytest.approx(train.mean(), rel=1e-5)


def test_window_scaling_uses_each_windows_context(csv):
    src = source(config(csv, scale_by="window"))
    data = src.data
    batch = src.batch(data, Windows(np.array([0, 2]), np.array([30, 50])), src.train_scale)
    for b, (s, e) in enumerate([(0, 30), (2, 50)]):
        context = data.target[data.rows(s)][e - C - H:e - H, 0]
        assert float(batch.extras["loc"][b, 0]) == pytest.approx(context.mean(), rel=1e-5)
        assert float(batch.extras["scale"][b, 0]) == pytest.approx(context.std(), rel=1e-4)
        np.testing.assert_allclose(batch.inputs[b, :C, 0].numpy(),
                                   (context - context.mean()) / context.std(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="scale_by must be series or window"):
        config(csv, scale_by="batch")


def test_metrics_equal_a_numpy_reference():
    torch.manual_seed(0)
    head = ForecastHead(8, H, 1, loss="normal")
    params = torch.randn(5, H, 1, 2)
    loc, scale = torch.randn(5, 1), torch.rand(5, 1) + 0.5
    naive = torch.rand(5, 1) + 0.2
    y_scaled = torch.randn(5, H, 1)
    batch = seqlab.data.Batch(torch.zeros(5, C + H, 1), y_scaled, None,
                              {"loc": loc, "scale": scale, "naive": naive})
    metric = ForecastMetric(head, [80.0], lambda result, b: (
        HeadPredictive(head, result.outputs, loc, scale), b.targets, b.inputs[:, :C, 0]))
    metric.update(LossSum(torch.tensor(0.0), 1, params), batch)
    out = metric.compute()
    y = (y_scaled * scale[:, None] + loc[:, None]).numpy()[..., 0]
    point = (params[..., 0] * scale[:, None] + loc[:, None]).numpy()[..., 0]
    e = point - y
    assert out["mae"] == pytest.approx(np.abs(e).mean(), rel=1e-5)
    assert out["rmse"] == pytest.approx(np.sqrt((e ** 2).mean()), rel=1e-5)
    assert out["mase"] == pytest.approx((np.abs(e) / naive.numpy()).mean(), rel=1e-5)
    assert out["smape"] == pytest.approx(100 * (2 * np.abs(e) / (np.abs(point) + np.abs(y))).mean(),
                                         rel=1e-5)
    sigma = (torch.nn.functional.softplus(params[..., 1]) + 1e-3) * scale[:, None]
    lo = torch.distributions.Normal(torch.from_numpy(point), sigma[..., 0]).icdf(torch.tensor(0.1))
    hi = torch.distributions.Normal(torch.from_numpy(point), sigma[..., 0]).icdf(torch.tensor(0.9))
    inside = ((torch.from_numpy(y) >= lo) & (torch.from_numpy(y) <= hi)).float().mean()
    assert out["coverage_80"] == pytest.approx(100 * float(inside))


def test_a_forecaster_fits_predicts_saves_and_loads(tmp_path):
    df = table()
    f = seqlab.Forecaster("gru", context=C, horizon=H, id="id", future_covariates=["promo"],
                          calendar=["dayofweek"], steps=60, lr=5e-3, batch_size=8,
                          d_model=16, n_layers=1, run_dir=tmp_path / "run",
                          **{"train.num_threads": 1})
    future = pd.DataFrame({"ds": np.tile(pd.date_range("2022-03-02", periods=H), 3),
                           "id": np.repeat(["s0", "s1", "s2"], H), "promo": 0.0})
    f.fit(df)
    assert f.metrics["mase"] < 1.5  # far better than chance; a seasonal series, 60 steps
    out = f.predict(future=future)
    assert list(out.columns) == ["id", "ds", "y", "y-lo-80", "y-hi-80", "y-lo-95", "y-hi-95"]
    assert len(out) == 3 * H and (out["ds"].iloc[:H] == future["ds"].iloc[:H]).all()
    assert (out["y-lo-95"] <= out["y-lo-80"]).all() and (out["y-lo-80"] <= out["y"]).all()
    assert (out["y"] <= out["y-hi-80"]).all() and (out["y-hi-80"] <= out["y-hi-95"]).all()
    means = out.groupby("id")["y"].mean()  # forecasts are in each series' own units
    assert means["s0"] < means["s1"] < means["s2"]
    plots = tmp_path / "run" / "plots"
    assert (plots / "forecast.png").stat().st_size > 1000
    assert (plots / "errors_by_step.png").stat().st_size > 1000
    f.save(tmp_path / "saved")
    loaded = seqlab.load(tmp_path / "saved")
    pd.testing.assert_frame_equal(loaded.predict(df, future), out)
    again = seqlab.Forecaster.load(tmp_path / "saved").predict(df, future)
    pd.testing.assert_frame_equal(again, out)
    assert loaded.evaluate()["mae"] == pytest.approx(f.metrics["mae"], rel=1e-5)
    n = loaded.predict_file(df, tmp_path / "f.csv", future=future)
    assert n == 3 * H and len(pd.read_csv(tmp_path / "f.csv")) == 3 * H

    with pytest.raises(DataError, match=r"known-future covariates \(promo\)"):
        loaded.predict(df)
    with pytest.raises(DataError, match=r"series 's1' has no future covariates for 2022-03-02"):
        loaded.predict(df, future[future["id"] != "s1"])
    with pytest.raises(DataError, match=r"future covariate 'promo' is missing"):
        loaded.predict(df, future.assign(promo=np.nan))
    with pytest.raises(DataError, match=r"no column\(s\) 'promo'"):
        loaded.predict(df.drop(columns=["promo"]), future)
    with pytest.raises(DataError, match=r"series shorter than 12 steps"):
        loaded.predict(df.groupby("id").head(5), future)


def test_bad_configs_are_named(csv):
    with pytest.raises(ConfigError, match=r"context 12 \+ horizon 4 = 16 positions"):
        config(csv).replace(["model.context_length=10"])
    with pytest.raises(ConfigError, match="negbin models counts"):
        config(csv).replace(["task_options.loss=negbin"])
    with pytest.raises(ConfigError, match="val_steps .* must be >= the horizon"):
        config(csv, val_steps=2)
    with pytest.raises(DataError, match="series shorter than"):
        source(config(csv, val_steps=40, test_steps=20))


def test_a_run_on_an_integer_time_column_reloads_and_backtests(tmp_path):
    from seqlab.tasks.backtest import backtest

    df = pd.DataFrame({"year": np.arange(1871, 1971),
                       "y": np.random.default_rng(0).normal(size=100).cumsum()})
    f = seqlab.Forecaster("gru", time="year", context=C, horizon=H, steps=4, d_model=8,
                          n_layers=1, run_dir=tmp_path / "run", **{"train.num_threads": 1})
    f.fit(df, val_steps=12)
    loaded = seqlab.load(tmp_path / "run")  # its step (1) read back as a step, not an offset
    out = loaded.predict(df)
    assert out["year"].tolist() == list(range(1971, 1971 + H))
    assert np.isfinite(backtest({"m": loaded, "naive": "naive"}, df, windows=2)["m"]["mase"])


@pytest.mark.parametrize("how", ["standard", "mean_abs", "last", "none"])
def test_target_scales_of_a_batch_equal_each_windows(how):
    from seqlab.data.series_source import target_scale

    rng = np.random.default_rng(0)
    v = rng.normal(size=(4, 20, 2)).astype(np.float32)
    v[1, 19, 0] = v[3, 5, 1] = np.nan
    v[2, :, 1] = np.nan  # an empty column: origin 0, unit 1
    loc, scale = target_scale(v, how)
    for b in range(4):
        one = target_scale(v[b], how)
        np.testing.assert_allclose(loc[b], one[0], rtol=1e-6)
        np.testing.assert_allclose(scale[b], one[1], rtol=1e-6)
    assert loc[2, 1] == 0 and scale[2, 1] == 1
    if how == "last":
        assert loc[1, 0] == v[1, 18, 0] and loc[0, 1] == v[0, 19, 1]
        assert scale[0, 0] == pytest.approx(np.abs(np.diff(v[0, :, 0])).mean(), rel=1e-5)
