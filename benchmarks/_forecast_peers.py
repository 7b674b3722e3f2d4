"""NeuralForecast's NHITS and PatchTST as peers of seqlab's forecasting mixers in
``bench_forecast.py``: the same training rows, context, horizon, steps, batch and learning
rate, sized to seqlab's models, and scored on ``seqlab.tasks.backtest``'s own windows by
its own ``score``.

How each is matched, and why:

- Rows: the series as seqlab's source reads them (``source._read``, the reader
  ``backtest`` uses), their time column replaced by the step number (NF only orders by it;
  neither peer takes calendar features). ``val_size`` is one horizon, the rows seqlab's
  ``Forecaster.fit`` holds out for validation, so both train on the same windows; NF never
  runs that validation (``limit_val_batches=0``) and keeps its last weights, where seqlab
  evaluates 5 times and keeps its best (inside its timed ``fit``).
- Batches: NF's ``batch_size`` counts series per step and ``windows_batch_size`` the
  windows drawn from them. Both are seqlab's batch (32): every data set here has at most
  12 series, so each step cuts the windows of all of them and draws 32, as one seqlab step
  trains on 32 windows. Training windows per second is therefore
  ``max_steps * windows_batch_size / fit seconds``, as seqlab's is
  ``steps * batch_size / fit seconds``; and, for the training loop alone, the median
  rate over spans of 10 steps (``loop_rate``), as seqlab's trainer logs it.
- Scaling: ``scaler_type="standard"``, NF's per-window normalisation (each window by its
  own input), as seqlab's ``scale_by: window``. PatchTST's RevIN is off: it de-normalises
  every output channel, the Student-t's scale and degrees of freedom included.
- Loss: ``DistributionLoss("StudentT", level=[80, 95])``, as seqlab's ``student_t`` head;
  the point forecast is the predictive median (the Student-t's location, which is seqlab's
  point), the quantiles NF's empirical ones from its 1000 samples.
- Size: hidden sizes are picked from a short list to bring the trainable parameter count
  nearest (in ratio) to a target the caller gives; PatchTST keeps seqlab's width, heads and
  depth (d_model 32, 4 heads, 2 layers, patches of 4) and the list varies its feed-forward
  width, since its flattened head alone holds a third to a half of its parameters.
- Training: no progress bar, logger, checkpoints, model summary or early stopping;
  ``accelerator="cpu"``, ``devices=1`` and ``torch.set_num_threads`` as seqlab's run.
  Optimiser and schedule are each peer's own (Adam; NHITS halves its rate 3 times, PatchTST
  keeps it), against seqlab's AdamW with warm-up and cosine decay.
"""

from __future__ import annotations

import importlib.util
import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

PEERS = ("NHITS", "PatchTST")
LOSS_LEVELS = [80, 95]
_QUIET_LOGGERS = ("pytorch_lightning", "lightning", "lightning_fabric", "lightning.pytorch",
                  "lightning.fabric", "neuralforecast")


def missing() -> str | None:
    """Why the peers cannot run here (None when they can)."""
    for package in ("neuralforecast", "pytorch_lightning"):
        if importlib.util.find_spec(package) is None:
            return f"NeuralForecast peers skipped: {package} is not installed"
    return None


def param_count(module: torch.nn.Module) -> int:
    """Trainable parameters (NF's losses hold their quantile levels as frozen parameters)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@dataclass
class PeerFit:
    """One trained peer: its NeuralForecast wrapper, size, the wall and CPU seconds of its
    whole ``fit``, and ``loop_rate``, the training loop's windows per second (see
    ``loop_rate``)."""

    name: str
    nf: object
    params: int
    seconds: float
    cpu_seconds: float
    loop_rate: float
    steps: int
    batch_size: int
    settings: str


class _Quiet:
    """Lightning's and NF's INFO lines ("Seed set to 0", "GPU available: False") and
    deprecation warnings off while a peer fits or predicts."""

    def __enter__(self):
        self._levels = {n: logging.getLogger(n).level for n in _QUIET_LOGGERS}
        for n in _QUIET_LOGGERS:
            logging.getLogger(n).setLevel(logging.ERROR)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        return self

    def __exit__(self, *exc):
        self._warnings.__exit__(*exc)
        for n, level in self._levels.items():
            logging.getLogger(n).setLevel(level)
        return False


def loop_rate(times: list[float], batch_size: int, every: int = 10) -> float:
    """Median windows per second over spans of ``every`` steps, ``times`` being when each
    step ended: the rate seqlab's trainer logs every ``log_every`` = 10 steps, measured
    the same way; the median leaves out the spans that held one of seqlab's validation
    passes, and the first steps' warm-up."""
    marks = times[::every]
    rates = [every * batch_size / (b - a) for a, b in zip(marks, marks[1:]) if b > a]
    return float(np.median(rates)) if rates else float("nan")


