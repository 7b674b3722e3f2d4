"""Time series from tables: one or many series read through pandas, checked, regularised.

A table (CSV, Parquet, or a pandas DataFrame) holds one row per (series, time): a time
column, one or more targets, optionally a series-id column (many series, one global
model), past-only covariates (known up to now), known-future covariates (known for the
horizon too: prices set in advance, holidays) and static covariates (one value per
series). Calendar features (hour, day of week, month, ...) are made from the time column
on request, as the sine and cosine of their phase, so December sits next to January.

Checks, each naming the series, the column and the first offending timestamps:
NaN or infinite values, duplicate or unsorted timestamps, gaps in the time grid, a time
step that changes mid-series, and (``SeriesSet.check_length``) series too short for a
window. ``missing`` says what to do about missing values and gaps instead of stopping:

- ``error`` (default): stop;
- ``interpolate``: put the series on its full time grid and fill numbers linearly in time
  (edges take the nearest value);
- ``ffill``: the same grid, each gap taking the last value seen (leading gaps the first);
- ``drop``: drop rows holding a missing value; the rest is read as consecutive steps;
- ``mask``: the full grid, missing target values kept as missing: the model sees a mask
  feature (1 observed, 0 missing) and no loss or metric counts them; missing covariates
  take the last value seen (leading ones the first).

Integer time columns are steps of their smallest difference; datetime columns (or
strings pandas parses as dates) have a frequency, inferred (``pandas.infer_freq`` on the
first series long enough) or given (``freq``), and every series must sit on its grid.

The result, :class:`SeriesSet`, holds every series concatenated along time in flat
float32 arrays with offsets, so 1,000 series of 10,000 steps cost their values and no
more; windows are cut from it later (``seqlab.data.series_source``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from seqlab.data.series_time import (check_grid, first_stamps, infer_frequency, need_pandas,
                                     read_table, stamp, time_column)
from seqlab.errors import ConfigError, DataError

MISSING_POLICIES = ("error", "interpolate", "ffill", "drop", "mask")
# name -> (how to read it off a DatetimeIndex, its period)
CALENDAR = {
    "minute": (lambda t: t.minute, 60),
    "hour": (lambda t: t.hour, 24),
    "dayofweek": (lambda t: t.dayofweek, 7),
    "dayofmonth": (lambda t: t.day - 1, 31),
    "dayofyear": (lambda t: t.dayofyear - 1, 366),
    "weekofyear": (lambda t: t.isocalendar().week.to_numpy() - 1, 53),
    "month": (lambda t: t.month - 1, 12),
}
SINGLE = "series"  # the id of the one series of a table without an id column


@dataclass
class SeriesColumns:
    """Which column plays which part (the ``data`` section of a ``series`` source)."""

    time: str = "ds"
    target: Union[str, list[str]] = "y"
    id: Union[str, None] = None
    past_covariates: list[str] = field(default_factory=list)
    future_covariates: list[str] = field(default_factory=list)
    static_covariates: list[str] = field(default_factory=list)
    calendar: list[str] = field(default_factory=list)
    freq: Union[str, None] = None
    missing: str = "error"

    def __post_init__(self):
        if isinstance(self.target, str):
            self.target = [self.target]
        if not self.target:
            raise ConfigError("data.target names no column")
        if self.missing not in MISSING_POLICIES:
            raise ConfigError(f"data.missing must be one of {', '.join(MISSING_POLICIES)}, got "
                              f"{self.missing!r}")
        unknown = [c for c in self.calendar if c not in CALENDAR]
        if unknown:
            raise ConfigError(f"data.calendar: unknown feature(s) {', '.join(unknown)}; valid: "
                              f"{', '.join(CALENDAR)}")
        roles = {"time": [self.time], "target": self.target, "id": [self.id] if self.id else [],
                 "past_covariates": self.past_covariates,
                 "future_covariates": self.future_covariates,
                 "static_covariates": self.static_covariates}
        seen: dict[str, str] = {}
        for role, names in roles.items():
            for name in names:
                if name in seen:
                    raise ConfigError(f"data: column {name!r} is both {seen[name]} and {role}")
                seen[name] = role

    @property
    def numeric(self) -> list[str]:
        """The per-step numeric columns: targets, then past and future covariates."""
        return [*self.target, *self.past_covariates, *self.future_covariates]

    def columns(self) -> list[str]:
        return [self.time, *([self.id] if self.id else []), *self.numeric, *self.static_covariates]


@dataclass
class SeriesSet:
    """Series concatenated along time.

    Shapes (N series, S steps in all):
        target: (S, K) float32, NaN where missing (``missing: mask``);
        past: (S, P), future: (S, F) float32 covariates;
        calendar: (S, 2 * len(calendar)) float32, sine and cosine of each phase;
        static: (N, Z) float32 numeric statics, then one-hot categories;
        offsets: (N + 1,) int64; series i is rows offsets[i]:offsets[i + 1];
        times: (S,) datetime64[ns] or int64.
    """

    ids: list[str]
    target: np.ndarray
    past: np.ndarray
    future: np.ndarray
    calendar: np.ndarray
    static: np.ndarray
    offsets: np.ndarray
    times: np.ndarray
    freq: Any  # a pandas offset, or an int step
    source: str = "data"

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def rows(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def check_length(self, needed: int, what: str) -> None:
        """Raise naming the series shorter than ``needed`` steps (``what`` says why)."""
        short = [(s, int(n)) for s, n in zip(self.ids, self.lengths()) if n < needed]
        if short:
            listed = ", ".join(f"{s} ({n})" for s, n in short[:5])
            raise DataError(f"{self.source}: {len(short)} series shorter than {needed} steps "
                            f"({what}): {listed}{' ...' if len(short) > 5 else ''}")

    def future_times(self, i: int, horizon: int) -> np.ndarray:
        """The ``horizon`` timestamps after series i's last one."""
        last = self.times[int(self.offsets[i + 1]) - 1]
        if isinstance(self.freq, int):
            return last + self.freq * np.arange(1, horizon + 1)
        pd = need_pandas()
        return pd.date_range(pd.Timestamp(last), periods=horizon + 1, freq=self.freq)[1:].to_numpy()


