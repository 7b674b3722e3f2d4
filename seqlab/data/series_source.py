"""The ``series`` source: forecasting windows cut from tables of time series.

A window is ``context + horizon`` consecutive steps of one series: the model reads the
context (targets, past covariates) and the horizon's known-future covariates, and
predicts the horizon's targets. Every position is one feature vector:

    [targets (K, zero in the horizon), observed (K, only with ``missing: mask``),
     history flag (1 in the context, 0 in the horizon), past covariates (P, zero in the
     horizon), future covariates (F), calendar (2 per feature), static covariates (Z)]

Targets are scaled per series (``scaling``: ``standard``; ``mean_abs``; ``last``, the
last value as the origin and the mean absolute step as the unit, so a model predicts
moves from the last value in units of a typical move (MASE's yardstick); or ``none``) by
statistics of the part of the series a window has seen: the training split's for
training and validation windows, the given history's for predictions; or, with
``scale_by: window``, by each window's own context. Covariates are
standardised per column by the training split. Heads get the scale (``loc``, ``scale``
in the batch's extras) to report forecasts in the series' own units.

The split is by time, never across it: the last ``test_steps`` of every series are the
test split, the ``val_steps`` before them (default: one horizon) the validation split,
the rest the training split. A training window's horizon ends inside the training
split; a validation window's horizon covers validation steps only (its context may
reach back into the training split: that is the past). Training windows are drawn
uniformly over every valid (series, end) pair by a generator seeded by
``(seed, step, micro)``: a pure function of the step, and no window is materialised
before its batch is made.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from seqlab.data.batch import Batch
from seqlab.data.sampling import EVAL_STREAM, TRAIN_STREAM, restored_seed, seeded_rng
from seqlab.data.series import SeriesColumns, SeriesSet, read_series
from seqlab.data.series_time import freq_name
from seqlab.data.sources import DataSource, FileOptions, register_source
from seqlab.errors import ConfigError, DataError

SCALINGS = ("standard", "mean_abs", "last", "none")


@dataclass
class SeriesOptions(FileOptions, SeriesColumns):
    """The ``data`` section of a ``series`` source: the columns (``time``, ``target``,
    ``id``, covariates, ``calendar``, ``freq``, ``missing``; see
    ``seqlab.data.series``), the window (``context``, ``horizon``), the split
    (``val_steps``, default one horizon; ``test_steps``, default none) and ``scaling``.
    ``scale_by``: ``series`` (each series' statistics, from what precedes the windows) or
    ``window`` (each window's own context: level shifts and trends stay in range, as
    NeuralForecast's window scalers do). ``season``: the seasonal period MASE scales by (default: 24 for hourly data, 7 daily,
    52 weekly, 12 monthly, 4 quarterly, else 1)."""

    context: int = 64
    horizon: int = 16
    val_steps: Union[int, None] = None
    test_steps: int = 0
    scaling: str = "standard"
    scale_by: str = "series"
    season: Union[int, None] = None

    def __post_init__(self):
        FileOptions.__post_init__(self)
        SeriesColumns.__post_init__(self)
        if self.val_path is not None or self.eval_sets:
            raise ConfigError("the series source splits every series by time (data.val_steps, "
                              "data.test_steps); it reads no data.val_path or data.eval_sets")
        for name in ("context", "horizon"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.val_steps is None:
            self.val_steps = self.horizon
        if self.val_steps < self.horizon or self.test_steps < 0 or (
                self.test_steps and self.test_steps < self.horizon):
            raise ConfigError(f"data.val_steps ({self.val_steps}) must be >= the horizon "
                              f"({self.horizon}), and data.test_steps ({self.test_steps}) 0 or "
                              "at least one horizon")
        if self.scale_by not in ("series", "window"):
            raise ConfigError(f"data.scale_by must be series or window, got {self.scale_by!r}")
        if self.scaling not in SCALINGS:
            raise ConfigError(f"data.scaling must be one of {', '.join(SCALINGS)}, got "
                              f"{self.scaling!r}")
        if self.season is not None and self.season < 1:
            raise ConfigError(f"data.season must be >= 1, got {self.season}")


def default_season(freq) -> int:
    """The usual seasonal period of a frequency (1 when it has none)."""
    if isinstance(freq, int):
        return 1
    name = freq.name.upper()
    return {"H": 24, "h": 24, "D": 7, "B": 5, "W": 52, "M": 12, "MS": 12, "ME": 12,
            "Q": 4, "QS": 4, "QE": 4}.get(name, {"min": 60}.get(freq.name, 1))


def target_scale(values: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """(loc, scale) per column of (..., T, K) ``values`` over their T steps (NaN
    ignored); a constant or empty column gets scale 1."""
    shape = values.shape[:-2] + values.shape[-1:]
    with np.errstate(all="ignore"), _quiet():
        if how == "standard":
            loc, scale = np.nanmean(values, -2), np.nanstd(values, -2)
        elif how == "mean_abs":
            loc, scale = np.zeros(shape), np.nanmean(np.abs(values), -2)
        elif how == "last":
            seen = np.isfinite(values)
            last = values.shape[-2] - 1 - np.argmax(seen[..., ::-1, :], axis=-2)
            loc = np.take_along_axis(values, last[..., None, :], -2)[..., 0, :]
            scale = (np.nanmean(np.abs(np.diff(values, axis=-2)), -2) if values.shape[-2] > 1
                     else np.ones(shape))
        else:
            loc, scale = np.zeros(shape), np.ones(shape)
    loc = np.nan_to_num(loc)
    scale = np.where(np.isfinite(scale) & (scale > 1e-8), scale, 1.0)
    return loc.astype(np.float32), scale.astype(np.float32)


@contextlib.contextmanager
def _quiet():
    """Silence NumPy's 'mean of empty slice' warnings (an all-missing column is handled)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@dataclass
class Windows:
    """Windows of one split: for each, its series and the end of its horizon (a row of
    the series, exclusive)."""

    series: np.ndarray  # (W,) int
    end: np.ndarray  # (W,) int, local to the series


@register_source("series", SeriesOptions, labels=("series", None), inputs="features")
class SeriesSource(DataSource):
    """Forecasting windows from time-series tables (see the module docstring)."""

    input_kind = "features"

    def __init__(self, options: SeriesOptions, ctx):
        super().__init__(options, ctx)
        self.data: SeriesSet | None = None
        self.stats: dict | None = None
        self.all_context = False  # lay windows out as history only (pre-training)

    # -- sizes -----------------------------------------------------------------------------
    @property
    def window(self) -> int:
        return self.options.context + self.options.horizon

    @property
    def n_targets(self) -> int:
        return len(self.options.target)

    @property
    def input_dim(self) -> int | None:
        if self.stats is None:
            return None
        o = self.options
        k = self.n_targets
        return (2 * k if o.missing == "mask" else k) + 1 + len(o.past_covariates) + \
            len(o.future_covariates) + 2 * len(o.calendar) + self.stats["static_width"]

    # -- reading ---------------------------------------------------------------------------
    def attach(self, tokenizer, fitted=None) -> None:
        self.tokenizer = tokenizer
        if fitted is not None:
            self.stats = fitted

    def _read(self, data, where=None) -> SeriesSet:
        known = self.stats
        freq = None
        if known is not None and known.get("freq") is not None:
            freq = _frequency(known["freq"])
        series, categories = read_series(data, self.options, where=where,
                                         categories=(known or {}).get("categories"), freq=freq)
        if known is None:
            self._categories = categories
        return series

    def load(self, tokenizer, fitted=None) -> None:
        o = self.options
        if o.path is None:
            raise ConfigError("data.path is not set (a CSV, TSV or Parquet table of series)")
        self.tokenizer = tokenizer
        if fitted is not None:
            self.stats = fitted
        self.data = self._read(o.path)
        held = o.val_steps + o.test_steps
        self.data.check_length(o.horizon + held, f"a validation horizon of {o.horizon} and "
                                                 f"{held} held-out steps")
        self.train_end = self.data.lengths() - held  # (N,) rows of each series' training split
        if self.stats is None:
            self.stats = self._fit()
        self.train_scale = self.scales(self.data, self.train_end)
        self.train_windows = self._train_windows()
        self._cumulative = np.cumsum(self.train_windows)  # for drawing windows by index
        self.val_windows = self._split_windows(self.train_end, o.val_steps)
        self.test_windows = (self._split_windows(self.train_end + o.val_steps, o.test_steps)
                             if o.test_steps else None)

    def _fit(self) -> dict:
        """Covariate statistics, the frequency and the season from the training split."""
        d, o = self.data, self.options
        rows = np.concatenate([np.arange(d.offsets[i], d.offsets[i] + n)
                               for i, n in enumerate(self.train_end)])

        def standard(x: np.ndarray) -> dict:
            with _quiet():
                mean, std = np.nanmean(x, 0), np.nanstd(x, 0)
            return {"mean": np.nan_to_num(mean).tolist(),
                    "std": np.where(np.isfinite(std) & (std > 1e-8), std, 1.0).tolist()}

        return {"freq": d.freq if isinstance(d.freq, int) else freq_name(d.freq),
                "categories": getattr(self, "_categories", {}),
                "past": standard(d.past[rows]), "future": standard(d.future[rows]),
                "static": standard(d.static), "static_width": int(d.static.shape[1]),
                "season": o.season or default_season(d.freq), "columns": o.columns()}

    def fitted(self) -> dict:
        return dict(self.stats or {})

    # -- windows ---------------------------------------------------------------------------
    def _train_windows(self) -> np.ndarray:
        """(N,) how many training windows each series has."""
        counts = np.maximum(self.train_end - self.window + 1, 0)
        if counts.sum() == 0:
            self.data.check_length(self.window + self.options.val_steps + self.options.test_steps,
                                   f"one training window of context {self.options.context} + "
                                   f"horizon {self.options.horizon}, then the held-out steps")
        return counts

    def _split_windows(self, start: np.ndarray, steps: int) -> Windows:
        """Windows whose horizons tile ``steps`` rows from ``start`` of every series, one
        horizon apart (the last one ends at ``start + steps``), that have a full context."""
        h = self.options.horizon
        ends = start[:, None] + steps - h * np.arange(steps // h)[::-1][None, :]  # (N, n)
        series = np.repeat(np.arange(len(start)), ends.shape[1])
        ends = ends.reshape(-1)
        ok = ends - self.window >= 0
        if not ok.any():
            raise DataError(f"{self.data.source}: no series is long enough for a validation "
                            f"window of {self.window} steps (context {self.options.context} + "
                            f"horizon {h}) before its held-out end")
        return Windows(series[ok], ends[ok])

    def train_batch(self, step: int, micro: int) -> Batch:
        counts, cumulative = self.train_windows, self._cumulative
        rng = seeded_rng(self.ctx.seed, TRAIN_STREAM, step, micro)
        picks = rng.integers(0, int(cumulative[-1]), size=self.ctx.batch_size)
        series = np.searchsorted(cumulative, picks, side="right")
        first = picks - (cumulative[series] - counts[series])
        return self.batch(self.data, Windows(series, first + self.window), self.train_scale)

    def eval_sets(self):
        sets = {"val": lambda: self._batches(self.data, self.val_windows, self.train_scale)}
        if self.test_windows is not None:
            scale = self.scales(self.data, self.train_end + self.options.val_steps)
            sets["test"] = lambda: self._batches(self.data, self.test_windows, scale)
        return sets

    def _batches(self, data: SeriesSet, windows: Windows, scale, max_batches: int | None = None):
        bs = self.ctx.batch_size
        n = len(windows.series)
        cap = self.ctx.eval_batches if max_batches is None else max_batches
        order = np.arange(n)
        if cap is not None and n > cap * bs:
            order = np.sort(seeded_rng(self.ctx.seed, EVAL_STREAM).permutation(n)[:cap * bs])
        for i in range(0, len(order), bs):
            pick = order[i:i + bs]
            yield self.batch(data, Windows(windows.series[pick], windows.end[pick]), scale,
                             index=pick)

    def read(self, path, *, labelled: bool = True, max_batches: int | None = None):
        """The last window of every series of another table (its final horizon scored)."""
        data = self._read(path)
        data.check_length(self.window, f"one window of context {self.options.context} + "
                                       f"horizon {self.options.horizon}")
        ends = data.lengths()
        windows = Windows(np.arange(len(data)), ends)
        scale = self.scales(data, ends - self.options.horizon)
        return lambda: self._batches(data, windows, scale, max_batches)

    def names(self, path) -> list[str]:
        return list(self._read(path).ids)

    # -- one batch -------------------------------------------------------------------------
    def scales(self, data: SeriesSet, ends: np.ndarray,
               series: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """(N, K) loc, scale and seasonal-naive MAE (MASE's denominator) of the targets of
        every series (or of ``series[j]`` for each j) over its rows before ``ends``."""
        series = np.arange(len(ends)) if series is None else series
        out = [self.scales_of(data, int(i), int(e)) for i, e in zip(series, ends)]
        return tuple(np.stack([o[j] for o in out]).astype(np.float32) for j in range(3))

    def scales_of(self, data: SeriesSet, i: int, end: int) -> tuple[np.ndarray, ...]:
        """(K,) loc, scale and seasonal-naive MAE of series ``i``'s rows before ``end``."""
        m = int(self.stats["season"])
        part = data.target[int(data.offsets[i]):int(data.offsets[i]) + end]
        loc, scale = target_scale(part, self.options.scaling)
        lag = m if len(part) > m else 1
        naive = np.full(part.shape[1], np.nan)
        if len(part) > lag:
            with _quiet():
                naive = np.nanmean(np.abs(part[lag:] - part[:-lag]), 0)
        naive = np.where(np.isfinite(naive) & (naive > 0), naive, np.nan)
        return loc, scale, naive.astype(np.float32)

    def batch(self, data: SeriesSet, windows: Windows, scale: tuple[np.ndarray, ...], *,
              index: np.ndarray | None = None, future: SeriesSet | None = None,
              scale_index: np.ndarray | None = None, context: int | None = None,
              horizon: int | None = None) -> Batch:
        """The batch of ``windows`` (see the module docstring for the feature layout).

        ``scale``: (N, K) loc, scale and seasonal-naive MAE per series of ``data`` (or,
        with ``scale_index``, rows of them picked per window: a backtest scales each
        window by its own history). ``future``: forecasting
        past the end of ``data`` (windows end a horizon after it), the horizon's future
        covariates and calendar come from ``future``'s first rows (same series order);
        the batch then has no targets. ``context``, ``horizon``: another window shape
        than the options' (``horizon=0``: every row of the window is context, as anomaly
        scoring reads whole series).
        """
        o, st = self.options, self.stats
        if context is None and self.all_context:  # every row of a window is history
            context, horizon = o.context + o.horizon, 0
        C = o.context if context is None else context
        H = o.horizon if horizon is None else horizon
        k = self.n_targets
        B = len(windows.series)
        start = data.offsets[windows.series] + windows.end - C - H  # (B,) global rows
        past_rows = start[:, None] + np.arange(C)  # (B, C)
        pick = windows.series if scale_index is None else scale_index
        loc, sc = scale[0][pick], scale[1][pick]  # (B, K)
        if o.scale_by == "window":  # each window by its own context
            loc, sc = target_scale(data.target[past_rows], o.scaling)
        scaled = (data.target[past_rows] - loc[:, None]) / sc[:, None]  # (B, C, K)
        parts = [np.concatenate([np.nan_to_num(scaled), np.zeros((B, H, k), np.float32)], 1)]
        if o.missing == "mask":
            parts.append(np.concatenate([np.isfinite(scaled), np.zeros((B, H, k), bool)], 1))
        parts.append(np.concatenate([np.ones((B, C, 1)), np.zeros((B, H, 1))], 1))
        past = (data.past[past_rows] - np.float32(st["past"]["mean"])) / np.float32(st["past"]["std"])
        parts.append(np.concatenate([past, np.zeros((B, H, past.shape[-1]), np.float32)], 1))
        if future is None:
            ahead, source = start[:, None] + C + np.arange(H), data
        else:
            ahead, source = future.offsets[windows.series][:, None] + np.arange(H), future
        fut = np.concatenate([data.future[past_rows], source.future[ahead]], 1)
        parts.append((fut - np.float32(st["future"]["mean"])) / np.float32(st["future"]["std"]))
        parts.append(np.concatenate([data.calendar[past_rows], source.calendar[ahead]], 1))
        static = (data.static[windows.series] - np.float32(st["static"]["mean"])) / \
            np.float32(st["static"]["std"])
        parts.append(np.repeat(static[:, None], C + H, 1))
        inputs = torch.from_numpy(np.concatenate([p.astype(np.float32) for p in parts], -1))
        targets = None
        if future is None:
            y = (data.target[ahead] - loc[:, None]) / sc[:, None]  # (B, H, K), NaN = missing
            targets = torch.from_numpy(y.astype(np.float32))
        extras = {"loc": torch.from_numpy(loc.astype(np.float32)),
                  "scale": torch.from_numpy(sc.astype(np.float32)),
                  "naive": torch.from_numpy(scale[2][pick])}
        index = np.arange(B) if index is None else np.asarray(index)
        return Batch(inputs, targets, None, extras, torch.from_numpy(index))

    # -- resume ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"seed": self.ctx.seed, "batch_size": self.ctx.batch_size,
                "grad_accum": self.ctx.grad_accum, "windows": int(self.train_windows.sum()),
                "series": len(self.data)}

    def load_state_dict(self, state: dict) -> None:
        restored_seed(state, self.state_dict(), "the same series, window and batch settings")

    def describe(self) -> str:
        o = self.options
        return (f"{len(self.data)} series, {int(self.data.lengths().sum()):,} steps "
                f"({freq_name(self.data.freq)}), "
                f"{int(self.train_windows.sum()):,} training windows of {o.context} + {o.horizon}")


def _frequency(saved):
    """A frequency as ``data.json`` keeps it: a step of an integer time column (an int,
    or its digits as runs before this fix wrote it) or a pandas offset's name."""
    if isinstance(saved, int) or (isinstance(saved, str) and saved.lstrip("-").isdigit()):
        return int(saved)
    import pandas as pd

    return pd.tseries.frequencies.to_offset(saved)


__all__ = ["SCALINGS", "SeriesOptions", "SeriesSource", "Windows", "default_season",
           "target_scale"]
