"""Synthetic multivariate time series with known-future covariates and labelled anomalies.

A forecasting and anomaly-detection benchmark whose ground truth is known: which
covariate moves the level and which way, and which rows are anomalous and how. Each
series draws its own parameters; within a series, every target ``y_j`` is

    scale * (gain_j * (trend + price effect + promo lift) + season_j + noise_j)

* trend: piecewise linear around a level near 20, with 1-3 change points of the slope
  placed at random in the middle 80% of the series.
* season: per period (``freq`` "h": 24 and 168; "D": 7 and 365.25; else 12) a sinusoid
  and its second harmonic, in steps from 2020-01-01 so the phase follows the calendar
  (hour of day, day of week); phases are shared by all series up to a small jitter.
* price: piecewise constant, alternating between a base price and a cut or rise of
  10-30% of it; y falls by ``elasticity * (price / base - 1)`` (elasticity 8-15, so a
  price change moves y by several noise standard deviations).
* promo: 0/1 runs of 3-24 steps, about a tenth of the time, lifting y by 1.5-3.
* noise: AR(1), phi in [0.3, 0.8], marginal standard deviation ``sigma`` in [0.3, 0.6].

``y2, y3, ...`` share the trend and covariate effects (with gains of their own), carry
the seasonal pattern scaled and lagged by 0-3 steps, and have noise of their own.

Anomalies: ``round(anomaly_rate * rows)`` rows are labelled (fewer only if they cannot
be placed), never in the first 20% of a series, and no two anomalies closer than
``_GAP`` normal rows. Each anomaly hits every target at the same rows, so one
``anomaly`` column covers them all; sizes are in units of each target's ``sigma``.

* ``spike``: one row moved up or down by 5-8 sigma.
* ``level_shift``: a segment of 10-50 rows shifted by 3-6 sigma.
* ``variance``: the noise multiplied by 3-5 over a segment.
* ``flatline``: a stuck sensor: the segment repeats the last normal value.
* ``seasonal``: the seasonal pattern dropped, or shifted by half its shortest period,
  over a segment.

Kinds are drawn in shuffled rounds of all five, so each occurs once the budget allows
about five anomalies. The same seed gives an identical frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from seqlab.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ANOMALY_KINDS", "make_series", "split_by_time"]

ANOMALY_KINDS = ("spike", "level_shift", "variance", "flatline", "seasonal")

_CLEAN_FRACTION = 0.2  # no anomaly in this leading share of a series
_GAP = 3  # normal rows between two anomalies (and before a flatline, whose value it repeats)
_SEG_MIN, _SEG_MAX = 10, 50
_EPOCH = "2020-01-01"

# (kind, start, length, sign, u): u in [0, 1) sets the size (or the seasonal mode).
Event = tuple[str, int, int, float, float]


def _periods(freq: str) -> np.ndarray:
    from pandas.tseries.frequencies import to_offset

    try:
        offset = to_offset(freq)
    except (TypeError, ValueError):
        raise ConfigError(f"freq must be a pandas frequency such as 'h' or 'D', "
                          f"got {freq!r}") from None
    if offset == to_offset("h"):
        return np.array([24.0, 168.0])
    if offset == to_offset("D"):
        return np.array([7.0, 365.25])
    return np.array([12.0])


def _season(s: np.ndarray, *, periods: np.ndarray, amps: np.ndarray, phases: np.ndarray,
            lag: int = 0) -> np.ndarray:
    """Sum over periods of a sinusoid and its second harmonic at (fractional) steps ``s``."""
    w = 2 * np.pi * (s[:, None] - lag) / periods  # (T, P)
    return (amps[:, 0] * np.sin(w + phases[:, 0])
            + amps[:, 1] * np.sin(2 * w + phases[:, 1])).sum(1)


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    """Stationary AR(1) with marginal standard deviation ``sigma``."""
    e = rng.normal(0.0, sigma * math.sqrt(1 - phi * phi), n)
    x = np.empty(n)
    x[0] = rng.normal(0.0, sigma)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


@dataclass
class _Target:
    base: np.ndarray  # trend and covariate effects
    season_at: Callable[[np.ndarray], np.ndarray]  # the seasonal pattern at given steps
    noise: np.ndarray
    sigma: float


def _draw_series(rng: np.random.Generator, s: np.ndarray, periods: np.ndarray,
                 phases0: np.ndarray, n_targets: int) -> tuple[list[_Target], np.ndarray,
                                                               np.ndarray]:
    """One series' targets (before anomalies) and its price and promo columns."""
    n = len(s)
    t = np.arange(n)
    middle = np.arange(n // 10, n - n // 10)
    cps = np.sort(rng.choice(middle, int(rng.integers(1, 4)), replace=False))
    slopes = rng.normal(0.0, 8.0 / n, len(cps) + 1)
    trend = rng.uniform(15, 25) + slopes[0] * t
    for cp, change in zip(cps, np.diff(slopes)):
        trend += change * np.maximum(t - cp, 0)
    # Price: regimes alternate between the base price and a cut or rise of 10-30% of it.
    base_price = rng.uniform(5, 20)
    cuts = np.sort(rng.choice(np.arange(1, n), int(rng.integers(2, n // 40 + 3)), replace=False))
    moves = rng.choice([-1.0, 1.0], len(cuts) + 1) * rng.uniform(0.1, 0.3, len(cuts) + 1)
    moves[::2] = 0.0
    price = np.round(base_price * (1 + moves[np.searchsorted(cuts, t, side="right")]), 2)
    promo = np.zeros(n, np.int64)
    for start in rng.integers(0, n, max(1, n // 130)):
        promo[start:start + rng.integers(3, 25)] = 1
    effects = -rng.uniform(8, 15) * (price / base_price - 1) + rng.uniform(1.5, 3.0) * promo

    amps = np.column_stack([rng.uniform(0.8, 2.0, len(periods)), np.zeros(len(periods))])
    amps[0, 0] = rng.uniform(1.5, 3.5)  # the shortest period dominates
    amps[:, 1] = amps[:, 0] * rng.uniform(0.1, 0.5, len(periods))
    phases = phases0 + rng.normal(0.0, 0.3, phases0.shape)
    targets = []
    for j in range(n_targets):
        gain, h, lag = ((1.0, 1.0, 0) if j == 0 else
                        (rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.5), int(rng.integers(0, 4))))
        phi, sigma = rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.6)
        season_at = partial(_season, periods=periods, amps=h * amps, phases=phases, lag=lag)
        noise = _ar1(rng, n, phi, sigma)
        targets.append(_Target(gain * (trend + effects), season_at, noise, sigma))
    return targets, price, promo


def _plan_anomalies(rng: np.random.Generator, lengths: np.ndarray,
                    rate: float) -> list[list[Event]]:
    """Place non-overlapping anomalies until ``round(rate * rows)`` rows are labelled."""
    budget = round(rate * int(lengths.sum()))
    events: list[list[Event]] = [[] for _ in lengths]
    taken = [np.zeros(n, bool) for n in lengths]
    kinds: list[str] = []
    labelled, tries = 0, 0
    while labelled < budget and tries < 200 + 20 * budget:
        tries += 1
        if not kinds:
            kinds = [ANOMALY_KINDS[k] for k in rng.permutation(len(ANOMALY_KINDS))]
        i = int(rng.choice(len(lengths), p=lengths / lengths.sum()))
        n, kind = int(lengths[i]), kinds[-1]
        first = math.ceil(_CLEAN_FRACTION * n)
        length = 1 if kind == "spike" else min(int(rng.integers(_SEG_MIN, _SEG_MAX + 1)),
                                              budget - labelled, n - first)
        if length < _SEG_MIN:  # too little budget left for a segment
            kind, length = "spike", 1
        start = int(rng.integers(first, n - length + 1))
        if taken[i][max(start - _GAP, 0):start + length + _GAP].any():
            continue
        taken[i][max(start - _GAP, 0):start + length + _GAP] = True
        kinds.pop()
        events[i].append((kind, start, length, float(rng.choice([-1.0, 1.0])), float(rng.random())))
        labelled += length
    return events


def _apply(target: _Target, s: np.ndarray, events: list[Event], half_period: float) -> np.ndarray:
    season, noise = target.season_at(s), target.noise.copy()
    bump = np.zeros_like(noise)
    for kind, start, length, sign, u in events:
        seg = slice(start, start + length)
        if kind == "spike":
            bump[start] += sign * (5 + 3 * u) * target.sigma
        elif kind == "level_shift":
            bump[seg] += sign * (3 + 3 * u) * target.sigma
        elif kind == "variance":
            noise[seg] *= 3 + 2 * u
        elif kind == "seasonal":
            season[seg] = 0.0 if u < 0.5 else target.season_at(s[seg] + half_period)
    y = target.base + season + noise + bump
    for kind, start, length, _, _ in events:
        if kind == "flatline":
            y[start:start + length] = y[start - 1]
    return y


def make_series(n_series: int = 20, *, min_length: int = 400, max_length: int = 1200,
                freq: str = "h", n_targets: int = 1, seed: int | np.random.SeedSequence = 0,
                anomaly_rate: float = 0.01) -> pd.DataFrame:
    """Draw the benchmark as one long table (see the module docstring for its structure).

    Args:
        n_series: number of series.
        min_length, max_length: each series' length is uniform in this closed range.
        freq: pandas frequency of the timestamps; also picks the seasonal periods.
        n_targets: number of target columns: ``y``, then ``y2``, ``y3``, ...
        seed: seeds everything.
        anomaly_rate: share of all rows labelled anomalous.

    Returns:
        Columns ``id`` (``"s000"``, ...), ``ds``, ``y`` (``y2``, ...), ``price``,
        ``promo`` (0/1), ``anomaly`` (0/1) and ``anomaly_kind`` (``""`` or one of
        :data:`ANOMALY_KINDS`); sorted by ``id`` then ``ds``, each series on a regular
        ``freq`` grid from its own start.
    """
    if n_series < 1:
        raise ConfigError(f"n_series must be >= 1, got {n_series}")
    if min_length < 50:
        raise ConfigError(f"min_length must be >= 50, got {min_length}")
    if max_length < min_length:
        raise ConfigError(f"max_length must be >= min_length ({min_length}), got {max_length}")
    if n_targets < 1:
        raise ConfigError(f"n_targets must be >= 1, got {n_targets}")
    if not 0 <= anomaly_rate < 0.2:
        raise ConfigError(f"anomaly_rate must be in [0, 0.2), got {anomaly_rate}")
    import pandas as pd

    periods = _periods(freq)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_length, max_length + 1, n_series)
    offsets = rng.integers(0, 500, n_series)  # each series' first step after _EPOCH
    phases0 = rng.uniform(0, 2 * np.pi, (len(periods), 2))
    plan = _plan_anomalies(rng, lengths, anomaly_rate)
    names = ["y"] + [f"y{j}" for j in range(2, n_targets + 1)]
    width = max(3, len(str(n_series - 1)))
    frames = []
    for i, (n, offset, events) in enumerate(zip(lengths, offsets, plan)):
        s = np.arange(offset, offset + n, dtype=float)
        targets, price, promo = _draw_series(rng, s, periods, phases0, n_targets)
        scale = math.exp(rng.normal(0.0, 0.5))
        kind = np.full(n, "", dtype=object)
        for k, start, length, _, _ in events:
            kind[start:start + length] = k
        frame = {"id": f"s{i:0{width}d}",
                 "ds": pd.date_range(_EPOCH, periods=offset + n, freq=freq)[offset:]}
        for name, target in zip(names, targets):
            frame[name] = scale * _apply(target, s, events, periods[0] / 2)
        frame |= {"price": price, "promo": promo, "anomaly": (kind != "").astype(np.int64),
                  "anomaly_kind": kind}
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def split_by_time(df: pd.DataFrame, fraction: float = 0.8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split every series at the same share of its length, for train / test by time.

    Expects rows sorted by time within each ``id`` (as :func:`make_series` gives).

    Returns:
        ``(head, tail)``: the first ``floor(fraction * length)`` rows of each series,
        and the rest, both with a fresh index.
    """
    if not 0 < fraction < 1:
        raise ConfigError(f"fraction must be in (0, 1), got {fraction}")
    by_id = df.groupby("id", sort=False)
    head = by_id.cumcount() < np.floor(fraction * by_id["id"].transform("size"))
    return df[head].reset_index(drop=True), df[~head].reset_index(drop=True)
