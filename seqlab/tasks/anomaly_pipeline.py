"""Scoring series with a trained ``anomaly`` run: whole tables or a stream of rows.

``AnomalyPipeline.score(table)`` returns one row per step: the id column (when the data
has one), the time column, the targets, ``score`` (NaN for a series' first step),
``detected`` (the score passes the run's threshold) and the label column when the table
has it. ``stream()`` returns an :class:`AnomalyStream`, which scores rows as they
arrive: each series keeps only the model's streaming state, its last values and its
scale between calls, so memory stays constant in the length of the stream for mixers
whose state does (lstm, gru, rnn, mamba, s4d; window attention keeps its window;
full attention's cache grows with the stream, and past the window length it was trained
on its forecasts, and so its scores, drift: bench_anomaly measured normal-step scores
doubling over 1000-step series, so stream long series through a recurrent or
state-space detector). Scoring a table is streaming it in one
call; either way the model reads ``task_options.chunk`` steps per call, and the
chunked == stepwise law of the state protocol makes the scores the same.

The first rows a stream sees of a series set its scale (standard or mean-absolute, as
trained): give at least ``data.context`` steps first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seqlab.data.series import read_table
from seqlab.data.series_layout import lag_targets
from seqlab.data.series_source import Windows
from seqlab.errors import DataError
from seqlab.io import atomic_write
from seqlab.rundir import read_json
from seqlab.tasks.anomaly_metrics import detection_scores, threshold_for
from seqlab.tasks.forecast_predict import ForecastPipeline, table_path, write_table

logger = logging.getLogger("seqlab")
THRESHOLD_FILE = "anomaly.json"


@dataclass
class _Track:
    """What a stream keeps of one series between calls."""

    state: object
    last: torch.Tensor  # (K,) the last scaled values (NaN: missing)
    loc: np.ndarray
    scale: np.ndarray
    naive: np.ndarray
    next_time: object  # the timestamp the next row must have


class AnomalyStream:
    """Scores rows of series as they arrive (see the module docstring)."""

    def __init__(self, pipeline: "AnomalyPipeline", threshold: float | None = None):
        self.pipeline, self.tracks = pipeline, {}
        self.threshold = pipeline.threshold() if threshold is None else threshold

    @torch.no_grad()
    def update(self, rows):
        """Scores (a DataFrame, see the module docstring) of new ``rows`` (a table with
        the training columns); each series' rows must follow its previous ones."""
        import pandas as pd

        p = self.pipeline
        source, o = p.objective.source, p.config.data
        where = str(rows) if isinstance(rows, (str, Path)) else "the rows"
        rows = read_table(rows, where)  # read once: the series, then their labels
        data = source._read(rows, where=where)
        k = len(o.target)
        frames = []
        for i, sid in enumerate(data.ids):
            n = int(data.lengths()[i])
            track = self.tracks.get(sid)
            first = data.times[int(data.offsets[i])]
            if track is None:
                if n < o.context:
                    raise DataError(f"series {sid!r}: the first rows a stream sees of a series "
                                    f"set its scale; give at least data.context = {o.context} "
                                    f"of them, got {n}")
                loc, scale, naive = source.scales_of(data, i, n)
                track = _Track(p.model.init_state(1, device=p.device),
                               torch.full((k,), float("nan")), loc, scale, naive, None)
            elif first != track.next_time:
                raise DataError(f"series {sid!r}: the stream expected its next row at "
                                f"{track.next_time}, got {first} (rows must continue each "
                                "series without gaps or repeats)")
            scales = tuple(a[None] for a in (track.loc, track.scale, track.naive))
            batch = source.batch(data, Windows(np.array([i]), np.array([n])), scales,
                                 scale_index=np.array([0]), context=n, horizon=0)
            lagged = lag_targets(batch, context=n, n_targets=k, masked=o.missing == "mask")
            y = batch.inputs[0, :, :k]  # (n, K) each row's own scaled values
            if o.missing == "mask":
                y = torch.where(batch.inputs[0, :, k:2 * k] > 0.5, y, torch.full((), float("nan")))
            x = lagged.inputs.clone()
            x[0, 0, :k] = torch.nan_to_num(track.last)  # the previous call's last values
            if o.missing == "mask":
                x[0, 0, k:2 * k] = torch.isfinite(track.last).float()
            x = x.to(p.device)
            params, state = [], track.state
            for j in range(0, n, p.objective.options.chunk):
                out = p.model(x[:, j:j + p.objective.options.chunk], state)
                params.append(out.logits.float().cpu())
                state = out.state
            score = p.objective.scores(p.model, torch.cat(params, 1), y[None])[0]
            if track.next_time is None:
                score[0] = float("nan")  # a series' first step has no forecast
            self.tracks[sid] = _Track(state, y[-1].clone(), track.loc, track.scale, track.naive,
                                      data.future_times(i, 1)[0])
            frame = {}
            if o.id:
                frame[o.id] = [sid] * n
            frame[o.time] = data.times[data.rows(i)]
            for j, name in enumerate(o.target):
                frame[name] = data.target[data.rows(i), j]
            frame["score"] = score.numpy().astype(np.float64)
            frame["detected"] = frame["score"] > self.threshold
            frames.append(pd.DataFrame(frame))
        return _with_labels(pd.concat(frames, ignore_index=True), rows, p)


