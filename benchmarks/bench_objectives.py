"""The objectives on real data every machine with Python has, each against a baseline.

Four demonstrations, each a set of seqlab models trained through the public API
(``seqlab.RunConfig.from_dict``, ``seqlab.fit``, ``seqlab.load(...).evaluate``) and
scored on the same validation split as a baseline computed here:

* ``tag``: every byte of standard-library source labelled with its ``tokenize`` token
  type (``seqlab.datasets.write_token_tags``); causal lstm, gru, attention and mamba
  (left context only) and a bidirectional lstm, against the most frequent tag of each
  byte value in training.
* ``classify``: which standard-library package a 512-byte snippet comes from
  (``write_package_snippets``); five mixers against TF-IDF character n-grams +
  logistic regression (scikit-learn).
* ``mlm``: a small bidirectional attention encoder pre-trained with ``masked_lm`` on
  standard-library source; masked-token accuracy against always predicting the most
  frequent byte of the training text, scored on the very positions evaluation masks.
* ``features``: which of six noisy dynamical systems made a 3-channel series
  (``write_dynamics``); five mixers on feature vectors against logistic regression on
  summary statistics alone and on FFT band powers.

Every model trains in its own run directory (in a temporary folder unless ``--workdir``),
on one torch thread, at most ``--workers`` (default 2) at a time, each in its own
process; the baselines are jobs of the same pool. Each demo's numbers go to
``benchmarks/results/objectives/<demo>.json``, and ``benchmarks/results/objectives.md``
is rebuilt from every demo measured so far, so one demo can be rerun alone.

Usage (from the repository root)::

    python benchmarks/bench_objectives.py                  # --demo all, about 70 minutes
    python benchmarks/bench_objectives.py --demo tag       # one demo
    python benchmarks/bench_objectives.py --quick          # smoke run: tiny data, a few steps
    python benchmarks/bench_objectives.py --scale 2        # every model twice the steps
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # the baselines too run on one core each

import argparse
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, machine_info, markdown_table  # noqa: E402

from _objective_baselines import BASELINES, scores  # noqa: E402
from _objective_demos import DEMOS, Job, prepare_data  # noqa: E402

OUT_DIR = RESULTS / "objectives"


def run_job(job: Job, workdir: str) -> dict:
    """One job in a worker process: a seqlab training (fit, then the best weights
    evaluated on the whole validation split) or a baseline. A failure becomes a row
    with an ``error``, so that one broken run does not lose the others."""
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        if job.kind == "baseline":
            row = BASELINES[job.baseline](Path(workdir), **job.options)
        else:
            row = _train(job, Path(workdir))
    except Exception as e:  # noqa: BLE001 - reported in the table, the other jobs go on
        row = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
    row.update(demo=job.demo, name=job.name, kind=job.kind, wall_s=time.perf_counter() - start,
               measured=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    return row


def _train(job: Job, workdir: Path) -> dict:
    import seqlab

    run_dir = workdir / "runs" / job.demo / job.name
    shutil.rmtree(run_dir, ignore_errors=True)
    settings = json.loads(json.dumps(job.config))
    pretrained = None
    if job.pretrain is not None:
        pre_dir = run_dir.with_name(job.name + "-pretrain")
        shutil.rmtree(pre_dir, ignore_errors=True)
        pre_config = seqlab.RunConfig.from_dict(json.loads(json.dumps(job.pretrain)), job.overrides)
        pre = seqlab.fit(pre_config, pre_dir)
        pretrained = {"task": pre_config.task, "steps": pre_config.train.steps,
                      "batch_size": pre_config.train.batch_size,
                      "context": pre_config.model.context_length, "fit_s": pre.seconds,
                      "metrics": seqlab.load(pre_dir).evaluate()}
        settings["init"]["run"] = str(pre_dir)
    config = seqlab.RunConfig.from_dict(settings, job.overrides)
    result = seqlab.fit(config, run_dir)
    fit_s = result.seconds
    start = time.perf_counter()
    run = seqlab.load(run_dir)
    metrics = run.evaluate()
    eval_s = time.perf_counter() - start
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in log if "loss" in r]
    evals = [r for r in log if "val_loss" in r]
    metric = config.train.best_metric
    higher = run.objective.selection(metric) == "max"
    best = (max if higher else min)(evals, key=lambda r: r[metric]) if evals else {}
    row = {"params": sum(p.numel() for p in run.model.parameters()),
           "steps": config.train.steps, "batch_size": config.train.batch_size,
           "context": config.model.context_length,
           "lr": config.train.lr, "fit_s": fit_s, "eval_s": eval_s, "best_metric": metric,
           "final_train_loss": sum(train_losses[-5:]) / max(len(train_losses[-5:]), 1),
           "best_step": best.get("step"), "last_eval": evals[-1] if evals else {},
           "metrics": metrics, "model": _model_summary(run.config.model)}
    if pretrained is not None:
        row["pretrain"] = pretrained
        row["model"] += (f"; first pre-trained with {pretrained['task']} ({pretrained['steps']} × "
                         f"{pretrained['batch_size']} × {pretrained['context']}, "
                         f"{pretrained['fit_s']:.0f} s, masked accuracy "
                         f"{pretrained['metrics'].get('masked_accuracy', float('nan')):.3f})")
    if job.after is not None:
        row.update(BASELINES[job.after](workdir, run=run))
    if job.demo in PREDICTED:
        start = time.perf_counter()
        truth, predicted = PREDICTED[job.demo](run, workdir)
        row["predict_s"] = time.perf_counter() - start
        row["predicted"] = scores(truth, predicted)
    return row


def _predict_tags(run, workdir: Path) -> tuple[list, list]:
    val = [json.loads(line) for line in (workdir / "tag" / "val.jsonl").read_text().splitlines()]
    rows = run.predict([r["text"] for r in val], batch_size=64)
    return ([t for r in val for t in r["tags"]],
            [str(t) for row in rows for t in row["tags"]])


def _predict_packages(run, workdir: Path) -> tuple[list, list]:
    val = [json.loads(line) for line in (workdir / "classify" / "val.jsonl").read_text().splitlines()]
    rows = run.predict([r["text"] for r in val], batch_size=64)
    return [r["label"] for r in val], [str(row["label"]) for row in rows]


def _predict_dynamics(run, workdir: Path) -> tuple[list, list]:
    import numpy as np

    data = np.load(workdir / "features" / "val.npz", allow_pickle=False)
    sequences = np.split(data["features"], np.cumsum(data["lengths"])[:-1])
    names = {k: v["name"] for k, v in
             json.loads((workdir / "features" / "classes.json").read_text()).items()}
    rows = run.predict(sequences, batch_size=64)
    return ([names[str(int(y))] for y in data["labels"]],
            [names[str(row["label"])] for row in rows])


# Every labelled run also predicts its validation set through ``run.predict``; the
# scores of those predictions must equal ``run.evaluate``'s (a consistency check), and
# give the per-class F1 that the classify metric does not report.
PREDICTED = {"tag": _predict_tags, "classify": _predict_packages, "features": _predict_dynamics}


def _model_summary(model) -> str:
    mixers = sorted(set(model.mixers))
    mode = "causal" if model.causal else "bidirectional"
    extra = ""
    options = model.mixer_options.get(mixers[0], {}) if len(mixers) == 1 else {}
    if options.get("num_layers", 1) > 1:
        extra = f" ({options['num_layers']} stacked in the kernel)"
    return (f"{'+'.join(mixers)} {mode}, d_model {model.d_model}, {model.n_layers} "
            f"block{'s' if model.n_layers > 1 else ''}{extra}, ffn {model.ffn}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="all", choices=[*DEMOS, "all"])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run (tiny data, a few steps): checks the script, measures nothing")
    parser.add_argument("--steps", type=int, default=None,
                        help="train every model this many steps (default: each demo's own)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every model's default steps by this")
    parser.add_argument("--only", default=None,
                        help="comma-separated model or baseline names to run (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key of every seqlab run, e.g. train.lr=2e-3 "
                             "(repeatable; the results then no longer match the defaults)")
    parser.add_argument("--workers", type=int, default=2, help="processes at a time (each 1 thread)")
    parser.add_argument("--workdir", default=None,
                        help="data and run directories go here and are kept (default: a temporary "
                             "folder, removed at the end)")
    args = parser.parse_args()
    demos = list(DEMOS) if args.demo == "all" else [args.demo]
    only = set(args.only.split(",")) if args.only else None

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="seqlab-objectives-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out_dir = OUT_DIR / "quick" if args.quick else OUT_DIR
    started = time.perf_counter()
    try:
        records = {}
        for demo in demos:
            data = prepare_data(demo, workdir, quick=args.quick)
            kept = []
            old = out_dir / f"{demo}.json"
            if only is not None and old.exists():  # a partial rerun keeps the other rows
                kept = [r for r in json.loads(old.read_text())["rows"] if r["name"] not in only]
            records[demo] = {"demo": demo, "machine": machine_info(), "workers": args.workers,
                             "quick": args.quick, "overrides": list(args.set), "data": data,
                             "rows": kept}
        jobs = [job for demo in demos
                for job in DEMOS[demo](workdir, quick=args.quick, steps=args.steps, scale=args.scale)
                if only is None or job.name in only]
        for job in jobs:
            job.overrides = list(args.set)

        command = " ".join(["python", "benchmarks/bench_objectives.py", *sys.argv[1:]])

        def done(row: dict) -> None:  # each demo's record is rewritten as its rows come in
            record = records[row["demo"]]
            row.update(machine=record["machine"], workers=args.workers, command=command)
            record["rows"].append(row)
            _write(out_dir / f"{row['demo']}.json", json.dumps(record, indent=1) + "\n")

        _run_all(jobs, workdir, args.workers, done)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.perf_counter() - started
    for record in records.values():  # what the whole command took, beside each demo's rows
        record.update(command=" ".join(["python", "benchmarks/bench_objectives.py", *sys.argv[1:]]),
                      command_s=total)
        _write(out_dir / f"{record['demo']}.json", json.dumps(record, indent=1) + "\n")
    from _objective_report import render

    text = render(out_dir, quick=args.quick)
    print(text)
    path = (out_dir / "objectives.md") if args.quick else RESULTS / "objectives.md"
    _write(path, text)
    print(f"written to {path.relative_to(ROOT)}; --demo {args.demo} took {total / 60:.1f} min")


def _run_all(jobs: list[Job], workdir: Path, workers: int, done) -> None:
    """Run the jobs, longest expected first, ``workers`` at a time; hand each row to
    ``done`` and print it as it ends."""
    jobs = sorted(jobs, key=lambda j: -j.cost)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, max_tasks_per_child=1) as pool:
        pending = {pool.submit(run_job, job, str(workdir)): job for job in jobs}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                job = pending.pop(future)
                row = future.result()
                done(row)
                shown = row.get("error") or {k: round(v, 4) for k, v in row.get("metrics", {}).items()
                                             if isinstance(v, float) and "/" not in k}
                print(f"[{job.demo}] {job.name}: {row['wall_s']:.0f} s, {shown}", flush=True)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
