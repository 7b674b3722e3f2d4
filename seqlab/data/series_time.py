"""Timestamps of time series: reading tables, the time column, the frequency and the
time grid every series must sit on (``seqlab.data.series`` uses them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqlab.errors import ConfigError, DataError


def need_pandas():
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        raise ConfigError("time series need pandas: pip install pandas") from None
    return pd


def read_table(data, where: str = "data"):
    """A DataFrame from a DataFrame, a CSV/TSV file or a Parquet file (or a list of files)."""
    pd = need_pandas()
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, (list, tuple)):
        frames = [read_table(p) for p in data]
        if not frames:
            raise DataError(f"{where}: no files")
        return pd.concat(frames, ignore_index=True)
    path = Path(data)
    if not path.is_file():
        raise DataError(f"{path}: no such file (a CSV, TSV or Parquet table is expected)")
    try:
        if path.suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if path.suffix in (".csv", ".tsv", ".txt") or path.name.endswith((".csv.gz", ".tsv.gz")):
            return pd.read_csv(path, sep="\t" if ".tsv" in path.name else ",")
    except Exception as e:  # pandas raises many kinds for a malformed file
        raise DataError(f"{path}: cannot be read as a table ({type(e).__name__}: {e})") from None
    raise DataError(f"{path}: unknown table format {path.suffix!r}; use .csv, .tsv or .parquet")


def stamp(t) -> str:
    """A timestamp as people write it (2020-01-04, 2020-01-04 06:00:00) or an int step."""
    if isinstance(t, np.datetime64):
        ts = need_pandas().Timestamp(t)
        return str(ts.date()) if ts == ts.normalize() else str(ts)
    return str(t)


def freq_name(freq) -> str:
    """An int step as it is, a pandas offset by its alias (D, h, MS)."""
    return str(freq) if isinstance(freq, int) else freq.freqstr


def first_stamps(times, mask, n: int = 3) -> str:
    return ", ".join(stamp(t) for t in np.asarray(times)[np.asarray(mask)][:n])


def time_column(frame, column: str, where: str):
    """The time column as datetime64[ns] or int64 (strings parsed as dates)."""
    pd = need_pandas()
    raw = frame[column]
    if pd.api.types.is_integer_dtype(raw):
        return raw.to_numpy(np.int64)
    if pd.api.types.is_datetime64_any_dtype(raw):
        values = raw
    else:
        try:
            values = pd.to_datetime(raw)
        except (ValueError, TypeError) as e:
            raise DataError(f"{where}: column {column!r} is neither integer steps nor "
                            f"dates ({e})") from None
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    if values.isna().any():
        bad = np.flatnonzero(values.isna().to_numpy())[:3]
        raise DataError(f"{where}: column {column!r} is empty or unparseable in row(s) "
                        f"{', '.join(str(int(b)) for b in bad)}")
    return values.to_numpy("datetime64[ns]")


def infer_frequency(groups: list[tuple[str, np.ndarray]], given: str | None, where: str):
    """The time step: an int for integer times, a pandas offset for dates."""
    pd = need_pandas()
    if groups and groups[0][1].dtype.kind in "iu":
        steps = [np.diff(t) for _, t in groups if len(t) > 1]
        positive = np.concatenate(steps) if steps else np.array([1])
        positive = positive[positive > 0]
        step = int(positive.min()) if len(positive) else 1
        if given is not None and int(given) != step:
            raise DataError(f"{where}: data.freq is {given}, but the smallest time step is {step}")
        return int(given) if given is not None else step
    if given is not None:
        try:
            return pd.tseries.frequencies.to_offset(given)
        except ValueError as e:
            raise ConfigError(f"data.freq {given!r} is not a pandas frequency ({e})") from None
    for sid, t in sorted(groups, key=lambda g: -len(g[1])):
        if len(t) >= 3:
            inferred = pd.infer_freq(pd.DatetimeIndex(np.sort(t)))
            if inferred is not None:
                return pd.tseries.frequencies.to_offset(inferred)
            # Gaps or a changing step: take the most common step of this series.
            diffs, counts = np.unique(np.diff(np.sort(t)), return_counts=True)
            return pd.tseries.frequencies.to_offset(pd.Timedelta(diffs[counts.argmax()]))
    raise DataError(f"{where}: cannot infer the frequency (no series has 3 timestamps); "
                    "set data.freq")


def _grid(t: np.ndarray, freq):
    """The full time grid from t[0] to t[-1] at ``freq``."""
    if isinstance(freq, int):
        return np.arange(t[0], t[-1] + 1, freq, dtype=np.int64)
    pd = need_pandas()
    return pd.date_range(pd.Timestamp(t[0]), pd.Timestamp(t[-1]), freq=freq).to_numpy()


def check_grid(sid: str, t: np.ndarray, freq, policy: str, where: str) -> np.ndarray | None:
    """The grid series ``sid`` should fill, or None when it fills it already.

    Raises:
        DataError: a timestamp off the grid (the step changes mid-series), or, under the
            ``error`` policy, a gap.
    """
    grid = _grid(t, freq)
    on = np.isin(t, grid)
    if not on.all():
        i = int(np.argmin(on))
        raise DataError(f"{where}: series {sid!r}: the time step changes at {stamp(t[i])} (after "
                        f"{stamp(t[i - 1])}, off the {freq_name(freq)} grid from {stamp(t[0])}); resample "
                        "the series to one frequency")
    if len(grid) == len(t):
        return None
    if policy in ("error",):
        missing = grid[~np.isin(grid, t)]
        raise DataError(f"{where}: series {sid!r} has {len(missing)} gap(s) in its {freq_name(freq)} time "
                        f"grid, first at {first_stamps(missing, np.ones(len(missing), bool))}; set "
                        "data.missing to interpolate, ffill, drop or mask")
    return None if policy == "drop" else grid


__all__ = ["check_grid", "first_stamps", "infer_frequency", "need_pandas", "read_table", "stamp",
           "freq_name", "time_column"]
