"""Calibrated prediction intervals: the learnt spread rescaled on held-out windows.

A model's intervals are only as honest as its training fit: an over-confident model
(too little data, too many steps) gives 80% intervals that cover 50%. Calibration
rescales each forecast's quantiles around its median by a factor per interval width,
fitted on the validation split (split conformal prediction with a normalised score):

    r = (y - median) / (q_hi - median)   if y >= median, else (median - y) / (median - q_lo)

and for the central interval at level L, ``c_L`` is the ceil((n + 1) L)-th smallest of
the n validation values' ``r``, so that L of them fall inside the rescaled interval;
that needs n >= 1 / (1 - L) - 1 values (19 for 95%), and a run with fewer keeps its
intervals as learnt, with a warning. A quantile at any level p is then ``median + c(p) (q(p) - median)``,
``c`` interpolated linearly in the interval width |2p - 1| between the fitted levels
(constant beyond them). The point forecast does not change.

The factors are fitted at 50% and at the run's ``task_options.levels`` and kept in the
run directory as ``calibration.json`` (``ForecastPipeline.calibrate``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from seqlab.errors import DataError
from seqlab.models.forecast_head import interval_levels


class CalibratedPredictive:
    """A Predictive whose quantiles are rescaled around its median (module docstring)."""

    def __init__(self, inner, factors: dict[float, float]):
        self.inner = inner
        self.widths = np.array(sorted(factors)) / 100.0
        self.factors = np.array([factors[k] for k in sorted(factors)])

    @property
    def point(self) -> Tensor:
        return self.inner.point

    def quantiles(self, levels) -> Tensor:
        levels = [float(v) for v in levels]
        q = self.inner.quantiles(levels + [0.5])
        median, q = q[..., -1:], q[..., :-1]
        width = np.abs(2 * np.array(levels) - 1)
        c = torch.tensor(np.interp(width, self.widths, self.factors), dtype=q.dtype,
                         device=q.device)
        return median + c * (q - median)


def fit_factors(medians: Tensor, bounds: Tensor, y: Tensor, levels) -> dict[float, float]:
    """Factors per level (percent) from flat arrays: ``medians`` (N,), ``bounds`` (N, 2L)
    (lo, hi per level, as ``interval_levels`` orders them) and values ``y`` (N,)."""
    seen = torch.isfinite(y)
    medians, bounds, y = medians[seen].double(), bounds[seen].double(), y[seen].double()
    n = len(y)
    needed = least_values(levels)
    if n < needed:
        raise DataError(f"calibrating a {max(levels):g}% interval needs at least {needed} "
                        f"validation values; the validation split has {n} (raise "
                        "data.val_steps)")
    out = {}
    for j, level in enumerate(levels):
        lo, hi = bounds[:, 2 * j], bounds[:, 2 * j + 1]
        above = y >= medians
        half = torch.where(above, hi - medians, medians - lo).clamp(min=1e-12)
        r = (y - medians).abs() / half
        rank = min(int(np.ceil((n + 1) * level / 100 - 1e-9)), n)
        out[float(level)] = float(r.sort().values[rank - 1])
    return out


def least_values(levels) -> int:
    """The fewest values that pin the widest interval: with n values, a central interval
    at level L has the (n + 1) L-th smallest score as its bound, which must exist."""
    return max(int(np.ceil(100 / (100 - max(float(v) for v in levels)) - 1e-9)) - 1, 5)


def fitting_levels(levels) -> list[float]:
    """The interval levels (percent) calibration fits: 50 and the run's."""
    return sorted({50.0, *(float(v) for v in levels)})


def quantile_levels(levels) -> list[float]:
    """What a Predictive is asked for when fitting: the median, then the intervals."""
    return [0.5] + interval_levels(fitting_levels(levels))


__all__ = ["CalibratedPredictive", "fit_factors", "fitting_levels", "least_values",
           "quantile_levels"]
