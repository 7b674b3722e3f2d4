"""Runs side by side: ``seqlab runs [DIR]`` lists the run directories under a folder, and
``seqlab runs compare RUN RUN ...`` prints their metrics in one table and draws their
loss curves on one plot.

Everything is read from the files a run leaves (``config.yaml``, ``metrics.jsonl``, the
header of ``model.safetensors``); no model is built and no data is read, so listing a
folder of large runs is quick, and runs whose data has moved still list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from seqlab.errors import CheckpointError
from seqlab.plots import new_figure, save_png
from seqlab.rundir import (CONFIG_FILE, DATA_FILE, METRICS_FILE, TOKENIZER_FILE, TRAINER_DIR,
                           WEIGHTS_FILE, check_run_dir)
from seqlab.train.metrics import MetricsLog
from seqlab.weights_file import read_header


RUN_MARKERS = (METRICS_FILE, WEIGHTS_FILE, TRAINER_DIR, TOKENIZER_FILE, DATA_FILE)


@dataclass
class RunSummary:
    """What one run directory says about itself.

    ``best`` is the evaluation whose weights the run kept (the one logged at the step
    recorded in ``model.safetensors``), ``last`` the latest evaluation.
    """

    path: Path
    task: str
    model: str
    params: int | None
    step: int
    steps: int | None
    best_metric: str
    best: dict = field(default_factory=dict)
    last: dict = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.records:
            return "not started"
        if self.steps is not None and self.step >= self.steps:
            return "done"
        return f"stopped at {self.step}"


def is_run(folder: Path) -> bool:
    """A folder holding a ``config.yaml`` and something training wrote beside it (a
    metrics log, weights, a checkpoint folder, or the tokenizer and label files written
    before the first step). A folder with a config alone (an example) is not a run."""
    return (folder / CONFIG_FILE).is_file() and any(
        (folder / name).exists() for name in RUN_MARKERS)


def find_runs(root: str | Path, *, max_depth: int = 3) -> list[Path]:
    """Run directories (see :func:`is_run`) at or below ``root``, at most ``max_depth``
    levels down, sorted by path. A run's own subfolders are not searched."""
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"{root} is not a directory (expected a folder of runs)")
    found, level = [], [root]
    for _ in range(max_depth + 1):
        below = []
        for folder in level:
            if is_run(folder):
                found.append(folder)
            else:
                below += sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        level = below
    return sorted(found)


def summarize(run_dir: str | Path) -> RunSummary:
    """A :class:`RunSummary` of ``run_dir``; a CheckpointError naming the file at fault
    when it is not a run directory or its config is unreadable."""
    run_dir = check_run_dir(run_dir)
    config = _read_config(run_dir / CONFIG_FILE)
    model, train = config.get("model") or {}, config.get("train") or {}
    records = MetricsLog(run_dir / METRICS_FILE).read()
    evals = [r for r in records if "val_loss" in r]
    params, kept_step = _weights_summary(run_dir / WEIGHTS_FILE)
    best = next((r for r in reversed(evals) if r.get("step") == kept_step), {})
    return RunSummary(
        path=run_dir, task=config.get("task", "causal_lm"), model=_describe(model),
        params=params,
        step=max((r.get("step", 0) for r in records), default=0), steps=train.get("steps"),
        best_metric=train.get("best_metric", "val_loss"), best=best,
        last=evals[-1] if evals else {}, records=records)


def listing(summaries: list[RunSummary], root: Path | None = None) -> str:
    """One line per run: objective, model, size, progress and the kept evaluation."""
    rows = [["run", "task", "model", "params", "steps", "status", "kept weights"]]
    for s in summaries:
        rows.append([_name(s.path, root), s.task, s.model, _count(s.params),
                     f"{s.step}/{s.steps if s.steps is not None else '?'}", s.status,
                     _kept(s)])
    return _table(rows)


def comparison(summaries: list[RunSummary]) -> str:
    """The runs' kept evaluations side by side: one row per run, one column per metric
    that any of them reported (per-class entries such as ``f1/NAME`` left out)."""
    names = []
    for s in summaries:
        names += [k for k in s.best if k != "step" and "/" not in k and k not in names]
    rows = [["run", "task", "params", "step", *names]]
    for s in summaries:
        rows.append([_name(s.path), s.task, _count(s.params),
                     str(s.best.get("step", "-")), *[_number(s.best.get(k)) for k in names]])
    return _table(rows)


def plot_comparison(summaries: list[RunSummary], path: Path) -> bool:
    """Train loss (line) and validation loss (markers) of every run against step, one
    colour per run, in one PNG. False when matplotlib is missing."""
    fig = new_figure(8, 4.5)
    if fig is None:
        return False
    ax = fig.add_subplot()
    labels = [s.path.name for s in summaries]
    if len(set(labels)) < len(labels):  # two runs of the same name: full paths
        labels = [str(s.path) for s in summaries]
    for i, (s, label) in enumerate(zip(summaries, labels)):
        colour = f"C{i % 10}"
        train = [(r["step"], r["loss"]) for r in s.records
                 if "loss" in r and math.isfinite(r["loss"])]
        val = [(r["step"], r["val_loss"]) for r in s.records
               if "val_loss" in r and math.isfinite(r["val_loss"])]
        if train:
            ax.plot(*zip(*train), color=colour, linewidth=1, alpha=0.6,
                    label=f"{label} train")
        if val:
            ax.plot(*zip(*val), "o-", color=colour, label=f"{label} validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    fig.tight_layout()
    save_png(fig, path)
    return True


# -- reading a run's files ---------------------------------------------------------------

def _read_config(path: Path) -> dict:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CheckpointError(f"{path} cannot be read: {' '.join(str(e).split())}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} does not hold a config (a mapping of sections)")
    return config


def _weights_summary(path: Path) -> tuple[int | None, int | None]:
    """Parameter count and step of the kept weights, from the file's header alone;
    (None, None) when the run has no readable weights yet."""
    try:
        header, meta = read_header(path)
    except CheckpointError:
        return None, None
    params = sum(math.prod(entry.get("shape", ())) for entry in header.values())
    step = meta.get("step")
    return params, int(step) if step is not None and step.isdigit() else None


def _describe(model: dict) -> str:
    mixers = model.get("mixers") or model.get("mixer") or model.get("preset") or "?"
    if isinstance(mixers, list):
        mixers = "+".join(dict.fromkeys(str(m) for m in mixers))
    size = ""
    if model.get("d_model") and model.get("n_layers"):
        size = f" {model['n_layers']}x{model['d_model']}"
    return f"{mixers}{size}"


# -- formatting --------------------------------------------------------------------------

def _name(path: Path, root: Path | None = None) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root)) if path != root else path.name
        except ValueError:
            pass
    return str(path)


def _count(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _number(x) -> str:
    if not isinstance(x, (int, float)):
        return "-"
    return f"{x:.4g}"


def _kept(s: RunSummary) -> str:
    if not s.best:
        return "-"
    value = s.best.get(s.best_metric)
    return f"{s.best_metric} {_number(value)} at step {s.best.get('step')}"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
