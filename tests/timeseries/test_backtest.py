"""Backtests: the baselines against their formulas, scores against a direct computation,
origins that never let a forecaster see what follows them, refits, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import seqlab
from seqlab.cli import main
from seqlab.errors import ConfigError
from seqlab.models.forecast_head import CRPS_LEVELS, interval_levels
from seqlab.tasks.backtest import backtest, baseline_forecast, leaderboard, merge_scores, score

C, H = 12, 4


def test_baselines_follow_their_formulas():
    history = np.array([[1.0], [3.0], [2.0], [5.0], [4.0], [6.0]])  # T = 6
    z90 = 1.2815515655446004
    point, q = baseline_forecast("naive", history, 3, 2, [0.9])
    assert point[:, 0].tolist() == [6.0, 6.0, 6.0]
    sigma = math.sqrt(np.mean(np.diff(history[:, 0]) ** 2))
    np.testing.assert_allclose(q[:, 0, 0], 6 + z90 * sigma * np.sqrt([1, 2, 3]))
    point, q = baseline_forecast("seasonal_naive", history, 5, 2, [0.9])
    assert point[:, 0].tolist() == [4.0, 6.0, 4.0, 6.0, 4.0]  # the last season, repeated
    sigma = math.sqrt(np.mean((history[2:, 0] - history[:-2, 0]) ** 2))
    np.testing.assert_allclose(q[:, 0, 0] - point[:, 0],
                               z90 * sigma * np.sqrt([1, 1, 2, 2, 3]))
    point, _ = baseline_forecast("mean", history, 2, 2, [0.5])
    assert point[:, 0].tolist() == [3.5, 3.5]
    point, q = baseline_forecast("drift", history, 2, 2, [0.5])
    np.testing.assert_allclose(point[:, 0], [7.0, 8.0])  # slope (6 - 1) / 5
    np.testing.assert_allclose(q[..., 0], point)  # the median is the point
    with pytest.raises(ConfigError, match="unknown baseline 'prophet'"):
        baseline_forecast("prophet", history, 2, 2, [0.5])


def test_scores_equal_a_direct_computation():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(3, H, 1))
    point = truth + rng.normal(0, 0.5, size=truth.shape)
    levels = [80.0]
    probs = list(CRPS_LEVELS) + interval_levels(levels)
    quantiles = point[..., None] + np.linspace(-1, 1, len(probs))  # any increasing set
    quantiles[..., -2], quantiles[..., -1] = point - 0.6, point + 0.6
    naive = np.full((3, 1), 0.8)
    out = score(point, quantiles, truth, naive, levels)
    e = point - truth
    assert out["mae"] == pytest.approx(np.abs(e).mean())
    assert out["rmse"] == pytest.approx(np.sqrt((e ** 2).mean()))
    assert out["mase"] == pytest.approx((np.abs(e) / 0.8).mean())
    assert out["coverage_80"] == pytest.approx(100 * (np.abs(e) <= 0.6).mean())
    np.testing.assert_allclose(out["mae_by_step"], np.abs(e).mean((0, 2)))
    truth[0, 0, 0] = np.nan  # a missing value counts nowhere
    fewer = score(point, quantiles, truth, naive, levels)
    assert fewer["mae"] == pytest.approx(np.abs(e).reshape(-1)[1:].mean())


def test_merged_scores_weigh_by_windows():
    a = {"m": {"mae": 1.0, "rmse": 1.0, "windows": 1}}
    b = {"m": {"mae": 4.0, "rmse": 2.0, "windows": 3}}
    merged = merge_scores([a, b])["m"]
    assert merged["mae"] == pytest.approx(3.25) and merged["windows"] == 4
    assert merged["rmse"] == pytest.approx(math.sqrt((1 + 3 * 4) / 4))
    steps = merge_scores([{"m": {"mae_by_step": [1.0, 2.0], "windows": 1}},
                          {"m": {"mae_by_step": [3.0, 2.0], "windows": 1}}])["m"]["mae_by_step"]
    assert steps == [2.0, 2.0]


def series(n: int = 70) -> pd.DataFrame:
    t = np.arange(n)
    rng = np.random.default_rng(1)
    return pd.concat([pd.DataFrame({"ds": pd.date_range("2020-01-01", periods=n, freq="D"),
                                    "id": f"s{s}", "y": 2 * s + np.sin(2 * np.pi * t / 7)
                                    + rng.normal(0, 0.1, n)}) for s in range(2)],
                     ignore_index=True)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    run = tmp_path_factory.mktemp("bt") / "run"
    f = seqlab.Forecaster("attention", context=C, horizon=H, id="id", steps=40, lr=5e-3,
                          batch_size=8, d_model=16, n_layers=1, run_dir=run,
                          **{"train.num_threads": 1})
    return f.fit(series())


def test_a_backtest_sees_no_value_after_its_origin(fitted):
    df = series()
    base = backtest({"m": fitted.pipeline, "naive": "naive"}, df, windows=2)
    assert base["m"]["windows"] == 4 and set(base) == {"m", "naive"}
    changed = df.copy()
    last = changed.groupby("id").tail(H).index
    changed.loc[last, "y"] += 100.0  # only the last window's truth
    moved = backtest({"m": fitted.pipeline, "naive": "naive"}, changed, windows=1)
    plain = backtest({"m": fitted.pipeline, "naive": "naive"}, df, windows=1)
    # the forecasts are the same; only their errors grew, by about the shift
    for name in ("m", "naive"):
        assert moved[name]["mae"] == pytest.approx(plain[name]["mae"] + 100, abs=2 * plain[name]["mae"])
    assert "| m |" in leaderboard(base) or "| naive |" in leaderboard(base)
    with pytest.raises(ConfigError, match="at least one trained forecast run"):
        backtest({"naive": "naive"}, df)


def test_a_point_forecaster_backtests_without_intervals(tmp_path):
    f = seqlab.Forecaster("gru", context=C, horizon=H, id="id", loss="mae", steps=4,
                          d_model=8, n_layers=1, run_dir=tmp_path / "run",
                          **{"train.num_threads": 1}).fit(series())
    scores = backtest({"m": f.pipeline, "naive": "naive"}, series(), windows=2)
    assert np.isfinite(scores["m"]["mase"]) and math.isnan(scores["m"]["crps"])
    assert math.isnan(scores["m"]["coverage_80"]) and np.isfinite(scores["naive"]["crps"])


def test_refit_trains_at_every_origin(fitted):
    scores = fitted.backtest(windows=2, refit=True, baselines=("seasonal_naive",))
    assert scores["model"]["windows"] == 4 and scores["seasonal_naive"]["windows"] == 4
    plain = fitted.backtest(windows=2, baselines=("seasonal_naive",))
    assert scores["seasonal_naive"]["mae"] == pytest.approx(plain["seasonal_naive"]["mae"])


def test_cli_predict_and_backtest(fitted, tmp_path, capsys):
    path = tmp_path / "s.csv"
    series().to_csv(path, index=False)
    run = str(fitted.run_dir)
    assert main(["predict", run, "--data", str(path), "--out", str(tmp_path / "f.csv"), "-q"]) == 0
    assert len(pd.read_csv(tmp_path / "f.csv")) == 2 * H
    assert main(["backtest", run, "--data", str(path), "--windows", "2", "--baselines", "mean",
                 "--out", str(tmp_path / "scores.json"), "-q"]) == 0
    assert "| mean |" in capsys.readouterr().out
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert set(scores) == {"model", "mean"} and len(scores["mean"]["mae_by_step"]) == H
    assert (fitted.run_dir / "plots" / "backtest_errors.png").stat().st_size > 1000


@pytest.mark.slow
def test_statsforecast_baselines_give_ordered_intervals():
    pytest.importorskip("statsforecast")
    t = np.arange(80)
    history = (np.sin(2 * np.pi * t / 12) + 0.01 * t)[:, None]
    for method in ("auto_ets", "auto_arima"):
        point, q = baseline_forecast(method, history, 6, 12, [0.1, 0.5, 0.9])
        assert point.shape == (6, 1) and np.isfinite(q).all()
        assert (q[..., 0] <= q[..., 1]).all() and (q[..., 1] <= q[..., 2]).all()
        np.testing.assert_allclose(q[..., 1], point)
