"""Anomaly detection on the synthetic multivariate benchmark: seqlab's AnomalyDetector
(lstm, gru, mamba, attention) against rolling and seasonal z-score baselines and an
AutoETS residual, on the same held-out steps.

Data: ``seqlab.datasets.synthetic_series.make_series`` (40 hourly series of 1000-2000
steps, two targets ``y`` and ``y2``, price and promo covariates, 1% of rows in labelled
anomalies of five kinds, seed 0). Every series is split by time (``split_by_time``): the
first 70% trains every detector and sets its threshold, the last 30% is held out and is
where every metric is measured. Whole series are scored; early steps are in the
training part and never evaluated.

seqlab: ``AnomalyDetector`` with context 96, horizon 1, Student-t head, both targets,
future covariates price and promo, calendar hour and day of week, d_model 64, 2 layers
(models given as mappings: the name ``mamba`` alone is the 256-wide, 4-layer preset),
the same steps, batch and lr for each; the last training step of every series
validates it, once, at the end (the anomaly objective validates by rolling out 50 sample
paths of every window, which otherwise dominates a CPU run), and interval calibration
is off (scores read the head's spread, not the intervals). Its threshold flags 1% of the
training part's normal steps (``false_alarm_rate=0.01``, labelled anomalies left out).
``score`` reads each whole series in one call, so the series' scale comes from all its
rows; the last table also scores the training part first and then streams the held-out
part, so the scale comes from the training rows only (as in training and in the
threshold).

Baselines (numpy/pandas, per target, then the root mean square over targets as seqlab
combines them): ``rolling_z``, the distance from the trailing 48-step mean in trailing
standard deviations; ``seasonal_z``, the residual ``y_t - y_{t-24}`` standardised by its
median and MAD (x 1.4826) over the training part; ``ets_z`` (when statsforecast is
installed), the one-step residual of an AutoETS (season 24) fitted on the training part
and run over the whole series with its fitted parameters, standardised the same way.
Their thresholds are set exactly as seqlab's (``threshold_for``, 1% false alarms on the
same training steps) and everything is scored by ``detection_scores``.

    python benchmarks/bench_anomaly.py [--quick] [--steps 1500] [--threads 1]  (~10 min)
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import markdown_table, parse_args, report

# Mappings, not names: the name "mamba" is also a preset (d_model 256, 4 layers), which
# the Forecaster picks over the mixer and then ignores d_model and n_layers.
MODELS = {
    "lstm": {"mixer": "lstm", "position": "none", "ffn": "none", "norm": "layernorm"},
    "gru": {"mixer": "gru", "position": "none", "ffn": "none", "norm": "layernorm"},
    "mamba": {"mixer": "mamba", "position": "none", "ffn": "none", "norm": "rmsnorm"},
    "attention": {"mixer": "attention", "position": "rope", "n_heads": 4},
}
TARGETS = ["y", "y2"]
KINDS = ("spike", "level_shift", "variance", "flatline", "seasonal")
CONTEXT, VAL, TRAIN_FRACTION, RATE = 96, 1, 0.7, 0.01
BATCH, LR, D_MODEL, LAYERS = 32, 2e-3, 64, 2
WINDOW, SEASON = 48, 24
METRICS = ("f1", "f1_point_adjusted", "precision", "recall", "auroc", "auprc")


def benchmark(quick: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The full table with a ``part`` column (train / test) and where each row sits in
    its series (``place``), and the training part alone."""
    from seqlab.datasets.synthetic_series import make_series, split_by_time

    # quick: too few rows at 1% for an anomaly to reach the held-out part
    size = dict(n_series=8, min_length=300, max_length=400, anomaly_rate=0.03) if quick else \
        dict(n_series=40, min_length=1000, max_length=2000, anomaly_rate=RATE)
    df = make_series(**size, freq="h", n_targets=2, seed=0)
    train, _ = split_by_time(df, TRAIN_FRACTION)
    by_id = df.groupby("id", sort=False)
    df["place"] = by_id.cumcount()
    df["part"] = np.where(df["place"] < np.floor(TRAIN_FRACTION * by_id["id"].transform("size")),
                          "train", "test")
    return df, train


