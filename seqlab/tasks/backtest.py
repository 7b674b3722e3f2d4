"""Rolling-origin backtests of forecast runs and of the classic baselines, on one table.

``backtest(forecasters, data, windows=N)`` cuts every series at N origins, one horizon
apart, the last one a horizon before its end; at each origin every forecaster sees the
history up to it (never after) and forecasts the next horizon, which is scored against
what happened. A forecaster is a trained run (its pipeline: no refit, the same weights
at every origin) or a baseline name:

- ``naive``: the last value; ``seasonal_naive``: the value one season earlier;
- ``mean``: the mean of the history; ``drift``: the line through the first and last values;

each with Gaussian intervals from the spread of its own one-step in-sample errors, widened
with the horizon as Hyndman & Athanasopoulos (Forecasting: Principles and Practice, 3rd
ed., section 5.5) derive for each method; and ``auto_ets`` and ``auto_arima``, statsforecast's
AutoETS and AutoARIMA (the ``forecast`` extra) fitted on each history with its season,
their intervals their own. Scores per forecaster: MAE, RMSE, MASE (scaled
by the in-sample seasonal-naive MAE of each history), sMAPE (percent), CRPS (twice the
mean pinball loss over the levels 0.05..0.95), the coverage of each central interval, and
``mae_by_step``, the MAE at each step ahead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from seqlab.data.series_source import Windows
from seqlab.errors import ConfigError, DataError
from seqlab.models.forecast_head import CRPS_LEVELS, interval_levels

BASELINES = ("naive", "seasonal_naive", "mean", "drift", "auto_ets", "auto_arima")


@dataclass
class Cuts:
    """The backtest's windows: per window its series and origin (rows before it are the
    history), and the truth after it, (W, H, K)."""

    windows: Windows
    truth: np.ndarray


def cut(data, horizon: int, n_windows: int, min_history: int) -> Cuts:
    """``n_windows`` origins per series, one horizon apart, the last a horizon before its
    end; origins leaving less than ``min_history`` rows of history are dropped."""
    if n_windows < 1:
        raise ConfigError(f"a backtest needs at least one window, got {n_windows}")
    series, origins = [], []
    for i, n in enumerate(data.lengths()):
        for j in range(n_windows, 0, -1):
            origin = int(n) - j * horizon
            if origin >= min_history:
                series.append(i)
                origins.append(origin)
    if not series:
        raise DataError(f"{data.source}: no series is long enough for a backtest window "
                        f"(history of {min_history} + horizon {horizon})")
    series, origins = np.array(series), np.array(origins)
    rows = data.offsets[series][:, None] + origins[:, None] + np.arange(horizon)
    return Cuts(Windows(series, origins + horizon), data.target[rows])


def baseline_forecast(method: str, history: np.ndarray, horizon: int, season: int,
                      levels: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Point forecast (H, K) and quantiles (H, K, Q) at ``levels`` (probabilities) of a
    baseline on ``history`` (T, K)."""
    if method not in BASELINES:
        raise ConfigError(f"unknown baseline {method!r}; valid: {', '.join(BASELINES)}")
    if method in ("auto_ets", "auto_arima"):
        return _statsforecast(method, history, horizon, season, levels)
    T = len(history)
    h = np.arange(1, horizon + 1)[:, None]  # (H, 1)
    m = season if T > season else 1
    if method == "naive":
        point = np.repeat(history[-1:], horizon, 0)
        resid, widen = history[1:] - history[:-1], np.sqrt(h)
    elif method == "seasonal_naive":
        point = history[T - m + (h[:, 0] - 1) % m]
        resid = history[m:] - history[:-m]
        widen = np.sqrt((h - 1) // m + 1)
    elif method == "mean":
        point = np.repeat(np.nanmean(history, 0, keepdims=True), horizon, 0)
        resid = history - np.nanmean(history, 0)
        widen = np.full_like(h, math.sqrt(1 + 1 / max(T, 1)), dtype=float)
    else:  # drift
        slope = (history[-1] - history[0]) / max(T - 1, 1)
        point = history[-1] + h * slope
        resid = history[1:] - history[:-1] - slope
        widen = np.sqrt(h * (1 + h / max(T - 1, 1)))
    with np.errstate(all="ignore"):
        sigma = np.sqrt(np.nanmean(resid ** 2, 0)) if len(resid) else np.zeros(history.shape[1])
    sigma = np.nan_to_num(sigma)
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(levels, dtype=torch.float64)).numpy()
    quantiles = point[..., None] + (widen * sigma)[..., None] * z  # (H, K, Q)
    return point, quantiles


