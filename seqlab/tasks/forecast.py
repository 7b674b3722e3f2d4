"""The ``forecast`` objective: a horizon of future values from a window of the past.

Two strategies (``task_options.strategy``):

- ``direct`` (default): the ``series`` source lays out ``context + horizon`` positions
  (the horizon's targets blanked, its known-future covariates and calendar present), any
  mixer reads them (causal or not), and the forecast head maps each horizon position to
  a point or a distribution per target (``task_options.loss``; see
  ``seqlab.models.forecast_head``).
- ``recursive``: a causal model learns the next step at every position of the window
  (``seqlab.data.series_layout``: position t reads step t - 1's targets; every step is a
  target, teacher-forced), and forecasts by rolling out ``paths`` sample paths through
  its streaming state (``seqlab.tasks.rollout``). Its ``val_loss`` is the next-step
  loss over the window; its metrics score the rolled-out horizon.

The model's ``context_length`` must hold the window.

Metrics, in the series' own units, over every observed value of the evaluated
horizons: MAE, RMSE, MASE (each error over its series' in-sample seasonal-naive MAE,
``data.season``), sMAPE (in percent, 0/0 counted as 0), and for distributions CRPS
(twice the mean pinball loss over the levels 0.05..0.95) and the coverage of the central
intervals at ``task_options.levels`` (percent).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from seqlab.data.series_layout import lag_targets
from seqlab.errors import ConfigError
from seqlab.models.forecast_head import (CRPS_LEVELS, DEFAULT_QUANTILES, N_PARAMS, ForecastHead,
                                         check_quantiles, crps_from_quantiles, interval_levels)
from seqlab.plots import plot_errors_by_step, plot_forecasts
from seqlab.tasks.base import Metric, Objective, register_objective
from seqlab.tasks.calibration import CalibratedPredictive
from seqlab.tasks.forecast_predict import ForecastPipeline
from seqlab.tasks.rollout import HeadPredictive, SamplePredictive, rollout

STRATEGIES = ("direct", "recursive")


@dataclass
class ForecastOptions:
    """``loss``: ``normal`` (default), ``student_t``, ``negbin`` (counts), ``quantile``,
    ``mse`` or ``mae``. ``quantiles``: the levels a ``quantile`` loss learns. ``levels``:
    the central prediction intervals reported, in percent. ``samples``: draws per
    forecast where quantiles come from sampling (``student_t``, ``negbin``). ``strategy``:
    ``direct`` or ``recursive`` (see the module docstring); ``paths``: the sample paths a
    recursive forecast rolls out. ``calibrate``: rescale a trained run's intervals on its
    validation split (``seqlab.tasks.calibration``)."""

    loss: str = "normal"
    quantiles: list[float] = field(default_factory=lambda: list(DEFAULT_QUANTILES))
    levels: list[float] = field(default_factory=lambda: [80.0, 95.0])
    samples: int = 400
    strategy: str = "direct"
    paths: int = 100
    calibrate: bool = True

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"task_options.strategy must be one of {', '.join(STRATEGIES)}, "
                              f"got {self.strategy!r}")
        if self.paths < 1:
            raise ConfigError(f"task_options.paths must be >= 1, got {self.paths}")
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

    def __init__(self, head: ForecastHead, levels: list[float], forecast):
        """``forecast(result, batch) -> (Predictive, targets (B, H, K) scaled, history
        (B, C) scaled first target)``: the objective's reading of one evaluated batch."""
        self.head, self.levels, self.forecast = head, levels, forecast
        self.sums = {k: 0.0 for k in ("abs", "sq", "mase", "smape", "crps")}
        self.n = self.n_mase = 0
        self.covered = [0.0] * len(levels)
        self.by_step = torch.zeros(head.horizon, dtype=torch.float64)  # summed |error| per step
        self.n_step = torch.zeros(head.horizon, dtype=torch.float64)
        self.panels: list[dict] = []  # the first few windows, for the forecast plot

    def update(self, result, batch) -> None:
        ex = batch.extras
        predictive, targets, history = self.forecast(result, batch)
        loc, scale = ex["loc"].float(), ex["scale"].float()
        y = targets.float() * scale[:, None] + loc[:, None]  # (B, H, K)
        seen = torch.isfinite(y)
        point = predictive.point
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
            q = predictive.quantiles(list(CRPS_LEVELS) + interval_levels(self.levels))
            bands = [(level, q[..., c + 2 * i], q[..., c + 2 * i + 1])
                     for i, level in enumerate(self.levels)]
        for b in range(min(PANELS - len(self.panels), y.shape[0])):
            self.panels.append({
                "name": f"window {int(batch.index[b]) if batch.index is not None else b}",
                "history": (history[b].float() * scale[b, 0] + loc[b, 0]).tolist(),
                "actual": y[b, :, 0].tolist(),
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
    calibration: dict | None = None  # interval factors of a calibrated run (its pipeline's)

    def items(self, batch) -> int:
        return batch.size  # throughput counts windows, not their steps

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
        if options.strategy == "recursive":
            if patch != 1:
                raise ConfigError(f"task_options.strategy recursive forecasts one step per "
                                  f"position; model.patch must be 1, got {patch}")
            if not config.model.causal:
                raise ConfigError("task_options.strategy recursive rolls a next-step model "
                                  "forward through its state; it needs model.causal: true")
        if options.loss == "negbin" and data.scaling in ("standard", "last"):
            raise ConfigError(f"task_options.loss negbin models counts, which a {data.scaling} "
                              "scaling would shift; set data.scaling to mean_abs (or none)")

    def build_head(self, backbone) -> ForecastHead:
        o = self.options
        return ForecastHead(self.config.model.d_model, self.config.data.horizon,
                            len(self.config.data.target), loss=o.loss, quantiles=o.quantiles,
                            samples=o.samples, patch=self.config.model.patch,
                            every_position=self.recursive)


    @property
    def recursive(self) -> bool:
        return self.options.strategy == "recursive"

    def transform(self, batch, *, key):
        if not self.recursive:
            return batch
        return lag_targets(batch, context=self.config.data.context,
                           n_targets=len(self.config.data.target),
                           masked=self.config.data.missing == "mask")

    def predictive(self, model, batch, params=None):
        """The forecast of a (transformed) batch's horizons: a ``HeadPredictive`` of the
        direct head's ``params`` (computed when not given), or the ``SamplePredictive``
        of a recursive rollout."""
        loc, scale = batch.extras["loc"], batch.extras["scale"]
        generator = torch.Generator(device=batch.inputs.device).manual_seed(0)
        if not self.recursive:
            if params is None:
                params = model(batch.inputs).logits
            out = HeadPredictive(model.head, params, loc, scale, generator=generator)
        else:
            d = self.config.data
            paths = rollout(model, batch.inputs, context=d.context, horizon=d.horizon,
                            n_targets=len(d.target), masked=d.missing == "mask", loc=loc,
                            scale=scale, paths=self.options.paths, generator=generator)
            out = SamplePredictive(paths, median=self.options.loss in ("mae", "quantile"))
        if self.calibration is not None and model.head.probabilistic:
            out = CalibratedPredictive(out, self.calibration)
        return out

    def horizon_targets(self, batch):
        """(B, H, K) scaled targets of a (transformed) batch's horizons."""
        return batch.targets[:, self.config.data.context:] if self.recursive else batch.targets

    def _evaluated(self, result, batch):
        """What the metric reads of one evaluated batch (see ``ForecastMetric``)."""
        C = self.config.data.context
        if not self.recursive:
            return (self.predictive(self._model, batch, result.outputs),
                    self.horizon_targets(batch), batch.inputs[:, :C, 0])
        return (self.predictive(self._model, batch), self.horizon_targets(batch),
                batch.inputs[:, 1:C + 1, 0])

    def metric(self) -> ForecastMetric:
        return ForecastMetric(self._model.head, self.options.levels, self._evaluated)

    def build_model(self):
        self._model = super().build_model()
        return self._model

    def evaluate_batches(self, model, batches, *, name="val"):
        self._model = getattr(model, "module", model)  # (DDP wraps the model)
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
