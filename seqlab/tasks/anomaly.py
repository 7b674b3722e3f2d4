"""The ``anomaly`` objective: score every step of a series by how badly a next-step
model predicted it, and flag the steps whose score passes a threshold.

Training is the forecast objective's ``recursive`` strategy (a causal next-step model
over ``series`` windows, see ``seqlab.tasks.forecast``); its validation metrics are the
forecast metrics of its rolled-out horizon. Scoring (``AnomalyPipeline.score``, the
streaming ``AnomalyStream``) runs each series through the model's streaming state, one
chunk of steps at a time: step t's score is

    |y_t - point_t| / spread_t    (root mean square over targets)

where the point and spread are the model's forecast of step t from the steps before
it: the spread is the predictive standard deviation (``normal``, ``student_t``) or the
series' scale (``mse``, ``mae``). Since targets are scaled per series, scores are
comparable across series. The first step of a series has no forecast and no score.

The threshold (``task_options.threshold_quantile`` or ``false_alarm_rate``) comes from the
scores of the training split of the run's own data (labelled anomalies left out when
the table has ``task_options.label``); it is computed once and kept in the run
directory as ``anomaly.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Union

import torch

from seqlab.errors import ConfigError
from seqlab.tasks.anomaly_pipeline import AnomalyPipeline
from seqlab.tasks.base import register_objective
from seqlab.tasks.forecast import Forecast, ForecastOptions

logger = logging.getLogger("seqlab")

LOSSES = ("normal", "student_t", "mse", "mae")


@dataclass
class AnomalyOptions(ForecastOptions):
    """The forecast options (``loss``: normal, student_t, mse or mae; ``levels`` of the
    validation intervals), and: ``threshold_quantile`` (default 0.99) or
    ``false_alarm_rate`` (the fraction of normal training steps flagged; give one);
    ``label``: the 0/1 column of labelled anomalies, read when a table has it;
    ``chunk``: steps per model call when scoring."""

    loss: str = "student_t"
    strategy: str = "recursive"
    threshold_quantile: Union[float, None] = None
    false_alarm_rate: Union[float, None] = None
    label: Union[str, None] = None
    chunk: int = 512

    def __post_init__(self):
        if self.strategy != "recursive":
            raise ConfigError("the anomaly objective scores with a next-step model; "
                              "task_options.strategy must stay recursive")
        super().__post_init__()
        if self.loss not in LOSSES:
            raise ConfigError(f"anomaly task_options.loss must be one of {', '.join(LOSSES)}, "
                              f"got {self.loss!r}")
        if self.threshold_quantile is not None and self.false_alarm_rate is not None:
            raise ConfigError("give task_options.threshold_quantile or false_alarm_rate, "
                              "not both")
        if self.threshold_quantile is None and self.false_alarm_rate is None:
            self.threshold_quantile = 0.99
        if self.threshold_quantile is not None and not 0 < self.threshold_quantile < 1:
            raise ConfigError(f"task_options.threshold_quantile must be in (0, 1), got "
                              f"{self.threshold_quantile}")
        if self.false_alarm_rate is not None and not 0 < self.false_alarm_rate < 1:
            raise ConfigError(f"task_options.false_alarm_rate must be in (0, 1), got "
                              f"{self.false_alarm_rate}")
        if self.label in ("score", "detected"):
            raise ConfigError(f"task_options.label {self.label!r} is a column scoring writes; "
                              "rename the label column")
        if self.chunk < 1:
            raise ConfigError(f"task_options.chunk must be >= 1, got {self.chunk}")


@register_objective("anomaly", AnomalyOptions, sources=("series",), label_kind="series",
                    modes=("causal",))
class Anomaly(Forecast):
    """Anomaly scoring by next-step forecast error (see the module docstring)."""

    @classmethod
    def check(cls, config) -> None:
        super().check(config)
        if config.data.scale_by != "series":
            raise ConfigError("anomaly scoring streams whole series with one scale each; "
                              "data.scale_by must be series")

    def scores(self, model, params: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, T) scores of scaled targets ``y`` (B, T, K) under the head's ``params``
        (B, T, K, P) (see the module docstring); NaN where no target was seen."""
        head = model.head
        params = params.float()
        if head.kind in ("mse", "mae"):
            error, spread = params[..., 0] - y, torch.ones_like(y)
        else:
            dist = head._distribution(params)
            error, spread = dist.loc - y, dist.scale
            if head.kind == "student_t":
                spread = spread * torch.sqrt(dist.df / (dist.df - 2))
        z = (error / spread).square()
        seen = torch.isfinite(z)
        total = torch.where(seen, z, torch.zeros(())).sum(-1)
        count = seen.sum(-1)
        return torch.where(count > 0, (total / count.clamp(min=1)).sqrt(),
                           torch.full((), float("nan")))

    def pipeline(self, model, run_dir=None) -> AnomalyPipeline:
        return AnomalyPipeline(self, model, run_dir)


__all__ = ["Anomaly", "AnomalyOptions"]