def _fill(values: np.ndarray, policy: str, t_index) -> np.ndarray:
    """Fill NaN in (T, C) ``values`` by ``interpolate`` or ``ffill``."""
    pd = need_pandas()
    frame = pd.DataFrame(values, index=t_index)
    if policy == "interpolate":
        method = "time" if isinstance(t_index, pd.DatetimeIndex) else "index"
        frame = frame.interpolate(method=method, limit_direction="both")
    else:
        frame = frame.ffill().bfill()
    return frame.to_numpy(np.float32)


def _statics(frame, columns: SeriesColumns, ids: list[str], where: str,
             categories: dict | None) -> tuple[np.ndarray, dict]:
    """(N, Z) static features: numbers as they are, strings one-hot over ``categories``
    (fitted here when None)."""
    pd = need_pandas()
    parts, fitted = [], {}
    key = columns.id
    for name in columns.static_covariates:
        per = frame.groupby(key, sort=False)[name] if key else None
        counts = per.nunique(dropna=False) if per is not None else pd.Series(
            [frame[name].nunique(dropna=False)], index=[SINGLE])
        varying = counts[counts > 1]
        if len(varying):
            raise DataError(f"{where}: static covariate {name!r} varies within series "
                            f"{', '.join(map(str, varying.index[:3]))}; a static covariate "
                            "has one value per series (use past_ or future_covariates)")
        first = per.first() if per is not None else pd.Series([frame[name].iloc[0]], index=[SINGLE])
        first.index = first.index.map(str)
        values = first.reindex(ids)
        if pd.api.types.is_numeric_dtype(values):
            if values.isna().any():
                raise DataError(f"{where}: static covariate {name!r} is missing for series "
                                f"{', '.join(values.index[values.isna()][:3])}")
            parts.append(values.to_numpy(np.float32)[:, None])
            continue
        known = (categories or {}).get(name)
        if known is None:
            known = sorted(values.astype(str).unique())
        fitted[name] = known
        lookup = {c: j for j, c in enumerate(known)}
        onehot = np.zeros((len(ids), len(known)), np.float32)
        for i, v in enumerate(values.astype(str)):
            if v in lookup:  # a category training never saw reads as all zeros
                onehot[i, lookup[v]] = 1.0
        parts.append(onehot)
    static = np.concatenate(parts, 1) if parts else np.zeros((len(ids), 0), np.float32)
    return static, fitted


def calendar_features(times: np.ndarray, names: list[str]) -> np.ndarray:
    """(T, 2 * len(names)) sine and cosine of each calendar phase of ``times``."""
    if not names:
        return np.zeros((len(times), 0), np.float32)
    if times.dtype.kind in "iu":
        raise ConfigError("data.calendar needs a date/time column; this one holds integer steps")
    pd = need_pandas()
    index = pd.DatetimeIndex(times)
    out = []
    for name in names:
        read, period = CALENDAR[name]
        phase = 2 * np.pi * np.asarray(read(index), dtype=np.float64) / period
        out += [np.sin(phase), np.cos(phase)]
    return np.stack(out, 1).astype(np.float32)