def _step_clock():
    """A Lightning callback noting the time each training step ends."""
    from pytorch_lightning.callbacks import Callback

    class StepClock(Callback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_batch_end(self, *args, **kwargs):
            self.times.append(time.perf_counter())

    return StepClock()


def frame(series, ends: np.ndarray | None = None, series_index: np.ndarray | None = None,
          names: list[str] | None = None) -> pd.DataFrame:
    """NF's long table (unique_id, ds, y) of a seqlab ``SeriesSet``: series ``series_index[j]``
    up to row ``ends[j]`` as ``names[j]`` (default: every series whole, under its id);
    ``ds`` is the step number."""
    if series.target.shape[1] != 1:
        raise ValueError(f"the NF peers forecast one target column, got {series.target.shape[1]}")
    lengths = series.lengths()
    series_index = np.arange(len(lengths)) if series_index is None else series_index
    ends = lengths[series_index] if ends is None else ends
    names = [str(series.ids[i]) for i in series_index] if names is None else names
    parts = []
    for name, i, end in zip(names, series_index, ends):
        start = int(series.offsets[i])
        y = series.target[start:start + int(end), 0].astype(np.float64)
        parts.append(pd.DataFrame({"unique_id": name, "ds": np.arange(len(y)), "y": y}))
    return pd.concat(parts, ignore_index=True)


def _common(*, context: int, horizon: int, steps: int, batch_size: int, lr: float,
            seed: int) -> dict:
    loss = _student_t()
    return dict(h=horizon, input_size=context, loss=loss, valid_loss=loss, max_steps=steps,
                learning_rate=lr, batch_size=batch_size, windows_batch_size=batch_size,
                scaler_type="standard", random_seed=seed, early_stop_patience_steps=-1,
                accelerator="cpu", devices=1, enable_progress_bar=False, logger=False,
                enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0)


def _student_t():
    from neuralforecast.losses.pytorch import DistributionLoss

    return DistributionLoss("StudentT", level=LOSS_LEVELS)


def _candidates(name: str) -> list[tuple[str, dict]]:
    if name == "NHITS":  # 3 stacks of one block, each an MLP of two layers of width w
        return [(f"3 stacks x MLP [{w}, {w}]", {"mlp_units": 3 * [[w, w]]})
                for w in range(8, 129, 4)]
    if name == "PatchTST":
        return [(f"d_model 32, 4 heads, 2 layers, d_ff {f}, patch 4",
                 {"hidden_size": 32, "n_heads": 4, "encoder_layers": 2, "linear_hidden_size": f,
                  "patch_len": 4, "stride": 4, "revin": False, "dropout": 0.1,
                  "fc_dropout": 0.1})
                for f in (16, 32, 48, 64, 96, 128)]
    raise ValueError(f"unknown peer {name!r}; valid: {', '.join(PEERS)}")


def build(name: str, *, target_params: int, **common) -> tuple[object, str]:
    """The peer model whose trainable parameter count is nearest ``target_params`` in
    ratio, and a line describing its size."""
    from neuralforecast.models import NHITS, PatchTST

    cls = {"NHITS": NHITS, "PatchTST": PatchTST}[name]
    best = None
    with _Quiet():
        for settings, sizes in _candidates(name):
            model = cls(**_common(**common), **sizes)
            gap = abs(np.log(param_count(model) / target_params))
            if best is None or gap < best[0]:
                best = (gap, model, settings)
    return best[1], best[2]


def fit(name: str, train: pd.DataFrame, *, target_params: int, context: int, horizon: int,
        steps: int, batch_size: int, lr: float, threads: int, seed: int = 0) -> PeerFit:
    """Train peer ``name`` on ``train`` (see ``frame``), its last ``horizon`` rows per
    series held out as seqlab holds them out; the fit is timed whole."""
    from neuralforecast import NeuralForecast

    model, settings = build(name, target_params=target_params, context=context,
                            horizon=horizon, steps=steps, batch_size=batch_size, lr=lr,
                            seed=seed)
    clock = _step_clock()
    model.trainer_kwargs["callbacks"] = [clock]
    torch.set_num_threads(threads)
    nf = NeuralForecast(models=[model], freq=1)
    with _Quiet():
        wall, cpu = time.perf_counter(), time.process_time()
        nf.fit(train, val_size=horizon)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    clock = nf.models[0].trainer_kwargs["callbacks"][0]  # fit trains a copy of the model
    return PeerFit(name, nf, param_count(model), wall, cpu, loop_rate(clock.times, batch_size),
                   steps, batch_size, settings)


def forecasts(peer: PeerFit, series, cuts, probabilities: list[float],
              threads: int) -> tuple[np.ndarray, np.ndarray]:
    """(W, H, 1) points (the median) and (W, H, 1, Q) quantiles at ``probabilities`` of
    every backtest window of ``cuts``: each window's history up to its origin is its own
    NF series, so one ``predict`` forecasts them all (NF forecasts after each series' end,
    from its last ``input_size`` rows; the weights are never refit)."""
    horizon = cuts.truth.shape[1]
    origins = cuts.windows.end - horizon
    names = [f"w{i:05d}" for i in range(len(origins))]
    history = frame(series, origins, cuts.windows.series, names)
    torch.set_num_threads(threads)
    with _Quiet():
        out = peer.nf.predict(df=history, quantiles=sorted(set(probabilities) | {0.5}))
    out = out.sort_values(["unique_id", "ds"])
    columns = {round(float(c.rsplit("_ql", 1)[1]), 6): c for c in out.columns
               if c.startswith(f"{peer.name}_ql")}
    W = len(names)

    def column(q: float) -> np.ndarray:
        return out[columns[round(q, 6)]].to_numpy().reshape(W, horizon, 1)  # (W, H, 1)

    point = column(0.5)
    quantiles = np.stack([column(q) for q in probabilities], -1)  # (W, H, 1, Q)
    return point, quantiles


def backtest_peers(pipelines: dict, df: pd.DataFrame, train_df: pd.DataFrame, *,
                   windows: int, targets: dict[str, int], steps: int, batch_size: int,
                   lr: float, threads: int,
                   levels=(80, 95)) -> tuple[dict[str, dict], dict[str, PeerFit]]:
    """Fit every peer on ``train_df`` and score it on ``backtest``'s windows of ``df``.

    The windows, truth and MASE scales are computed as ``seqlab.tasks.backtest.backtest``
    computes them, with the first seqlab run's source (the one ``backtest`` reads with),
    and the scores come from its ``score``: a peer's row means what a seqlab or baseline
    row means. ``targets``: peer name -> the parameter count to size it to.
    """
    from seqlab.models.forecast_head import CRPS_LEVELS, interval_levels
    from seqlab.tasks.backtest import cut, score

    source = next(iter(pipelines.values())).objective.source
    o = source.options
    series = source._read(df)
    cuts = cut(series, o.horizon, windows, o.context)
    origins = cuts.windows.end - o.horizon
    naive = source.scales(series, origins, cuts.windows.series)[2]
    levels = [float(v) for v in levels]
    probabilities = list(CRPS_LEVELS) + interval_levels(levels)
    train = frame(source._read(train_df))
    scores, fits = {}, {}
    for name in PEERS:
        peer = fit(name, train, target_params=targets[name], context=o.context,
                   horizon=o.horizon, steps=steps, batch_size=batch_size, lr=lr,
                   threads=threads)
        point, quantiles = forecasts(peer, series, cuts, probabilities, threads)
        scores[name] = {**score(point, quantiles, cuts.truth, naive, levels),
                        "windows": len(origins)}
        fits[name] = peer
    return scores, fits


__all__ = ["PEERS", "PeerFit", "backtest_peers", "build", "fit", "forecasts", "frame",
           "loop_rate", "missing", "param_count"]