def _with_labels(scored, frame, pipeline):
    """``scored`` with the label column of the table ``frame`` joined on (id, time), if
    it has one."""
    import pandas as pd

    label, o = pipeline.objective.options.label, pipeline.config.data
    if label is None or label not in frame.columns:
        return scored
    keys = [c for c in (o.id, o.time) if c]
    labels = frame[keys + [label]].copy()
    if o.id:
        labels[o.id] = labels[o.id].astype(str)
    if not pd.api.types.is_integer_dtype(labels[o.time]):
        labels[o.time] = pd.to_datetime(labels[o.time])
    return scored.merge(labels, on=keys, how="left")


class AnomalyPipeline(ForecastPipeline):
    """A trained anomaly run: ``.score``, ``.stream``, ``.threshold``, ``.detection``,
    and the forecast pipeline's ``.predict`` (next steps, rolled out)."""

    def threshold(self) -> float:
        """The flagging threshold (see ``seqlab.tasks.anomaly``), computed on first use
        from the run's training split and kept in the run directory."""
        if getattr(self, "_threshold", None) is not None:
            return self._threshold
        saved = self.run_dir / THRESHOLD_FILE if self.run_dir is not None else None
        if saved is not None and saved.exists():
            self._threshold = float(read_json(saved)["threshold"])
            return self._threshold
        o, options = self.config.data, self.objective.options
        scored = AnomalyStream(self, threshold=float("inf")).update(o.path)
        held = o.val_steps + o.test_steps
        place = scored.groupby(o.id, sort=False).cumcount(ascending=False) if o.id else \
            np.arange(len(scored))[::-1]
        train = scored[np.asarray(place) >= held]
        labels = train[options.label].to_numpy() if options.label in train.columns else None
        self._threshold = threshold_for(train["score"].to_numpy(), labels,
                                        quantile=options.threshold_quantile,
                                        false_alarm_rate=options.false_alarm_rate)
        if saved is not None:
            how = (f"quantile {options.threshold_quantile}" if options.false_alarm_rate is None
                   else f"false-alarm rate {options.false_alarm_rate}")
            atomic_write(saved, __import__("json").dumps(
                {"threshold": self._threshold, "from": f"training split of {o.path}, {how}"},
                indent=2) + "\n")
        return self._threshold

    def stream(self) -> AnomalyStream:
        return AnomalyStream(self)

    def score(self, data):
        """Per-step scores and flags of every series of ``data`` (see the module docstring)."""
        return AnomalyStream(self).update(data)

    def detection(self, data) -> dict[str, float]:
        """Detection metrics (``seqlab.tasks.anomaly_metrics``) of ``data``'s labels."""
        label, o = self.objective.options.label, self.config.data
        scored = self.score(data)
        if label is None or label not in scored.columns:
            absent = f" ({label!r} is not in the table)" if label else ""
            raise DataError(f"detection metrics need labels: set task_options.label to the 0/1 "
                            f"column of labelled anomalies{absent}")
        if scored[label].isna().any():
            raise DataError(f"column {label!r} has missing labels")
        return detection_scores(scored["score"].to_numpy(), scored["detected"].to_numpy(),
                                scored[label].to_numpy(),
                                scored[o.id].to_numpy() if o.id else None)

    def evaluate(self, data=None, *, max_batches: int | None = None,
                 batch_size: int | None = None) -> dict[str, float]:
        """The next-step forecast metrics (validation split, or the last window of every
        series of ``data``) and, when the table has the label column, the detection
        metrics of every step of it (``data``, or the run's own table), as ``detect_*``."""
        metrics = super().evaluate(data, max_batches=max_batches, batch_size=batch_size)
        table = self.config.data.path if data is None else data
        label = self.objective.options.label
        if label is not None and table is not None:
            frame = read_table(table, str(table) if isinstance(table, (str, Path)) else "data")
            if label in frame.columns:
                metrics.update({f"detect_{k}": v for k, v in self.detection(frame).items()})
        return metrics

    def plot(self, scored, path, *, series: int = 3) -> None:
        """``plots/anomalies.png``-style figure of the first ``series`` series of a
        ``score`` frame."""
        from seqlab.plots import plot_anomalies

        o, label = self.config.data, self.objective.options.label
        groups = scored.groupby(o.id, sort=False) if o.id else [("series", scored)]
        panels = []
        for name, part in list(groups)[:series]:
            panels.append({"name": str(name), "values": part[o.target[0]].tolist(),
                           "score": part["score"].tolist(), "detected": part["detected"].tolist(),
                           "labels": part[label].tolist() if label in part.columns else None})
        plot_anomalies(panels, Path(path), threshold=self.threshold())

    def predict_file(self, data, out, *, future=None, levels=None, **options) -> int:
        """Per-step scores of ``data`` written to ``out`` (.csv, .tsv or .parquet)."""
        out = table_path(out)
        scored = self.score(data)
        if self.run_dir is not None:
            self.plot(scored, self.run_dir / "plots" / "anomalies.png")
        return write_table(scored, out)


__all__ = ["AnomalyPipeline", "AnomalyStream", "THRESHOLD_FILE"]
