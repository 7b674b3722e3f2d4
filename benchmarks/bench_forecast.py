"""Forecasting on real series that ship inside statsmodels: seqlab's mixers against the
statistical baselines (and NeuralForecast's NHITS and PatchTST when it is installed),
on the same rolling-origin windows.

Data sets (``statsmodels.datasets``): ``elnino`` (monthly sea-surface temperature,
1950-2010, one series), ``sunspots`` (yearly sunspot numbers, 1700-2008), ``nile``
(yearly flow at Aswan, 1871-1970) and ``macrodata`` (twelve quarterly US macro series,
1959-2009, one global model over all twelve, each scaled on its own).

Per data set: the last ``windows`` horizons of every series are the backtest region;
every model trains on what comes before (its own validation split taken from the end of
that), then forecasts each window from the history before its origin. Scores: MASE
(seasonal-naive in-sample scale), CRPS, 80%/95% interval coverage, and training time.
seqlab models: d_model 32, 2 layers, Student-t head, each window scaled by its own context
(``scale_by: window``: with per-series scaling the trending macro series leave the range
they were scaled on, and MASE was 2.1 for attention on macrodata, against 1.3 with
window scaling), the same steps, batch and lr each;
``attention-patch`` is attention over patches of 4 steps (PatchTST's idea); ``lstm-last``
scales each window by its last value and mean absolute step (``scaling: last``). Each
model's validation split holds at least 20 values, enough to calibrate its 95%
intervals (``seqlab.tasks.calibration``), which the backtest uses.

NeuralForecast peers (``_forecast_peers.py`` says how each is matched): NHITS and PatchTST
train on the same rows (the backtest region out, the last horizon held out as seqlab's
validation), with the same context, horizon, steps, batch (32 windows a step: NF's
``batch_size`` is series per step, all of them here, and ``windows_batch_size`` the
windows drawn from them, 32) and learning rate, a Student-t likelihood and per-window
scaling; PatchTST sized to ``attention-patch`` (its counterpart: d_model 32, 4 heads,
2 layers, patches of 4, its feed-forward width picked for the count), NHITS to the median
seqlab model. Their forecasts of the same windows are scored by backtest's own ``score``.
Training throughput, windows per second, three ways, all at ``--threads`` torch threads
on the CPU: steps x 32 over the wall seconds of each whole ``fit`` call (seqlab's includes
its 5 validation passes with their plots and its checkpoint writes; NF's never
validates), the same over its process CPU seconds (the machine is shared), and the
training loop's own rate, the median over spans of 10 steps (what seqlab's trainer logs,
as ``windows_per_s``; a Lightning callback times NF's steps the same way).

    python benchmarks/bench_forecast.py [--quick] [--steps 300] [--threads 1]
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

import _forecast_peers as peers
from _common import markdown_table, parse_args, report

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
MODELS = {
    "lstm": {"mixer": "lstm", "position": "none", "ffn": "none"},
    "gru": {"mixer": "gru", "position": "none", "ffn": "none"},
    "attention": {"mixer": "attention", "position": "rope", "n_heads": 4},
    "mamba": {"mixer": "mamba", "position": "none", "ffn": "none", "norm": "rmsnorm"},
    "attention-patch": {"mixer": "attention", "position": "rope", "n_heads": 4, "patch": 4},
    # scaling: last: each window's last value as origin, its mean absolute step as unit
    "lstm-last": {"mixer": "lstm", "position": "none", "ffn": "none", "scaling": "last"},
}
BASELINES = ("seasonal_naive", "auto_ets", "auto_arima")
BATCH, LR = 32, 2e-3


def datasets() -> dict[str, dict]:
    """name -> table (ds, [id,] y) and its window settings."""
    import statsmodels.api as sm

    wide = sm.datasets.elnino.load_pandas().data
    long = wide.melt(id_vars="YEAR", value_vars=MONTHS, var_name="m", value_name="y")
    long["ds"] = pd.to_datetime(long["YEAR"].astype(int).astype(str) + "-"
                                + (long["m"].map(MONTHS.index) + 1).astype(str) + "-01")
    elnino = long.sort_values("ds")[["ds", "y"]].reset_index(drop=True)
    sun = sm.datasets.sunspots.load_pandas().data
    sunspots = pd.DataFrame({"ds": sun["YEAR"].astype(int), "y": sun["SUNACTIVITY"]})
    nile_raw = sm.datasets.nile.load_pandas().data
    nile = pd.DataFrame({"ds": nile_raw["year"].astype(int), "y": nile_raw["volume"]})
    macro = sm.datasets.macrodata.load_pandas().data
    macro["ds"] = pd.PeriodIndex.from_fields(year=macro["year"].astype(int),
                                             quarter=macro["quarter"].astype(int),
                                             freq="Q").to_timestamp()
    columns = [c for c in macro.columns if c not in ("year", "quarter", "ds")]
    macrodata = macro.melt(id_vars="ds", value_vars=columns, var_name="id", value_name="y")
    return {
        "elnino": dict(df=elnino, id=None, context=48, horizon=12, season=12, windows=4,
                       calendar=["month"]),
        "sunspots": dict(df=sunspots, id=None, context=44, horizon=8, season=11, windows=4,
                         calendar=[]),
        "nile": dict(df=nile, id=None, context=20, horizon=4, season=1, windows=4, calendar=[]),
        "macrodata": dict(df=macrodata, id="id", context=24, horizon=8, season=4, windows=3,
                          calendar=[]),
    }


def history(d: dict) -> pd.DataFrame:
    """Every series without its backtest region."""
    cut = d["windows"] * d["horizon"]
    df = d["df"]
    if d["id"] is None:
        return df.iloc[:len(df) - cut]
    return df[df.groupby(d["id"]).cumcount(ascending=False) >= cut]


def fit_seqlab(section: dict, d: dict, steps: int, threads: int, run_dir: Path):
    """One seqlab model trained on the history of ``d``: its loaded run, the wall and CPU
    seconds of its whole ``fit``, and its training loop's windows per second: the median
    of the ``windows_per_s`` its trainer logs every 10 steps. The validation split holds
    at least 20 values (whole horizons), enough to calibrate 95% intervals."""
    import seqlab
    from seqlab.rundir import METRICS_FILE
    from seqlab.train.metrics import MetricsLog

    section = dict(section)
    scaling = section.pop("scaling", "standard")
    patch = section.get("patch", 1)
    n_series = d["df"][d["id"]].nunique() if d["id"] else 1
    horizons = -(-20 // (n_series * d["horizon"]))  # whole horizons holding >= 20 values
    wall, cpu = time.perf_counter(), time.process_time()
    f = seqlab.Forecaster(
        {**section, "d_model": 32, "n_layers": 2, "dropout": 0.1,
         "context_length": (d["context"] + d["horizon"]) // patch},
        context=d["context"], horizon=d["horizon"], id=d["id"], calendar=d["calendar"],
        season=d["season"], loss="student_t", scaling=scaling, scale_by="window",
        steps=steps, batch_size=BATCH, lr=LR, run_dir=run_dir,
        **{"train.num_threads": threads})
    f.fit(history(d), val_steps=horizons * d["horizon"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    logged = [r["windows_per_s"] for r in MetricsLog(run_dir / METRICS_FILE).read()
              if "windows_per_s" in r]
    return seqlab.load(run_dir), wall, cpu, float(statistics.median(logged))


def run(name: str, d: dict, steps: int, threads: int) -> tuple[list, dict]:
    """Fit, backtest and score every model on data set ``name``: the score rows and a
    verdict (best seqlab model, the baselines' and peers' MASE, training throughputs)."""
    from seqlab.tasks.backtest import backtest

    pipelines, seconds, cpu, loop, params, sizes = {}, {}, {}, {}, {}, []
    # the runs stay on disk until scored: backtest calibrates their intervals on each
    # run's validation split, read from the run directory
    with tempfile.TemporaryDirectory() as tmp:
        for model, section in MODELS.items():
            patch = section.get("patch", 1)
            if d["context"] % patch or d["horizon"] % patch:
                continue
            pipelines[model], seconds[model], cpu[model], loop[model] = fit_seqlab(
                section, d, steps, threads, Path(tmp) / model)
            params[model] = peers.param_count(pipelines[model].model)
        scores = backtest({**pipelines, **{b: b for b in BASELINES}}, d["df"],
                          windows=d["windows"])
        if peers.missing() is None:
            middle = sorted(params.values())[len(params) // 2]
            targets = {"NHITS": middle, "PatchTST": params.get("attention-patch", middle)}
            peer_scores, fits = peers.backtest_peers(
                pipelines, d["df"], history(d), windows=d["windows"], targets=targets,
                steps=steps, batch_size=BATCH, lr=LR, threads=threads)
            scores.update(peer_scores)
            for peer, fit in fits.items():
                seconds[peer], cpu[peer], loop[peer] = fit.seconds, fit.cpu_seconds, fit.loop_rate
                params[peer] = fit.params
                sizes.append([name, peer, fit.settings, f"{fit.params:,}", f"{targets[peer]:,}"])
    rate = {m: steps * BATCH / s for m, s in seconds.items()}
    cpu_rate = {m: steps * BATCH / s for m, s in cpu.items()}
    rows = []
    for forecaster, s in sorted(scores.items(), key=lambda kv: kv[1]["mase"]):
        deep = forecaster in seconds
        rows.append([name, forecaster, f"{params[forecaster]:,}" if deep else "—",
                     f"{s['mase']:.3f}", f"{s['crps']:.4g}",
                     f"{s['coverage_80']:.1f}", f"{s['coverage_95']:.1f}",
                     f"{seconds[forecaster]:.1f}" if deep else "—",
                     *(f"{r[forecaster]:.0f}" if deep else "—" for r in (rate, cpu_rate, loop))])
    best_model = min(pipelines, key=lambda m: scores[m]["mase"])
    verdict = {"best seqlab": best_model, "mase": scores[best_model]["mase"],
               **{b: scores[b]["mase"] for b in BASELINES},
               "rates": {"fit": rate, "fit CPU": cpu_rate, "loop": loop},
               "sizes": sizes, "peers": {p: scores[p]["mase"] for p in peers.PEERS if p in scores}}
    return rows, verdict


def throughput_row(name: str, v: dict) -> list:
    """The best seqlab model's windows/s over each peer's, and attention-patch's over
    PatchTST's: by the whole fit's wall and CPU seconds, and by the training loop."""
    best, cells = v["best seqlab"], [name, v["best seqlab"]]
    for mine, peer in ((best, "NHITS"), (best, "PatchTST"), ("attention-patch", "PatchTST")):
        for rates in v["rates"].values():
            cells.append(f"{rates[mine] / rates[peer]:.2f}x" if mine in rates else "—")
    return cells


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=1, iters=1, warmup=0,
                      extra=lambda p: p.add_argument("--steps", type=int, default=300))
    steps = 20 if args.quick else args.steps
    threads = args.threads or 1
    skipped = peers.missing()
    if skipped:
        print(skipped)
    rows, verdicts, speeds, sizes = [], [], [], []
    load = [os.getloadavg()[0]]
    for name, d in datasets().items():
        r, v = run(name, d, steps, threads)
        load.append(os.getloadavg()[0])
        rows += r
        sizes += v["sizes"]
        verdicts.append([name, v["best seqlab"], f"{v['mase']:.3f}",
                         *(f"{v[b]:.3f}" for b in BASELINES),
                         *(f"{v['peers'][p]:.3f}" if p in v["peers"] else "—"
                           for p in peers.PEERS),
                         "yes" if v["mase"] < min(v["seasonal_naive"], v["auto_ets"]) else "no"])
        if not skipped:
            speeds.append(throughput_row(name, v))
    notes = (f"statsmodels data sets; seqlab: d_model 32, 2 layers, Student-t head, windows "
             f"scaled by their context, {steps} steps, batch {BATCH}, lr {LR:g}, {threads} "
             "thread(s); rolling-origin backtest over the last windows (held out from "
             "training). MASE and CRPS lower is better; coverage in percent of the actual "
             "values inside the central interval. Training throughput in windows per second: "
             "fit, steps x batch over the wall seconds of the whole fit call (seqlab's "
             "includes its 5 validation passes, plots and checkpoints; NF's never "
             "validates); fit CPU, over its process CPU seconds instead (less moved by other "
             "work on a shared machine); loop, the median rate over spans of 10 training "
             "steps (seqlab's own windows_per_s log; a Lightning callback for NF). ")
    notes += (skipped + "." if skipped else
              "NeuralForecast NHITS and PatchTST: the same rows, context, horizon, steps, "
              f"{BATCH} windows a step (batch_size {BATCH} series, windows_batch_size "
              f"{BATCH}), lr and threads, Student-t DistributionLoss, per-window standard "
              "scaling, no validation, checkpoints, logger or progress bar; sized as the "
              "peer-size table says; scored by seqlab.tasks.backtest.score on the same "
              "windows.")
    notes += (" Machine load (1-minute load average) at the start and after each data "
              "set: " + ", ".join(f"{x:.1f}" for x in load) + ".")
    sections = [
        notes,
        markdown_table(["data", "best seqlab model", "its MASE", *(f"{b} MASE" for b in BASELINES),
                        *(f"{p} MASE" for p in peers.PEERS),
                        "beats seasonal naive and AutoETS"], verdicts)]
    if speeds:
        sections.append(markdown_table(
            ["data", "best seqlab model",
             *(f"{mine} / {peer} {kind}" for mine, peer in
               (("best", "NHITS"), ("best", "PatchTST"), ("attention-patch", "PatchTST"))
               for kind in ("fit", "fit CPU", "loop"))], speeds))
        sections.append(markdown_table(["data", "peer", "size", "parameters",
                                        "sized to (seqlab parameters)"], sizes))
    sections.append(markdown_table(["data", "forecaster", "parameters", "MASE", "CRPS",
                                    "80% coverage", "95% coverage", "train seconds",
                                    "fit windows/s", "fit windows/CPU-s",
                                    "loop windows/s"], rows))
    report("bench_forecast", "Forecasting real series: seqlab mixers vs statistical baselines "
           "and NeuralForecast", args, sections)


if __name__ == "__main__":
    main()
