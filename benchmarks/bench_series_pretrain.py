"""Self-supervised pre-training on series (``series_pretrain``): what it gains when
histories are short or labels few, against the same config trained from scratch.

- ``forecast``: one run of each method is pre-trained (``series`` source) on many long
  synthetic hourly series (``make_series``, seed 0): ``masked`` (40% of the patches of
  each 120-step window hidden and reconstructed) on a bidirectional attention model, and
  ``next`` (each next patch from the ones before it) on the same model made causal.
  Then, for each draw of 3 *new* series (``make_series`` with another seed: other levels,
  trends, price and promo histories, seasonal phases) and each history length L, a
  ``forecast`` run (Student-t head, the same model and columns, so the input projection
  and blocks load and only the head is new) trains on the last L steps before a held-out
  test region of 4 horizons (``data.test_steps`` 96), twice with the same config: from
  scratch and fine-tuned (``seqlab.finetune(..., mode="full")``). Both are scored by
  ``seqlab.tasks.backtest.backtest`` on the 4 test horizons of every series (each window
  scaled by its own history), beside a seasonal-naive forecast of the same windows.
- ``classify``: a bidirectional GRU is pre-trained (``features`` source, ``masked``,
  spans of 8 steps) on the whole unlabelled training set of ``write_dynamics`` (which
  of 6 dynamical systems made a 3-channel sequence); then the first N sequences, with
  their labels, train a ``classify`` run from scratch and fine-tuned, scored by
  validation accuracy (500 sequences of an independent seed). Each channel of each
  sequence is standardised by its own statistics (``normalize: sequence``: the data's
  per-sequence gains and offsets carry no class information), so pre-training and
  fine-tuning see identically scaled inputs however small N is.

Both arms of a comparison share everything (config, seed, steps, batch, learning rate,
warm-up) but the initial weights, and are scored once, after the last step (not at
their best evaluation). A gain is scratch minus pre-trained for MASE and CRPS (positive:
pre-training helped) and pre-trained minus scratch for accuracy.

    python benchmarks/bench_series_pretrain.py [--quick] [--tasks forecast,classify]
        [--steps 200] [--pre-steps N] [--seeds 3] [--threads 1]
"""

from __future__ import annotations

import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import markdown_table, parse_args, report

HISTORIES, QUICK_HISTORIES = (200, 400, 800), (200,)
SIZES, QUICK_SIZES = (30, 100, 300, 1000), (30,)
CONTEXT, HORIZON, PATCH, TEST = 96, 24, 8, 96
COLUMNS = {"id": "id", "target": "y", "future_covariates": ["price", "promo"],
           "calendar": ["hour", "dayofweek"]}
FORECAST_LR, CLASSIFY_LR = 2e-3, 3e-3
BATCH = 32
SCALED = {"series": "by each series' training split, in pre-training as in fine-tuning",
          "window": "by each window's own context (a pre-training window by all of it)"}


def _options(p) -> None:
    p.add_argument("--tasks", default="forecast,classify", help="comma-separated: forecast, classify")
    p.add_argument("--steps", type=int, default=None,
                   help="steps of every fine-tuned and scratch run (default 200)")
    p.add_argument("--pre-steps", type=int, default=None,
                   help="steps of every pre-training run (default 1000 forecast, 500 classify)")
    p.add_argument("--seeds", type=int, default=None,
                   help="forecast: draws of new series (and run seeds) per history (default 3)")
    p.add_argument("--histories", default=None, help=f"forecast history lengths (default {HISTORIES})")
    p.add_argument("--sizes", default=None, help=f"classify: labelled sizes (default {SIZES})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"lr of both arms (default {FORECAST_LR:g} forecast, {CLASSIFY_LR:g} classify)")
    p.add_argument("--scale-by", default="series", choices=("series", "window"),
                   help="forecast: data.scale_by of every run, pre-training included")
    p.add_argument("--d-model", type=int, default=64)


def _train(args, steps: int, lr: float, warmup: int) -> dict:
    return {"steps": steps, "batch_size": BATCH, "lr": lr, "warmup_steps": warmup,
            "eval_every": steps, "progress": False, "num_threads": args.threads}


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs)


# -- forecasting with short histories ------------------------------------------------------