def reference(df: pd.DataFrame) -> np.ndarray:
    """Rows whose scores set a threshold: the training part less its last ``VAL`` steps
    per series, as seqlab's threshold leaves its validation steps out."""
    train = df["part"].to_numpy() == "train"
    from_end = df[train].groupby("id", sort=False).cumcount(ascending=False)
    out = np.zeros(len(df), bool)
    out[np.flatnonzero(train)[from_end.to_numpy() >= VAL]] = True
    return out


# -- baselines ----------------------------------------------------------------------------

def _robust_z(resid: np.ndarray, train: np.ndarray) -> np.ndarray:
    """|resid - median| / (1.4826 MAD), both over the training rows."""
    r = resid[train & np.isfinite(resid)]
    mid = np.median(r)
    mad = 1.4826 * np.median(np.abs(r - mid))
    return np.abs(resid - mid) / max(mad, 1e-8)


def rolling_z(y: np.ndarray, train: np.ndarray) -> np.ndarray:
    s = pd.Series(y).shift(1).rolling(WINDOW, min_periods=WINDOW)
    return (np.abs(y - s.mean()) / s.std().clip(lower=1e-8)).to_numpy()


def seasonal_z(y: np.ndarray, train: np.ndarray) -> np.ndarray:
    resid = np.full(len(y), np.nan)
    resid[SEASON:] = y[SEASON:] - y[:-SEASON]
    return _robust_z(resid, train)


def ets_z(y: np.ndarray, train: np.ndarray) -> np.ndarray:
    from statsforecast.models import AutoETS

    model = AutoETS(season_length=SEASON).fit(y[train])
    fitted = model.forward(y, h=1, fitted=True)["fitted"]  # one-step predictions, train params
    return _robust_z(y - fitted, train)


def baseline_scores(df: pd.DataFrame, fn) -> np.ndarray:
    """Root mean square over targets of ``fn``'s per-target scores, series by series."""
    out = np.full(len(df), np.nan)
    for _, rows in df.groupby("id", sort=False).indices.items():
        train = df["part"].to_numpy()[rows] == "train"
        z = np.stack([fn(df[t].to_numpy()[rows], train) for t in TARGETS], 1)  # (T, K)
        out[rows] = np.sqrt(np.mean(z ** 2, 1))
    return out


# -- seqlab -------------------------------------------------------------------------------

def fit_seqlab(name: str, train: pd.DataFrame, steps: int, threads: int, run_dir: Path):
    """A fitted AnomalyDetector (threshold set) and the seconds its ``fit`` took."""
    import seqlab

    start = time.perf_counter()
    detector = seqlab.AnomalyDetector(
        {**MODELS[name], "d_model": D_MODEL, "n_layers": LAYERS}, context=CONTEXT, horizon=1,
        id="id", target=TARGETS, freq="h", future_covariates=["price", "promo"],
        calendar=["hour", "dayofweek"], loss="student_t", false_alarm_rate=RATE,
        label="anomaly", steps=steps, batch_size=BATCH, lr=LR, seed=0, run_dir=run_dir,
        **{"train.num_threads": threads, "train.eval_every": steps, "train.eval_batches": 1,
           "task_options.calibrate": False})
    detector.fit(train, val_steps=VAL)  # includes the threshold: scoring the training table
    return detector, time.perf_counter() - start


