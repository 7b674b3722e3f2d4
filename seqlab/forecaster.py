"""``seqlab.Forecaster``: forecasting in the style of scikit-learn and Darts.

    from seqlab import Forecaster
    f = Forecaster(model="lstm", context=72, horizon=24, freq="h").fit(df)
    f.predict()            # the 24 steps after each series of df, with 80/95% intervals
    f.save("runs/demand")  # a run directory; seqlab.load("runs/demand").predict(df)

It is a thin layer over the ``forecast`` objective: ``fit`` writes the table into the
run directory (``data/train.parquet``), builds the run config, trains it with
``seqlab.fit`` and keeps the trained pipeline; everything it does, a YAML config and
``seqlab train`` do as well. ``model`` is a mixer name (``lstm``, ``gru``, ``attention``,
``mamba``, ``s4d``, ...; built at ``d_model`` and ``n_layers``), a preset name (one that is
also a mixer's name means the mixer: pass ``{"preset": name}`` for the preset), or a
mapping of ``model`` config keys.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from seqlab.errors import ConfigError

_RECURRENT = ("lstm", "gru", "rnn")


def model_section(model: Any, *, d_model: int, n_layers: int, window: int) -> dict:
    """The ``model`` config of a Forecaster's ``model`` argument."""
    from seqlab.models.presets import PRESETS
    from seqlab.nn.mixers import MIXERS

    if isinstance(model, dict):
        return {"context_length": window, **model}
    if not isinstance(model, str):
        raise ConfigError(f"Forecaster model must be a mixer name, a preset name or a mapping "
                          f"of model keys, got {type(model).__name__}")
    if model in PRESETS and model not in MIXERS:  # a mixer's name means that mixer, sized
        return {"preset": model, "context_length": window}
    if model not in MIXERS:
        raise ConfigError(f"Forecaster model {model!r} is neither a mixer ({', '.join(MIXERS)}) "
                          f"nor a preset ({', '.join(PRESETS)})")
    section = {"mixer": model, "d_model": d_model, "n_layers": n_layers, "context_length": window}
    if model in _RECURRENT:  # the recurrence is the model: no ffn, norm or positions needed
        section.update(position="none", ffn="none", norm="layernorm")
    elif model == "attention":
        section.update(position="rope", n_heads=4)
    else:
        section.update(position="none")
    return section


