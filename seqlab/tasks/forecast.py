"""The ``forecast`` objective: a horizon of future values from a window of the past.

Direct multi-horizon forecasting: the ``series`` source lays out ``context + horizon``
positions (the horizon's targets blanked, its known-future covariates and calendar
present), any mixer reads them (causal or not), and the forecast head maps each horizon
position to a point or a distribution per target (``task_options.loss``; see
``seqlab.models.forecast_head``). The model's ``context_length`` must hold the window.

Metrics, in the series' own units, over every observed value of the evaluated
horizons: MAE, RMSE, MASE (each error over its series' in-sample seasonal-naive MAE,
``data.season``), sMAPE (in percent, 0/0 counted as 0), and for distributions CRPS
(twice the mean pinball loss over the levels 0.05..0.95) and the coverage of the central
intervals at ``task_options.levels`` (percent).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from seqlab.errors import ConfigError
from seqlab.models.forecast_head import (CRPS_LEVELS, DEFAULT_QUANTILES, N_PARAMS, ForecastHead,
                                         check_quantiles, crps_from_quantiles, interval_levels)
from seqlab.plots import plot_errors_by_step, plot_forecasts
from seqlab.tasks.base import Metric, Objective, register_objective
from seqlab.tasks.forecast_predict import ForecastPipeline


@dataclass
class ForecastOptions:
    """``loss``: ``normal`` (default), ``student_t``, ``negbin`` (counts), ``quantile``,
    ``mse`` or ``mae``. ``quantiles``: the levels a ``quantile`` loss learns. ``levels``:
    the central prediction intervals reported, in percent. ``samples``: draws per
    forecast where quantiles come from sampling (``student_t``, ``negbin``)."""

    loss: str = "normal"
    quantiles: list[float] = field(default_factory=lambda: list(DEFAULT_QUANTILES))
    levels: list[float] = field(default_factory=lambda: [80.0, 95.0])
    samples: int = 400

    def __post_init__(self):
        if self.loss not in N_PARAMS:
            raise ConfigError(f"task_options.loss must be one of {', '.join(N_PARAMS)}, got "
                              f"{self.loss!r}")
        self.quantiles = list(check_quantiles(self.quantiles))
        bad = [v for v in self.levels if not 0 < float(v) < 100]
        if bad:
            raise ConfigError(f"task_options.levels are interval widths in percent, in (0, 100); "
                              f"got {bad}")
        self.levels = [float(v) for v in self.levels]
        if self.samples < 10:
            raise ConfigError(f"task_options.samples must be >= 10, got {self.samples}")


class ForecastMetric(Metric):
    """Accumulates the forecast metrics (see the module docstring)."""

    directions = {"mae": "min", "rmse": "min", "mase": "min", "smape": "min", "crps": "min"}

    def __init__(self, head: ForecastHead, levels: list[float]):
        self.head, self.levels = head, levels
        self.sums = {k: 0.0 for k in ("abs", "sq", "mase", "smape", "crps")}
        self.n = self.n_mase = 0
        self.covered = [0.0] * len(levels)
        self.by_step = torch.zeros(head.horizon, dtype=torch.float64)  # summed |error| per step
        self.n_step = torch.zeros(head.horizon, dtype=torch.float64)
        self.panels: list[dict] = []  # the first few windows, for the forecast plot

    def update(self, result, batch) -> None:
        params, ex = result.outputs, batch.extras
        loc, scale = ex["loc"].float(), ex["scale"].float()
        y = batch.targets.float() * scale[:, None] + loc[:, None]  # (B, H, K)
        seen = torch.isfinite(y)
        point = self.head.point(params, loc, scale)
        error = torch.where(seen, point - y, torch.zeros(()))
        self.sums["abs"] += float(error.abs().sum())
        self.sums["sq"] += float(error.square().sum())
        self.n += int(seen.sum())
        naive = ex["naive"][:, None, :].expand_as(y)
        scaled = seen & torch.isfinite(naive)
        self.sums["mase"] += float((error.abs() / naive)[scaled].sum())
        self.n_mase += int(scaled.sum())
        denominator = point.abs() + y.abs()
        ratio = torch.where(denominator > 0, 2 * error.abs() / denominator, torch.zeros(()))
        self.sums["smape"] += float(ratio[seen].sum())
        self.by_step += error.abs().sum((0, 2)).double()
        self.n_step += seen.sum((0, 2)).double()
        c = len(CRPS_LEVELS)
        q, bands = None, []
        if self.head.probabilistic:  # (B, H, K, Q): the CRPS levels, then each interval's bounds
            q = self.head.quantiles(params, list(CRPS_LEVELS) + interval_levels(self.levels),
                                    loc, scale, generator=torch.Generator().manual_seed(0))
            bands = [(level, q[..., c + 2 * i], q[..., c + 2 * i + 1])
                     for i, level in enumerate(self.levels)]
        for b in range(min(PANELS - len(self.panels), y.shape[0])):
            C = batch.inputs.shape[1] - y.shape[1]
            history = batch.inputs[b, :C, 0].float() * scale[b, 0] + loc[b, 0]
            self.panels.append({
                "name": f"window {int(batch.index[b]) if batch.index is not None else b}",
                "history": history.tolist(), "actual": y[b, :, 0].tolist(),
                "point": point[b, :, 0].tolist(),
                "bands": {lv: (lo[b, :, 0].tolist(), hi[b, :, 0].tolist())
                          for lv, lo, hi in bands}})
        if q is None:
            return
        y0 = torch.where(seen, y, torch.zeros(()))
        crps = crps_from_quantiles(q[..., :c], CRPS_LEVELS, y0)
        self.sums["crps"] += float(crps[seen].sum())
        for i, (_, lo, hi) in enumerate(bands):
            self.covered[i] += float(((y0 >= lo) & (y0 <= hi) & seen).sum())

    def compute(self) -> dict[str, float]:
        n = max(self.n, 1)
        out = {"mae": self.sums["abs"] / n, "rmse": (self.sums["sq"] / n) ** 0.5,
               "smape": 100 * self.sums["smape"] / n}
        if self.n_mase:
            out["mase"] = self.sums["mase"] / self.n_mase
        if self.head.probabilistic:
            out["crps"] = self.sums["crps"] / n
            for level, covered in zip(self.levels, self.covered):
                out[f"coverage_{level:g}"] = 100 * covered / n
        return out

    def mae_by_step(self) -> list[float]:
        """MAE at each horizon step (1 .. H), for the backtest plot."""
        return (self.by_step / self.n_step.clamp(min=1)).tolist()


PANELS = 4  # forecast windows drawn in plots/forecast.png


@register_objective("forecast", ForecastOptions, sources=("series",), label_kind="series")
class Forecast(Objective):
    """Direct multi-horizon forecasting (see the module docstring)."""

    item_name = "windows"

    @classmethod
    def check(cls, config) -> None:
        data, options, patch = config.data, config.task_options, config.model.patch
        if data.context % patch or data.horizon % patch:
            raise ConfigError(f"with model.patch {patch}, data.context ({data.context}) and "
                              f"data.horizon ({data.horizon}) must be multiples of it")
        window = (data.context + data.horizon) // patch
        if config.model.context_length < window:
            raise ConfigError(f"model.context_length is {config.model.context_length}, but a "
                              f"forecast window is context {data.context} + horizon "
                              f"{data.horizon} = {window} positions"
                              + (f" of {patch} steps" if patch > 1 else "")
                              + f"; set model.context_length >= {window}")
        if options.loss == "negbin" and data.scaling == "standard":
            raise ConfigError("task_options.loss negbin models counts, which a standard scaling "
                              "would shift; set data.scaling to mean_abs (or none)")

    def build_head(self, backbone) -> ForecastHead:
        o = self.options
        return ForecastHead(self.config.model.d_model, self.config.data.horizon,
                            len(self.config.data.target), loss=o.loss, quantiles=o.quantiles,
                            samples=o.samples, patch=self.config.model.patch)

    def metric(self) -> ForecastMetric:
        return ForecastMetric(self._head, self.options.levels)

    def build_model(self):
        model = super().build_model()
        self._head = model.head
        return model

    def evaluate_batches(self, model, batches, *, name="val"):
        self._head = getattr(model, "module", model).head  # (DDP wraps the model)
        return super().evaluate_batches(model, batches, name=name)

    def write_plots(self, plots_dir) -> None:
        """``forecast.png``: the first validation windows with their fans and actuals;
        ``errors_by_step.png``: MAE at each step ahead of every evaluated set."""
        val = self.last_metrics.get("val")
        if val is not None:
            plot_forecasts(val.panels, plots_dir / "forecast.png",
                           title=f"forecast: validation ({self.config.data.target[0]})")
        plot_errors_by_step({name: m.mae_by_step() for name, m in self.last_metrics.items()},
                            plots_dir / "errors_by_step.png")

    def pipeline(self, model, run_dir=None) -> ForecastPipeline:
        return ForecastPipeline(self, model, run_dir)

    def selection(self, name: str) -> str:
        directions = {"val_loss": "min", **ForecastMetric.directions}
        if name not in directions:
            raise ConfigError(f"train.best_metric {name!r} is not a metric of forecast; valid: "
                              f"{', '.join(sorted(directions))}")
        return directions[name]


__all__ = ["Forecast", "ForecastMetric", "ForecastOptions"]