def final_loss(run_dir: Path) -> float:
    """Mean training loss over the last tenth of the logged steps."""
    import json

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    loss = [r["loss"] for r in rows if "loss" in r]
    return float(np.mean(loss[-max(len(loss) // 10, 1):]))


def aligned(df: pd.DataFrame, scored: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``scored``'s score and flag columns in ``df``'s row order."""
    keys = df[["id", "ds"]].copy()
    keys["ds"] = pd.to_datetime(keys["ds"])
    scored = scored[["id", "ds", "score", "detected"]].copy()
    scored["id"] = scored["id"].astype(str)
    scored["ds"] = pd.to_datetime(scored["ds"])
    joined = keys.merge(scored, on=["id", "ds"], how="left", validate="one_to_one")
    return joined["score"].to_numpy(np.float64), joined["detected"].fillna(False).to_numpy(bool)


# -- scoring ------------------------------------------------------------------------------

def evaluate(df: pd.DataFrame, score: np.ndarray, flags: np.ndarray) -> dict:
    """Detection metrics and recall per kind on the held-out part."""
    from seqlab.tasks.anomaly_metrics import detection_scores, segments

    test = df["part"].to_numpy() == "test"
    labels = df["anomaly"].to_numpy()[test]
    ids = df["id"].to_numpy()[test]
    out = detection_scores(score[test], flags[test], labels, ids)
    normal = labels == 0
    out["false_alarms"] = float(flags[test][normal].mean())
    kinds = df["anomaly_kind"].to_numpy()[test]
    for kind in KINDS:
        hit = kinds == kind
        found = total = 0
        for rows in (np.flatnonzero(ids == s) for s in dict.fromkeys(ids)):
            for a, b in segments(labels[rows] * (kinds[rows] == kind)):
                total += 1
                found += bool(flags[test][rows][a:b].any())
        out[f"recall/{kind}"] = float(flags[test][hit].mean()) if hit.any() else float("nan")
        out[f"segments/{kind}"] = (found, total)
    return out


def diagnose(df: pd.DataFrame, score: np.ndarray, threshold: float) -> list:
    """Where the false alarms and the normal scores sit: early steps vs later, train vs
    held out (normal steps only)."""
    normal = df["anomaly"].to_numpy() == 0
    early = df["place"].to_numpy() < CONTEXT
    train = df["part"].to_numpy() == "train"
    cells = []
    for rows in (normal & train & early, normal & train & ~early, normal & ~train):
        s = score[rows & np.isfinite(score)]
        cells += [f"{np.median(s):.2f}", f"{100 * np.mean(s > threshold):.1f}"]
    return cells


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=1, iters=1, warmup=0,
                      extra=lambda p: p.add_argument("--steps", type=int, default=1500))
    import torch

    from seqlab.tasks.anomaly_metrics import threshold_for

    steps = 5 if args.quick else args.steps
    threads = args.threads or 1
    torch.set_num_threads(threads)
    load = [os.getloadavg()[0]]
    df, train = benchmark(args.quick)
    ref = reference(df)
    labels = df["anomaly"].to_numpy()
    results, seconds, thresholds, params, losses, diag = {}, {}, {}, {}, {}, []

    baselines = {"rolling_z": rolling_z, "seasonal_z": seasonal_z}
    if importlib.util.find_spec("statsforecast") is not None:
        baselines["ets_z"] = ets_z
    else:
        print("statsforecast is not installed: ets_z skipped")
    for name, fn in baselines.items():
        start = time.perf_counter()
        score = baseline_scores(df, fn)
        seconds[name] = time.perf_counter() - start
        thresholds[name] = threshold_for(score[ref], labels[ref], false_alarm_rate=RATE)
        results[name] = evaluate(df, score, score > thresholds[name])
        diag.append([name, f"{thresholds[name]:.2f}", *diagnose(df, score, thresholds[name])])
    load.append(os.getloadavg()[0])

    train_part = df[df["part"] == "train"].drop(columns=["place", "part"])
    held_part = df[df["part"] == "test"].drop(columns=["place", "part"])
    stream_rows = []
    with tempfile.TemporaryDirectory(prefix="bench-anomaly-") as tmp:
        for name in MODELS:
            detector, seconds[name] = fit_seqlab(name, train, steps, threads, Path(tmp) / name)
            params[name] = sum(p.numel() for p in detector.pipeline.model.parameters())
            losses[name] = final_loss(detector.run_dir)
            thresholds[name] = detector.threshold
            start = time.perf_counter()
            score, flags = aligned(df, detector.score(df.drop(columns=["place", "part"])))
            seconds[f"{name} scoring"] = time.perf_counter() - start
            results[name] = evaluate(df, score, flags)
            diag.append([name, f"{thresholds[name]:.2f}", *diagnose(df, score, thresholds[name])])
            # the same model, the scale set from the training part: stream it, then the rest
            stream = detector.stream()
            streamed = pd.concat([stream.update(train_part), stream.update(held_part)])
            s_score, s_flags = aligned(df, streamed)
            r = evaluate(df, s_score, s_flags)
            stream_rows.append([name, f"{losses[name]:.3f}"]
                               + [f"{r[m]:.3f}" for m in ("f1", "auroc", "auprc")]
                               + [f"{100 * r['false_alarms']:.1f}"])
            load.append(os.getloadavg()[0])
            print(f"{name}: fit {seconds[name]:.0f} s, f1 {results[name]['f1']:.3f}, "
                  f"auroc {results[name]['auroc']:.3f}", flush=True)

    order = list(MODELS) + list(baselines)
    main_rows = [[m, f"{params[m]:,}" if m in params else "—"]
                 + [f"{results[m][k]:.3f}" for k in METRICS]
                 + [f"{100 * results[m]['false_alarms']:.1f}",
                    f"{seconds[m]:.1f}" if m in MODELS else f"— ({seconds[m]:.1f} compute)"]
                 for m in order]
    kind_rows = []
    for m in order:
        cells = []
        for kind in KINDS:
            found, total = results[m][f"segments/{kind}"]
            rec = results[m][f"recall/{kind}"]
            cells.append("—" if not total else f"{rec:.2f} ({found}/{total})")
        kind_rows.append([m] + cells)
    test = df["part"] == "test"
    n_test = int(test.sum())
    n_anom = int(df.loc[test, "anomaly"].sum())
    notes = (f"{df['id'].nunique()} series, {len(df)} hourly steps, 2 targets, seed 0; the "
             f"first {TRAIN_FRACTION:.0%} of every series trains (validation: its last {VAL} "
             f"step(s)), the last {1 - TRAIN_FRACTION:.0%} is held out: {n_test} steps, "
             f"{n_anom} of them anomalous. seqlab: context {CONTEXT}, horizon 1, Student-t, "
             f"d_model {D_MODEL}, {LAYERS} layers, {steps} steps, batch {BATCH}, lr {LR:g}, "
             f"{threads} thread(s); training seconds are the whole `fit` (training, "
             f"validation, and scoring the training table for the threshold). Thresholds of "
             f"every detector: 1% false alarms on the training part's normal steps. Metrics on "
             f"the held-out steps only; F1, precision and recall per step; point-adjusted F1 "
             f"counts a segment found when any of its steps is flagged. 'false alarms %': "
             f"share of held-out normal steps flagged (1% if the threshold carried over). "
             "Machine load (1-minute load average) at the start, after the baselines and "
             "after each seqlab model: " + ", ".join(f"{x:.1f}" for x in load) + ".")
    sections = [
        notes,
        markdown_table(["model", "parameters", "F1", "point-adjusted F1", "precision",
                        "recall", "AUROC", "AUPRC", "false alarms %", "training seconds"],
                       main_rows),
        "Recall per anomaly kind on the held-out steps (per step; in brackets, segments with "
        "at least one step flagged / segments of that kind held out):",
        markdown_table(["model", *KINDS], kind_rows),
        f"Diagnostics: median score and % flagged of normal steps, in the first {CONTEXT} "
        "steps of each series, the rest of the training part, and the held-out part:",
        markdown_table(["model", "threshold", "early median", "early flagged %",
                        "train median", "train flagged %", "held-out median",
                        "held-out flagged %"], diag),
        "seqlab models: training loss (Student-t negative log-likelihood of scaled targets, "
        "mean of the last tenth of the logged steps), and the held-out metrics when the "
        "scale comes from the training part (stream the training part, then the held-out "
        "part) instead of from the whole series:",
        markdown_table(["model", "final training loss", "F1", "AUROC", "AUPRC",
                        "false alarms %"], stream_rows),
        "Scoring seconds (seqlab `score` of every step of every series): "
        + ", ".join(f"{m} {seconds[f'{m} scoring']:.1f}" for m in MODELS) + ".",
    ]
    report("bench_anomaly", "Anomaly detection on synthetic multivariate series: seqlab "
           "mixers vs z-score and ETS baselines", args, sections)


if __name__ == "__main__":
    main()