def read_series(data, columns: SeriesColumns, *, where: str | None = None,
                categories: dict | None = None, freq=None) -> tuple[SeriesSet, dict]:
    """Read, check and regularise a table of series (see the module docstring).

    Args:
        data: a DataFrame, a table file or a list of files.
        columns: the roles of the columns.
        categories: the categories of string static covariates a trained model knows.
        freq: the frequency a trained model knows (checked, not inferred).

    Returns:
        The series and the categories fitted for string static covariates.

    Raises:
        DataError: a missing column, bad values or timestamps (see the module docstring).
    """
    pd = need_pandas()
    where = where or (str(data) if not isinstance(data, pd.DataFrame) else "DataFrame")
    frame = read_table(data, where)
    needed = columns.columns()
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise DataError(f"{where}: no column(s) {', '.join(map(repr, absent))}; it has "
                        f"{', '.join(map(str, frame.columns))}")
    for name in columns.numeric:
        if not pd.api.types.is_numeric_dtype(frame[name]):
            raise DataError(f"{where}: column {name!r} must hold numbers, got {frame[name].dtype}")
    frame = frame[needed].copy()
    frame[columns.time] = time_column(frame, columns.time, where)
    if columns.id:
        frame[columns.id] = frame[columns.id].astype(str)
        groups = [(str(k), g) for k, g in frame.groupby(columns.id, sort=False)]
    else:
        groups = [(SINGLE, frame)]
    if freq is None:
        freq = infer_frequency([(k, g[columns.time].to_numpy()) for k, g in groups],
                               columns.freq, where)
    policy = columns.missing
    ids, chunks = [], []
    for sid, g in groups:
        t = g[columns.time].to_numpy()
        order = np.argsort(t, kind="stable")
        ordered = t[order]
        dup = np.r_[False, ordered[1:] == ordered[:-1]]
        if dup.any():
            raise DataError(f"{where}: series {sid!r}: duplicate timestamp(s) "
                            f"{first_stamps(ordered, dup)}; each time may appear once per series")
        back = t[1:] < t[:-1]
        if back.any() and policy == "error":
            i = int(np.argmax(back)) + 1
            raise DataError(f"{where}: series {sid!r}: timestamps are not sorted ({stamp(t[i])} comes "
                            f"after {stamp(t[i - 1])}); sort the table, or set data.missing to a policy "
                            "(the rows are then sorted)")
        g, t = g.iloc[order], ordered
        values = g[columns.numeric].to_numpy(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            if policy == "error":
                j = int(np.argmax(bad.any(0)))
                raise DataError(f"{where}: series {sid!r}, column {columns.numeric[j]!r}: "
                                f"{int(bad[:, j].sum())} NaN or infinite value(s), first at "
                                f"{first_stamps(t, bad[:, j])}; set data.missing to interpolate, "
                                "ffill, drop or mask")
            values[bad] = np.nan
        if policy == "drop":
            keep = ~np.isnan(values).any(1)
            values, t = values[keep], t[keep]
        if len(t) == 0:
            raise DataError(f"{where}: series {sid!r} has no rows left")
        grid = check_grid(sid, t, freq, policy, where)
        if grid is not None:
            full = np.full((len(grid), values.shape[1]), np.nan)
            full[np.searchsorted(grid, t)] = values
            values, t = full, grid
        if policy in ("interpolate", "ffill") and np.isnan(values).any():
            index = pd.DatetimeIndex(t) if t.dtype.kind == "M" else pd.Index(t)
            values = _fill(values, policy, index)
        if policy == "mask" and np.isnan(values[:, len(columns.target):]).any():
            index = pd.DatetimeIndex(t) if t.dtype.kind == "M" else pd.Index(t)
            values[:, len(columns.target):] = _fill(values[:, len(columns.target):], "ffill", index)
        ids.append(sid)
        chunks.append((t, values.astype(np.float32)))
    static, fitted = _statics(frame, columns, ids, where, categories)
    k, p = len(columns.target), len(columns.past_covariates)
    values = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros((0, len(columns.numeric)))
    times = np.concatenate([c[0] for c in chunks])
    offsets = np.zeros(len(chunks) + 1, np.int64)
    offsets[1:] = np.cumsum([len(c[0]) for c in chunks])
    out = SeriesSet(ids=ids, target=values[:, :k], past=values[:, k:k + p],
                    future=values[:, k + p:], calendar=calendar_features(times, columns.calendar),
                    static=static, offsets=offsets, times=times, freq=freq, source=where)
    return out, fitted


__all__ = ["CALENDAR", "MISSING_POLICIES", "SeriesColumns", "SeriesSet", "calendar_features",
           "infer_frequency", "read_series", "read_table"]
