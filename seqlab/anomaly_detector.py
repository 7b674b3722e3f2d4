"""``seqlab.AnomalyDetector``: anomaly detection in the style of scikit-learn and Darts.

    from seqlab import AnomalyDetector
    d = AnomalyDetector(model="lstm", context=96, id="id", label="anomaly").fit(df)
    d.score(df)           # per step: score, detected (and the label column, if any)
    d.evaluate(df)        # precision, recall, F1, point-adjusted F1, AUROC, AUPRC
    s = d.stream()        # s.update(new_rows) as they arrive, constant memory
    d.save("runs/watch")  # seqlab.load("runs/watch").score(df)

The ``anomaly`` objective (``seqlab.tasks.anomaly``) under a Forecaster's workflow: a
next-step model trained on the table, its threshold set from the training split's scores
(``threshold_quantile``, default 0.99, or ``false_alarm_rate``). Every argument of
``Forecaster`` applies; the horizon (the validation forecast's) defaults to 1.
"""

from __future__ import annotations

from pathlib import Path

from seqlab.forecaster import Forecaster


class AnomalyDetector(Forecaster):
    """See the module docstring. ``loss``: ``student_t`` (default), ``normal``, ``mse``
    or ``mae``; ``label``: the 0/1 column of labelled anomalies, when tables have one."""

    def __init__(self, model="lstm", *, context: int = 64, horizon: int = 1,
                 loss: str = "student_t", threshold_quantile: float | None = None,
                 false_alarm_rate: float | None = None, label: str | None = None, **kwargs):
        super().__init__(model, context=context, horizon=horizon, loss=loss, **kwargs)
        self.params.update(threshold_quantile=threshold_quantile,
                           false_alarm_rate=false_alarm_rate, label=label)

    def config_dict(self, data_path: str, val_steps: int | None = None) -> dict:
        config = super().config_dict(data_path, val_steps)
        p = self.params
        config["task"] = "anomaly"
        config["task_options"] = {"paths": 50, **config["task_options"],
                                  "threshold_quantile": p["threshold_quantile"],
                                  "false_alarm_rate": p["false_alarm_rate"], "label": p["label"]}
        return config

    def fit(self, df, *, val_steps: int | None = None) -> "AnomalyDetector":
        """Train on ``df`` and set the threshold from its training split. Returns self."""
        super().fit(df, val_steps=val_steps)
        self.pipeline.threshold()
        return self

    @property
    def threshold(self) -> float:
        return self._fitted().threshold()

    def score(self, df=None):
        """Per-step scores and flags of every series of ``df`` (default: the training data)."""
        return self._fitted().score(self._data(df))

    detect = score

    def evaluate(self, df=None) -> dict[str, float]:
        """Detection metrics against the ``label`` column of ``df``."""
        return self._fitted().detection(self._data(df))

    def stream(self):
        """An ``AnomalyStream``: ``.update(rows)`` scores rows as they arrive."""
        return self._fitted().stream()

    def plot(self, df=None, path: str | Path | None = None) -> Path:
        """The anomaly plot of ``df`` (default path: the run's ``plots/anomalies.png``)."""
        path = Path(path) if path is not None else self.run_dir / "plots" / "anomalies.png"
        self._fitted().plot(self.score(df), path)
        return path

    def _data(self, df):
        from seqlab.errors import ConfigError

        if df is None and getattr(self, "_train", None) is None:
            raise ConfigError("pass the series to score: score(df)")
        return self._train if df is None else df


__all__ = ["AnomalyDetector"]
