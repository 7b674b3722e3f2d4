"""Forecasts from a trained ``forecast`` run: the horizon after the end of every series.

``ForecastPipeline.predict(history, future=None, levels=None)`` reads a table of series
the way training read its data (same columns, frequency and checks), forecasts the
``horizon`` steps after each series' last timestamp, and returns a DataFrame in long
form: the id column (when the data has one), the time column, and per target its point
forecast under the target's name and the bounds of each central interval as
``{target}-lo-{level}`` and ``{target}-hi-{level}`` (the layout statsforecast and
NeuralForecast use). Known-future covariates for those steps come from ``future``, a
table with the id, time and future-covariate columns.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from seqlab.data.series import SeriesSet, calendar_features, read_table
from seqlab.data.series_source import Windows
from seqlab.errors import ConfigError, DataError
from seqlab.io import atomic_write
from seqlab.models.forecast_head import interval_levels
from seqlab.rundir import read_json
from seqlab.tasks.calibration import fit_factors, fitting_levels, quantile_levels
from seqlab.tasks.pipeline import Pipeline

logger = logging.getLogger("seqlab")
CALIBRATION_FILE = "calibration.json"


class ForecastPipeline(Pipeline):
    """A trained forecast run: ``.predict``, ``.predict_file``, ``.evaluate``,
    ``.calibrate``."""

    def __init__(self, objective, model, run_dir=None):
        super().__init__(objective, model, run_dir)
        saved = self._calibration_file()
        if saved is not None and saved.exists():
            factors = read_json(saved)["factors"]
            objective.calibration = {float(k): float(v) for k, v in factors.items()}

    def _calibration_file(self) -> Path | None:
        return None if self.run_dir is None else Path(self.run_dir) / CALIBRATION_FILE

    def calibrate(self) -> dict | None:
        """Fit (once; kept in ``calibration.json``) and use the interval factors of
        ``seqlab.tasks.calibration`` on the run's validation split. None, with a warning,
        when the run has no probabilistic head, ``task_options.calibrate`` is off, or
        the data or enough validation values are missing."""
        objective = self.objective
        if objective.calibration is not None or getattr(self, "_uncalibrated", False):
            return objective.calibration
        self._uncalibrated = True  # until the factors are fitted: warn and try only once
        if not objective.options.calibrate or not self.model.head.probabilistic:
            return None
        levels = objective.options.levels
        source = objective.source
        try:
            source.load(self.tokenizer, source.fitted())
        except (OSError, DataError, ConfigError) as e:
            logger.warning("intervals left uncalibrated: the run's data is unreadable (%s)", e)
            return None
        medians, bounds, values = [], [], []
        with torch.no_grad():
            for i, batch in enumerate(source.eval_sets()["val"]()):
                batch = objective.transform(batch.to(self.device), key=(1, i))
                q = objective.predictive(self.model, batch).quantiles(quantile_levels(levels))
                ex = batch.extras
                y = objective.horizon_targets(batch).float() * ex["scale"][:, None] + \
                    ex["loc"][:, None]
                medians.append(q[..., 0].reshape(-1).cpu())
                bounds.append(q[..., 1:].reshape(-1, q.shape[-1] - 1).cpu())
                values.append(y.reshape(-1).cpu())
        try:
            factors = fit_factors(torch.cat(medians), torch.cat(bounds), torch.cat(values),
                                  fitting_levels(levels))
        except DataError as e:
            logger.warning("intervals left uncalibrated: %s", e)
            return None
        objective.calibration, self._uncalibrated = factors, False
        saved = self._calibration_file()
        if saved is not None:
            atomic_write(saved, json.dumps({"factors": {f"{k:g}": v for k, v in factors.items()},
                                            "from": "the validation split"}, indent=2) + "\n")
        logger.info("intervals calibrated on the validation split: %s",
                    ", ".join(f"{k:g}% x{v:.2f}" for k, v in factors.items()))
        return factors

    @property
    def horizon(self) -> int:
        return self.config.data.horizon

    def _future(self, history: SeriesSet, future) -> SeriesSet:
        """The horizon's covariates and calendar for every series of ``history``."""
        o, H = self.config.data, self.horizon
        times = [history.future_times(i, H) for i in range(len(history))]
        flat = np.concatenate(times) if times else np.zeros(0)
        values = np.zeros((len(flat), len(o.future_covariates)), np.float32)
        if o.future_covariates:
            if future is None:
                raise DataError(f"this model reads known-future covariates "
                                f"({', '.join(o.future_covariates)}); pass their values for the "
                                f"{H} steps after each series as `future`")
            values = self._future_values(history, future, times)
        n = len(flat)
        return SeriesSet(ids=history.ids, target=np.zeros((n, 0), np.float32),
                         past=np.zeros((n, 0), np.float32), future=values,
                         calendar=calendar_features(flat, o.calendar), static=history.static,
                         offsets=np.arange(len(history) + 1) * H, times=flat, freq=history.freq)

    def _future_values(self, history: SeriesSet, future, times: list) -> np.ndarray:
        import pandas as pd

        o = self.config.data
        where = "future" if isinstance(future, pd.DataFrame) else str(future)
        frame = read_table(future, where)
        needed = [o.time, *([o.id] if o.id else []), *o.future_covariates]
        absent = [c for c in needed if c not in frame.columns]
        if absent:
            raise DataError(f"{where}: no column(s) {', '.join(map(repr, absent))} (the future "
                            f"covariates this model reads); it has {', '.join(map(str, frame.columns))}")
        stamps = frame[o.time]
        if not pd.api.types.is_integer_dtype(stamps):
            stamps = pd.to_datetime(stamps).to_numpy("datetime64[ns]")
        keys = frame[o.id].astype(str).to_numpy() if o.id else np.full(len(frame), history.ids[0])
        lookup = {(k, t): i for i, (k, t) in enumerate(zip(keys, np.asarray(stamps)))}
        rows = []
        for sid, wanted in zip(history.ids, times):
            found = [lookup.get((sid, t)) for t in np.asarray(wanted)]
            if any(f is None for f in found):
                missing = [str(t) for t, f in zip(np.asarray(wanted), found) if f is None][:3]
                raise DataError(f"{where}: series {sid!r} has no future covariates for "
                                f"{', '.join(missing)} (the {self.horizon} steps after its last "
                                "timestamp are needed)")
            rows += found
        values = frame[o.future_covariates].to_numpy(np.float64)[rows]
        bad = ~np.isfinite(values)
        if bad.any():
            j = int(np.argmax(bad.any(0)))
            raise DataError(f"{where}: future covariate {o.future_covariates[j]!r} is missing "
                            f"(NaN or infinite) in {int(bad[:, j].sum())} of the forecast steps")
        return values.astype(np.float32)

    @torch.no_grad()
    def predict(self, history, future=None, *, levels=None, batch_size: int = 64):
        """The forecast DataFrame (see the module docstring) of the steps after ``history``."""
        import pandas as pd

        objective, source, head = self.objective, self.objective.source, self.model.head
        levels = list(objective.options.levels if levels is None else levels)
        if levels and not head.probabilistic:
            levels = []
        if levels:
            self.calibrate()
        data = source._read(history)
        data.check_length(source.options.context, f"a context of {source.options.context}")
        ends = data.lengths()
        scale = source.scales(data, ends)
        ahead = self._future(data, future)
        o, H = self.config.data, self.horizon
        points, bounds = [], []
        for start in range(0, len(data), batch_size):
            pick = np.arange(start, min(start + batch_size, len(data)))
            batch = source.batch(data, Windows(pick, ends[pick] + H), scale, future=ahead)
            batch = objective.transform(batch.to(self.device), key=(2, start))
            forecast = objective.predictive(self.model, batch)
            points.append(forecast.point.cpu())
            if levels:
                bounds.append(forecast.quantiles(interval_levels(levels)).cpu())
        point = torch.cat(points).numpy()  # (N, H, K)
        out = {}
        if o.id:
            out[o.id] = np.repeat(np.asarray(data.ids, dtype=object), H)
        out[o.time] = ahead.times
        for k, name in enumerate(o.target):
            out[name] = point[:, :, k].reshape(-1)
            if levels:
                q = torch.cat(bounds).numpy()  # (N, H, K, 2L)
                for j, level in enumerate(levels):
                    out[f"{name}-lo-{level:g}"] = q[:, :, k, 2 * j].reshape(-1)
                    out[f"{name}-hi-{level:g}"] = q[:, :, k, 2 * j + 1].reshape(-1)
        return pd.DataFrame(out)

    forecast = predict

    def predict_file(self, data, out, *, future=None, levels=None, **options) -> int:
        """Forecasts of ``data`` written to ``out`` (.csv, .tsv or .parquet); the row count."""
        out = table_path(out)
        return write_table(self.predict(data, future, levels=levels), out)


def table_path(out) -> Path:
    """``out`` as a Path, refused unless it ends in .csv, .tsv or .parquet."""
    out = Path(out)
    if out.suffix not in (".csv", ".tsv", ".parquet"):
        raise ConfigError(f"{out}: tables are written as .csv, .tsv or .parquet")
    return out


def write_table(frame, out: Path) -> int:
    """Write a DataFrame atomically as .csv, .tsv or .parquet (by ``out``'s suffix, see
    ``table_path``); the row count."""
    if out.suffix == ".parquet":
        import io

        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        atomic_write(out, buffer.getvalue())
    else:
        atomic_write(out, frame.to_csv(index=False, sep="\t" if out.suffix == ".tsv" else ","))
    return len(frame)


__all__ = ["ForecastPipeline", "table_path", "write_table"]