class Forecaster:
    """A forecasting model over a pandas DataFrame (see the module docstring).

    Args:
        model: mixer name, preset name, or a mapping of ``model`` keys.
        context, horizon: steps read and steps forecast.
        loss: ``normal``, ``student_t``, ``negbin``, ``quantile``, ``mse`` or ``mae``.
        levels: central prediction intervals reported, in percent.
        time, target, id, past_covariates, future_covariates, static_covariates,
        calendar, freq, scaling, scale_by, missing, season: the ``data`` options of the series
            source (``seqlab.data.series``).
        steps, batch_size, lr, seed, d_model, n_layers: training and model size.
        run_dir: where the run goes (default: a temporary directory, kept until
            ``save`` copies it or the process ends).
        **options: further sections' keys as ``section.key`` (``train.weight_decay``).
    """

    def __init__(self, model: Any = "lstm", *, context: int = 64, horizon: int = 16,
                 loss: str = "normal", levels=(80, 95), time: str = "ds", target="y",
                 id: str | None = None, past_covariates=(), future_covariates=(),
                 static_covariates=(), calendar=(), freq: str | None = None,
                 scaling: str = "standard", scale_by: str = "series", missing: str = "error",
                 season: int | None = None,
                 steps: int = 500, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                 d_model: int = 64, n_layers: int = 2, run_dir: str | Path | None = None,
                 **options: Any):
        self.params = dict(locals())
        for key in ("self", "options"):
            self.params.pop(key)
        self.options = options
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.pipeline = None
        self._tmp = None

    def config_dict(self, data_path: str, val_steps: int | None = None) -> dict:
        """The run config ``fit`` trains (plain data, as a YAML file would hold it)."""
        p = self.params
        data = {"source": "series", "path": data_path, "time": p["time"], "target": p["target"],
                "id": p["id"], "past_covariates": list(p["past_covariates"]),
                "future_covariates": list(p["future_covariates"]),
                "static_covariates": list(p["static_covariates"]),
                "calendar": list(p["calendar"]), "freq": p["freq"], "scaling": p["scaling"],
                "scale_by": p["scale_by"],
                "missing": p["missing"], "season": p["season"], "context": p["context"],
                "horizon": p["horizon"], "val_steps": val_steps}
        config = {
            "task": "forecast", "seed": p["seed"],
            "task_options": {"loss": p["loss"], "levels": [float(v) for v in p["levels"]]},
            "model": model_section(p["model"], d_model=p["d_model"], n_layers=p["n_layers"],
                                   window=p["context"] + p["horizon"]),
            "data": data,
            "train": {"steps": p["steps"], "batch_size": p["batch_size"], "lr": p["lr"],
                      "eval_every": max(p["steps"] // 5, 1), "progress": False}}
        for dotted, value in self.options.items():
            section, _, key = dotted.partition(".")
            sections = [k for k, v in config.items() if isinstance(v, dict)]
            if not key or section not in sections:
                raise ConfigError(f"Forecaster option {dotted!r}: give further options as "
                                  f"section.key, one of the sections {', '.join(sections)}")
            config[section] = {**config[section], key: value}
        return config

    def fit(self, df, *, val_steps: int | None = None) -> "Forecaster":
        """Train on ``df`` (a DataFrame, or a CSV/Parquet path); the last ``val_steps``
        of every series (default: one horizon) validate it. Returns self."""
        import pandas as pd

        import seqlab
        from seqlab.config import RunConfig
        from seqlab.data.series import read_table

        if self.run_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="seqlab-forecaster-")
            self.run_dir = Path(self._tmp.name) / "run"
        frame = read_table(df, "the training data")
        stored = self.run_dir / "data" / "train.parquet"
        stored.parent.mkdir(parents=True, exist_ok=True)
        if not isinstance(frame, pd.DataFrame):  # pragma: no cover - read_table returns frames
            raise ConfigError("Forecaster.fit needs a table")
        frame.to_parquet(stored, index=False)
        config = RunConfig.from_dict(self.config_dict(str(stored), val_steps),
                                     source="Forecaster")
        self.result = seqlab.fit(config, self.run_dir)
        self.pipeline = seqlab.load(self.run_dir)
        self.pipeline.calibrate()  # intervals rescaled on the validation split (if enabled)
        self._train = frame
        return self

    def _fitted(self):
        if self.pipeline is None:
            raise ConfigError("this Forecaster is not fitted yet; call fit(df) first")
        return self.pipeline

    @property
    def metrics(self) -> dict:
        """The last validation metrics of training (empty for a loaded Forecaster); the
        weights kept are those of the lowest validation loss."""
        return dict(self.result.metrics) if getattr(self, "result", None) is not None else {}

    def predict(self, df=None, future=None, *, levels=None):
        """The forecast DataFrame of the ``horizon`` steps after each series of ``df``
        (default: the training data); ``future`` gives known-future covariates."""
        if df is None and self._train is None:
            raise ConfigError("pass the series to forecast from: predict(df)")
        return self._fitted().predict(self._train if df is None else df, future, levels=levels)

    def backtest(self, df=None, *, windows: int = 3, baselines=("seasonal_naive",),
                 refit: bool = False, levels=None) -> dict[str, dict]:
        """Rolling-origin scores (``seqlab.tasks.backtest``) of this model and
        ``baselines`` on ``df`` (default: the training data), ``windows`` origins per
        series one horizon apart. ``refit``: train a fresh model on each origin's history
        (every series cut at that origin) instead of scoring the fitted one everywhere."""
        from seqlab.tasks.backtest import backtest, merge_scores

        data = self._train if df is None else df
        if data is None:
            raise ConfigError("pass the series to backtest on: backtest(df)")
        levels = self.params.get("levels", (80, 95)) if levels is None else levels
        compared = {"model": self._fitted(), **{b: b for b in baselines}}
        if not refit:
            return backtest(compared, data, windows=windows, levels=levels)
        from seqlab.data.series import read_table

        p = self.params
        frame = read_table(data, "the backtest data").sort_values(
            [c for c in (p["id"], p["time"]) if c], kind="stable")
        # each row's place from the end of its series
        from_end = (frame.groupby(p["id"], sort=False).cumcount(ascending=False) if p["id"]
                    else np.arange(len(frame))[::-1])
        parts = []
        for j in range(windows, 0, -1):  # origin j: every series without its last j horizons
            seen = frame[from_end >= (j - 1) * p["horizon"]]
            train = frame[from_end >= j * p["horizon"]]
            fresh = type(self)(**{**p, "run_dir": None}, **self.options).fit(train)
            compared = {"model": fresh.pipeline, **{b: b for b in baselines}}
            parts.append(backtest(compared, seen, windows=1, levels=levels))
        return merge_scores(parts)

    def save(self, path: str | Path) -> Path:
        """Copy the run directory to ``path``; ``seqlab.load(path)`` reads it back."""
        self._fitted()
        path = Path(path)
        if path.exists():
            raise ConfigError(f"{path} exists; save to a new directory")
        shutil.copytree(self.run_dir, path)
        _repoint(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Forecaster":
        """A fitted Forecaster from a saved run (``predict`` then needs ``df``)."""
        import seqlab

        forecaster = cls.__new__(cls)
        forecaster.params, forecaster.options, forecaster._tmp = {}, {}, None
        forecaster.run_dir = Path(path)
        forecaster.pipeline = seqlab.load(path)
        forecaster.result, forecaster._train = None, None
        return forecaster


def _repoint(run_dir: Path) -> None:
    """Point a copied run's config at its own copy of the training table."""
    import yaml

    from seqlab.io import atomic_write
    from seqlab.rundir import CONFIG_FILE

    config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    config["data"]["path"] = str((run_dir / "data" / "train.parquet").resolve())
    atomic_write(run_dir / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


__all__ = ["Forecaster", "model_section"]