def _statsforecast(method: str, history: np.ndarray, horizon: int, season: int,
                   levels: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """AutoETS / AutoARIMA per target column; quantile p is the bound of the central
    interval of width |1 - 2p| (the mean at p = 0.5)."""
    try:
        from statsforecast.models import AutoARIMA, AutoETS
    except ImportError:
        raise ConfigError(f"baseline {method} needs statsforecast: pip install "
                          "'seqlab[forecast]'") from None
    widths = sorted({round(abs(1 - 2 * p) * 100, 6) for p in levels if abs(p - 0.5) > 1e-9})
    points, quantiles = [], []
    for k in range(history.shape[1]):
        y = history[:, k].astype(np.float64)
        y = y[np.isfinite(y)]
        model = (AutoETS if method == "auto_ets" else AutoARIMA)(season_length=max(season, 1))
        out = model.forecast(y=y, h=horizon, level=widths)
        points.append(out["mean"])
        columns = []
        for p in levels:
            width = round(abs(1 - 2 * p) * 100, 6)
            columns.append(out["mean"] if abs(p - 0.5) <= 1e-9 else
                           out[f"{'lo' if p < 0.5 else 'hi'}-{width}"])
        quantiles.append(np.stack(columns, -1))
    return np.stack(points, -1), np.stack(quantiles, 1)


def score(point: np.ndarray, quantiles: np.ndarray, truth: np.ndarray, naive: np.ndarray,
          levels: list[float]) -> dict[str, float]:
    """The backtest metrics of (W, H, K) points and (W, H, K, Q) quantiles (at
    ``CRPS_LEVELS`` then the interval bounds of ``levels``) against ``truth``; ``naive``:
    (W, K) MASE denominators."""
    seen = np.isfinite(truth)
    y = np.where(seen, truth, 0.0)
    error = np.where(seen, point - y, 0.0)
    n = max(int(seen.sum()), 1)
    scale = np.broadcast_to(naive[:, None, :], y.shape)
    ok = seen & np.isfinite(scale) & (scale > 0)
    denominator = np.abs(point) + np.abs(y)
    with np.errstate(all="ignore"):
        ratio = np.where(denominator > 0, 2 * np.abs(error) / denominator, 0.0)
        out = {"mae": np.abs(error).sum() / n, "rmse": math.sqrt((error ** 2).sum() / n),
               "mase": float((np.abs(error)[ok] / scale[ok]).mean()) if ok.any() else float("nan"),
               "smape": 100 * ratio[seen].sum() / n}
    per_step = np.abs(error).sum((0, 2)) / np.maximum(seen.sum((0, 2)), 1)
    c = len(CRPS_LEVELS)
    if np.isnan(quantiles).all():  # a point forecaster: no CRPS, no intervals
        out.update({"crps": float("nan"), **{f"coverage_{v:g}": float("nan") for v in levels}})
        return {**{k: float(v) for k, v in out.items()}, "mae_by_step": per_step.tolist()}
    tau = np.array(CRPS_LEVELS)
    e = y[..., None] - quantiles[..., :c]
    crps = 2 * np.maximum(tau * e, (tau - 1) * e).mean(-1)
    out["crps"] = float(crps[seen].sum() / n)
    for i, level in enumerate(levels):
        lo, hi = quantiles[..., c + 2 * i], quantiles[..., c + 2 * i + 1]
        out[f"coverage_{level:g}"] = 100 * float(((y >= lo) & (y <= hi) & seen).sum()) / n
    return {**{k: float(v) for k, v in out.items()}, "mae_by_step": per_step.tolist()}


def _model_forecasts(pipeline, data, cuts: Cuts, probabilities: list[float],
                     batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A trained run's points and quantiles at every cut (the same weights each time)."""
    objective, model = pipeline.objective, pipeline.model
    pipeline.calibrate()
    source = objective.source
    ends = cuts.windows.end - source.options.horizon  # origins
    points, quantiles = [], []
    with torch.no_grad():
        for start in range(0, len(ends), batch_size):
            pick = np.arange(start, min(start + batch_size, len(ends)))
            windows = Windows(cuts.windows.series[pick], cuts.windows.end[pick])
            # each window's scale from its own history: rows before its origin
            sub = source.scales(data, ends[pick], windows.series)
            batch = source.batch(data, windows, sub, index=pick,
                                 scale_index=np.arange(len(pick))).to(pipeline.device)
            forecast = objective.predictive(model, objective.transform(batch, key=(2, start)))
            point = forecast.point.cpu().numpy()
            points.append(point)
            quantiles.append(forecast.quantiles(probabilities).cpu().numpy()
                             if model.head.probabilistic else  # points only: NaN quantiles
                             np.full((*point.shape, len(probabilities)), np.nan))
    return np.concatenate(points), np.concatenate(quantiles)


def backtest(forecasters: dict, data, *, windows: int = 3, levels=(80, 95)) -> dict[str, dict]:
    """Scores of every forecaster on the same rolling-origin windows of ``data``.

    Args:
        forecasters: name -> a forecast run's pipeline (``seqlab.load``), or a baseline
            name (``naive``, ``seasonal_naive``, ``mean``, ``drift``); at least one
            pipeline (it says how to read ``data``: columns, horizon, season).
        data: a table of series (DataFrame or file), read as the runs read theirs.
        windows: origins per series, one horizon apart.
        levels: central intervals scored, in percent.

    Returns:
        name -> metrics (see the module docstring), plus ``windows``: how many were scored.
    """
    pipelines = {k: v for k, v in forecasters.items() if not isinstance(v, str)}
    if not pipelines:
        raise ConfigError("backtest needs at least one trained forecast run")
    first = next(iter(pipelines.values()))
    source = first.objective.source
    o = source.options
    series = source._read(data)
    cuts = cut(series, o.horizon, windows, o.context)
    levels = [float(v) for v in levels]
    probabilities = list(CRPS_LEVELS) + interval_levels(levels)
    origins = cuts.windows.end - o.horizon
    naive = source.scales(series, origins, cuts.windows.series)[2]
    out = {}
    for name, forecaster in forecasters.items():
        if isinstance(forecaster, str):
            points, quants = [], []
            for s, origin in zip(cuts.windows.series, origins):
                base = int(series.offsets[s])
                p, q = baseline_forecast(forecaster, series.target[base:base + origin], o.horizon,
                                         int(source.stats["season"]), probabilities)
                points.append(p)
                quants.append(q)
            point, quantiles = np.stack(points), np.stack(quants)
        else:
            if forecaster.config.data.horizon != o.horizon:
                raise ConfigError(f"backtest: run {name!r} forecasts {forecaster.config.data.horizon} "
                                  f"steps, the first run {o.horizon}; compare runs of one horizon")
            point, quantiles = _model_forecasts(forecaster, series, cuts, probabilities)
        out[name] = {**score(point, quantiles, cuts.truth, naive, levels),
                     "windows": len(origins)}
    return out


def merge_scores(parts: list[dict[str, dict]]) -> dict[str, dict]:
    """Several backtests' scores as one, each metric weighted by its windows (RMSE
    through its mean square)."""
    out = {}
    for name in parts[0]:
        n = sum(p[name]["windows"] for p in parts)
        merged = {}
        for metric in parts[0][name]:
            if metric == "windows":
                continue
            if metric == "mae_by_step":
                merged[metric] = (np.sum([np.array(p[name][metric]) * p[name]["windows"]
                                          for p in parts], 0) / n).tolist()
                continue
            if metric == "rmse":
                merged[metric] = math.sqrt(sum(p[name][metric] ** 2 * p[name]["windows"]
                                               for p in parts) / n)
            else:
                merged[metric] = sum(p[name][metric] * p[name]["windows"] for p in parts) / n
        out[name] = {**merged, "windows": n}
    return out


def leaderboard(results: dict[str, dict], by: str = "mase") -> str:
    """A Markdown table of backtest results, best ``by`` first."""
    names = sorted(results, key=lambda n: results[n].get(by, float("inf")))
    columns = [c for c in next(iter(results.values())) if c not in ("windows", "mae_by_step")]
    lines = ["| forecaster | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{results[name][c]:.4g}" for c in columns) + " |")
    return "\n".join(lines)


__all__ = ["BASELINES", "backtest", "baseline_forecast", "cut", "leaderboard", "merge_scores",
           "score"]