def forecast_model(args, *, causal: bool) -> dict:
    return {"mixer": "attention", "position": "rope", "n_heads": 4, "d_model": args.d_model,
            "n_layers": 2, "dropout": 0.1, "patch": PATCH, "causal": causal,
            "context_length": (CONTEXT + HORIZON) // PATCH}


def forecast_data(root: Path, histories: list[int], seeds: list[int], quick: bool) -> dict:
    """The pre-training table (seed 0) and, per seed, 3 new series cut to each history
    length plus the test region (the same test rows for every length)."""
    from seqlab.datasets.synthetic_series import make_series

    n_pre, length = (6, 400) if quick else (30, 1500)
    root.mkdir(parents=True, exist_ok=True)
    pre = make_series(n_pre, min_length=length, max_length=length, seed=0, anomaly_rate=0.0)
    pre.drop(columns=["anomaly", "anomaly_kind"]).to_csv(root / "pretrain.csv", index=False)
    tables = {}
    longest = max(histories) + TEST
    for s in seeds:
        new = make_series(3, min_length=longest, max_length=longest, seed=1000 + s,
                          anomaly_rate=0.0).drop(columns=["anomaly", "anomaly_kind"])
        for h in histories:
            part = new[new.groupby("id").cumcount(ascending=False) < h + TEST]
            tables[h, s] = root / f"new_s{s}_h{h}.csv"
            part.to_csv(tables[h, s], index=False)
    return {"pretrain": root / "pretrain.csv", "tables": tables, "n_pre": n_pre, "length": length}


def run_forecast(args, root: Path, histories: list[int], seeds: list[int]) -> list[str]:
    import pandas as pd

    import seqlab
    from seqlab.tasks.backtest import backtest

    data = forecast_data(root, histories, seeds, args.quick)
    window = {"context": CONTEXT, "horizon": HORIZON, "scale_by": args.scale_by, **COLUMNS}
    arms = {"masked": False, "next": True}  # method -> causal
    pre_info = {}
    for method, causal in arms.items():
        cfg = seqlab.RunConfig.from_dict({
            "task": "series_pretrain", "seed": 0,
            "task_options": {"method": method, "mask_ratio": 0.4},
            "model": forecast_model(args, causal=causal),
            "data": {"source": "series", "path": str(data["pretrain"]), **window},
            "train": {**_train(args, args.forecast_pre_steps, FORECAST_LR, 50),
                      "eval_batches": 20}})
        result = seqlab.fit(cfg, root / f"pre_{method}")
        pre_info[method] = result
        print(f"forecast pre-training {method}: mse {result.metrics['mse']:.3f}, "
              f"{result.seconds:.0f} s", flush=True)

    lr = args.lr or FORECAST_LR
    scores: dict = {}  # (h, method) -> lists of per-seed dicts
    seconds = []
    for h in histories:
        for s in seeds:
            table = data["tables"][h, s]
            forecasters = {"seasonal_naive": "seasonal_naive"}
            for method, causal in arms.items():
                cfg = seqlab.RunConfig.from_dict({
                    "task": "forecast", "seed": s, "task_options": {"loss": "student_t"},
                    "model": forecast_model(args, causal=causal),
                    "data": {"source": "series", "path": str(table), **window,
                             "test_steps": TEST},
                    "train": _train(args, args.steps, lr, 20)})
                start = time.perf_counter()
                seqlab.fit(cfg, root / f"h{h}_s{s}_{method}_scratch")
                seqlab.finetune(cfg, root / f"h{h}_s{s}_{method}_pre",
                                from_run=root / f"pre_{method}", mode="full",
                                overrides=["init.measure_forgetting=false"])
                seconds.append(time.perf_counter() - start)
                for arm in ("scratch", "pre"):
                    forecasters[f"{method}_{arm}"] = seqlab.load(root / f"h{h}_s{s}_{method}_{arm}")
            result = backtest(forecasters, pd.read_csv(table), windows=TEST // HORIZON)
            for name, score in result.items():
                scores.setdefault((h, name), []).append(score)
            print(f"forecast L={h} seed {s}: " + ", ".join(
                f"{k} {v['mase']:.3f}" for k, v in result.items()), flush=True)

    rows = []
    for h in histories:
        naive = _mean([x["mase"] for x in scores[h, "seasonal_naive"]])
        for method, causal in arms.items():
            a, b = scores[h, f"{method}_scratch"], scores[h, f"{method}_pre"]
            mase = [(x["mase"], y["mase"]) for x, y in zip(a, b)]
            crps = [(x["crps"], y["crps"]) for x, y in zip(a, b)]
            crps_gain = _mean([100 * (x - y) / x for x, y in crps])
            rows.append([h, f"{method} ({'causal' if causal else 'bidirectional'})",
                         f"{_mean([x for x, _ in mase]):.3f}", f"{_mean([y for _, y in mase]):.3f}",
                         f"{_mean([x - y for x, y in mase]):+.3f}",
                         f"{_mean([x for x, _ in crps]):.3f}", f"{_mean([y for _, y in crps]):.3f}",
                         f"{crps_gain:+.1f}%",
                         f"{sum(y < x for x, y in mase)}/{len(mase)}", f"{naive:.3f}"])
    table = markdown_table(
        ["history L", "method (model)", "scratch MASE", "pre-trained MASE", "MASE gain",
         "scratch CRPS", "pre-trained CRPS", "CRPS gain", "pre-trained better (MASE)",
         "seasonal naive MASE"], rows)
    pre_lines = "; ".join(
        f"`{m}`: validation MSE {r.metrics['mse']:.3f}, MAE {r.metrics['mae']:.3f} "
        f"(scaled units), {r.seconds:.0f} s" for m, r in pre_info.items())
    about = (
        f"Pre-training data: `make_series` seed 0, {data['n_pre']} series x {data['length']} "
        f"hourly steps, no anomalies; windows of {CONTEXT} + {HORIZON} steps, patches of "
        f"{PATCH}; {args.forecast_pre_steps} steps of batch {BATCH} at lr {FORECAST_LR:g}, 50 warm-up "
        f"steps. {pre_lines}.\n\n"
        f"Fine-tuning data, per seed s: `make_series(3, seed=1000 + s)`, the last L + {TEST} "
        f"steps of each series; the last {TEST} are the test region (never trained on), the "
        f"{HORIZON} before them validation. Columns: target y, known-future price and promo, "
        f"calendar hour and day of week; context {CONTEXT}, horizon {HORIZON}; targets scaled "
        f"(`scale_by: {args.scale_by}`) {SCALED[args.scale_by]}. Both arms: "
        f"Student-t head, {args.steps} steps of batch {BATCH} at lr {lr:g}, 20 warm-up steps; "
        f"model attention, rope, d_model {args.d_model}, 2 layers, 4 heads, dropout 0.1, "
        f"patches of {PATCH}, bidirectional for `masked`, causal for `next` (each with its own "
        f"scratch arm). Scores: backtest over the {TEST // HORIZON} test horizons of the 3 "
        f"series (12 windows), mean over {len(seeds)} seed(s); CRPS in the series' units, its "
        f"gain the mean relative change. Wall time of the fine-tuning pairs: "
        f"{sum(seconds):.0f} s in all.")
    return [f"## Forecasting with short histories\n\n{about}\n\n{table}"]


# -- classification with few labels --------------------------------------------------------

def classify_model(args) -> dict:
    return {"mixer": "gru", "causal": False, "position": "none", "ffn": "none",
            "d_model": args.d_model, "n_layers": 2, "context_length": 256}


def _write_subset(src: Path, dst: Path, n: int) -> None:
    with np.load(src, allow_pickle=False) as z:
        features, lengths, labels = z["features"], z["lengths"], z["labels"]
    buf = io.BytesIO()
    np.savez(buf, features=features[:int(lengths[:n].sum())], lengths=lengths[:n],
             labels=labels[:n])
    dst.write_bytes(buf.getvalue())


def run_classify(args, root: Path, sizes: list[int]) -> list[str]:
    import seqlab
    from seqlab.datasets.dynamics import write_dynamics

    n_train, n_val = (max(sizes) * 3, 60) if args.quick else (2000, 500)
    lengths = (64, 128)
    write_dynamics(root / "dyn", n_train=n_train, n_val=n_val, min_length=lengths[0],
                   max_length=lengths[1], seed=0)
    for n in sizes:
        _write_subset(root / "dyn" / "train.npz", root / f"train_{n}.npz", n)
    features = {"source": "features", "val_path": str(root / "dyn" / "val.npz"),
                "normalize": "sequence"}
    pre_cfg = seqlab.RunConfig.from_dict({
        "task": "series_pretrain", "seed": 0,
        "task_options": {"method": "masked", "span": 8, "mask_ratio": 0.4},
        "model": classify_model(args),
        "data": {**features, "path": str(root / "dyn" / "train.npz")},
        "train": {**_train(args, args.classify_pre_steps, CLASSIFY_LR, 50), "eval_batches": 10}})
    pre = seqlab.fit(pre_cfg, root / "pre")
    print(f"classify pre-training: mse {pre.metrics['mse']:.3f}, {pre.seconds:.0f} s", flush=True)
    lr = args.lr or CLASSIFY_LR
    rows = []
    for n in sizes:
        cfg = seqlab.RunConfig.from_dict({
            "task": "classify", "seed": 0, "task_options": {"pooling": "mean"},
            "model": classify_model(args),
            "data": {**features, "path": str(root / f"train_{n}.npz")},
            "train": _train(args, args.steps, lr, 20)})
        start = time.perf_counter()
        scratch = seqlab.fit(cfg, root / f"scratch_{n}").metrics["accuracy"]
        mid = time.perf_counter()
        tuned = seqlab.finetune(cfg, root / f"pre_{n}", from_run=root / "pre", mode="full",
                                overrides=["init.measure_forgetting=false"]).metrics["accuracy"]
        rows.append([n, f"{scratch:.3f}", f"{tuned:.3f}", f"{tuned - scratch:+.3f}",
                     f"{mid - start:.0f} / {time.perf_counter() - mid:.0f}"])
        print(f"classify N={n}: scratch {scratch:.3f}, pre-trained {tuned:.3f}", flush=True)
    table = markdown_table(["N labelled", "scratch accuracy", "pre-trained accuracy", "gain",
                            "seconds (scratch / pre-trained)"], rows)
    about = (
        f"Data: `write_dynamics` seed 0, 6 classes, 3 channels, lengths {lengths[0]}-"
        f"{lengths[1]}: {n_train} training sequences (all of them, without labels, for "
        f"pre-training; the first N with labels for each labelled run), {n_val} validation "
        f"sequences (independent seed; chance 0.167). Model (every run): GRU, bidirectional, "
        f"d_model {args.d_model}, 2 layers, no feed-forward; classify pools the mean over "
        f"time.\n\nPre-training (`masked`, 40% of the spans of 8 steps hidden, every channel a "
        f"target): {args.classify_pre_steps} steps of batch {BATCH} at lr {CLASSIFY_LR:g}, 50 "
        f"warm-up steps, {pre.seconds:.0f} s wall; validation MSE {pre.metrics['mse']:.3f} "
        f"(standardised units; 1.0 is predicting zero).\n\nLabelled runs (both arms): "
        f"{args.steps} steps of batch {BATCH} at lr {lr:g}, 20 warm-up steps, scored once at "
        "the last step.")
    return [f"## Classification with few labels\n\n{about}\n\n{table}"]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=1, iters=1, warmup=0, extra=_options)
    if not args.threads:  # one thread: the machine these ran on is shared (see README)
        args.threads = 1
        torch.set_num_threads(1)
    if args.steps is None:
        args.steps = 20 if args.quick else 200
    args.forecast_pre_steps = args.pre_steps or (20 if args.quick else 1000)
    args.classify_pre_steps = args.pre_steps or (20 if args.quick else 500)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    histories = ([int(x) for x in args.histories.split(",")] if args.histories
                 else list(QUICK_HISTORIES if args.quick else HISTORIES))
    sizes = ([int(x) for x in args.sizes.split(",")] if args.sizes
             else list(QUICK_SIZES if args.quick else SIZES))
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = set(tasks) - {"forecast", "classify"}
    if unknown:
        raise SystemExit(f"unknown task(s) {', '.join(sorted(unknown))}; choose forecast, classify")
    sections = []
    load = [os.getloadavg()[0]]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "forecast" in tasks:
            sections += run_forecast(args, tmp / "forecast", histories, seeds)
            load.append(os.getloadavg()[0])
        if "classify" in tasks:
            sections += run_classify(args, tmp / "classify", sizes)
            load.append(os.getloadavg()[0])
    sections.insert(0, (
        f"Every run on the CPU at {args.threads} torch thread(s); {time.perf_counter() - start:.0f} s "
        "in all. Machine load (1-minute load average) at the start and after each task: "
        + ", ".join(f"{x:.1f}" for x in load) + "."))
    report("bench_series_pretrain", "Series pre-training (masked, next patch): short histories "
           "and few labels, from scratch against pre-trained", args, sections)


if __name__ == "__main__":
    main()
