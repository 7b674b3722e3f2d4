"""PNG plots of a run: loss curves and confusion matrices.

Figures are drawn on matplotlib's Agg canvas directly (``matplotlib.figure.Figure``),
never through ``pyplot``, so plotting changes no process-wide state: the caller's
backend, open figures and rc settings stay as they were. Files are written atomically.
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

from seqlab.io import atomic_write

logger = logging.getLogger("seqlab")


def new_figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())


def plot_losses(records: list[dict], path: Path) -> None:
    """Train and validation loss against step; for a run fine-tuned from another, a
    second panel with the pre-training objective's validation loss before (the line) and
    at each evaluation (the rise is ``pretrain/forgetting``)."""
    pretrain = [(r["step"], r["pretrain/loss"], r["pretrain/loss"] - r["pretrain/forgetting"])
                for r in records if "pretrain/loss" in r and "pretrain/forgetting" in r]
    fig = new_figure(7, 6.5 if pretrain else 4)
    if fig is None:
        logger.info("matplotlib is not installed; skipping %s", path)
        return
    ax = fig.add_subplot(2, 1, 1) if pretrain else fig.add_subplot()
    train = [(r["step"], r["loss"]) for r in records if "loss" in r and math.isfinite(r["loss"])]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    if pretrain:
        steps, losses, before = zip(*pretrain)
        low = fig.add_subplot(2, 1, 2, sharex=ax)
        low.axhline(before[-1], color="gray", linestyle="--", label="before fine-tuning")
        low.plot(steps, losses, "o-", color="tab:red",
                 label=f"after (forgetting {losses[-1] - before[-1]:+.3f})")
        low.set_xlabel("step")
        low.set_ylabel("pre-training validation loss")
        low.grid(alpha=0.3)
        low.legend()
    fig.tight_layout()
    save_png(fig, path)


def plot_confusion(matrix, names: list, path: Path, *, title: str = "confusion matrix") -> None:
    """Rows: true class (a last row ``unseen`` when given C + 1 rows), columns: predicted;
    each row normalised to sum 1, with the counts written in the cells when few."""
    fig = new_figure(1.2 + 0.45 * max(len(names), 4), 1.0 + 0.45 * max(len(names), 4))
    if fig is None:
        logger.info("matplotlib is not installed; skipping %s", path)
        return
    rows = [str(n) for n in names] + (["unseen"] if len(matrix) > len(names) else [])
    counts = [[int(v) for v in row] for row in matrix]
    share = [[v / max(sum(row), 1) for v in row] for row in counts]
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(names)), [str(n) for n in names], rotation=60, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(names) <= 20:
        for i, row in enumerate(counts):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if share[i][j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_png(fig, path)


def plot_forecasts(panels: list[dict], path: Path, *, title: str = "forecasts") -> None:
    """One panel per forecast window: its history, the forecast with its interval fans
    (widest palest) and what happened. Each panel: ``history`` (C,), ``actual`` (H,),
    ``point`` (H,), ``bands`` {level: (lo (H,), hi (H,))} and a ``name``."""
    fig = new_figure(7, 2.2 * max(len(panels), 1))
    if fig is None or not panels:
        logger.info("nothing to plot, or matplotlib is not installed; skipping %s", path)
        return
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        history, actual = list(panel["history"]), list(panel["actual"])
        C, H = len(history), len(actual)
        ahead = range(C, C + H)
        ax.plot(range(C), history, color="black", linewidth=1, label="history")
        for j, (level, (lo, hi)) in enumerate(sorted(panel["bands"].items(), reverse=True)):
            ax.fill_between(ahead, lo, hi, color="tab:blue", alpha=0.15 + 0.15 * j,
                            linewidth=0, label=f"{level:g}% interval")
        ax.plot(ahead, panel["point"], color="tab:blue", label="forecast")
        ax.plot(ahead, actual, "o", color="black", markersize=2.5, label="actual")
        ax.set_ylabel(panel["name"], fontsize=8)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.set_title(title)
            ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_png(fig, path)


def plot_errors_by_step(errors: dict[str, list[float]], path: Path, *,
                        metric: str = "MAE") -> None:
    """A line per forecaster: its error at each horizon step (1 .. H)."""
    fig = new_figure(6, 3.5)
    if fig is None or not errors:
        logger.info("nothing to plot, or matplotlib is not installed; skipping %s", path)
        return
    ax = fig.add_subplot()
    for name, values in errors.items():
        ax.plot(range(1, len(values) + 1), values, "o-", markersize=3, label=name)
    ax.set_xlabel("steps ahead")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def plot_anomalies(panels: list[dict], path: Path, *, threshold: float,
                   title: str = "anomaly scores") -> None:
    """Two rows per series: its values with detected steps (red) and labelled anomalies
    (shaded), then its scores against the threshold. Each panel: ``name``, ``values``
    (T,), ``score`` (T,), ``detected`` (T,) bool and ``labels`` (T,) 0/1 or None."""
    fig = new_figure(8, 2.6 * max(len(panels), 1))
    if fig is None or not panels:
        logger.info("nothing to plot, or matplotlib is not installed; skipping %s", path)
        return
    for i, panel in enumerate(panels):
        top = fig.add_subplot(2 * len(panels), 1, 2 * i + 1)
        bottom = fig.add_subplot(2 * len(panels), 1, 2 * i + 2, sharex=top)
        values, score = list(panel["values"]), list(panel["score"])
        steps = range(len(values))
        top.plot(steps, values, color="black", linewidth=0.8)
        hits = [t for t, d in enumerate(panel["detected"]) if d]
        top.plot(hits, [values[t] for t in hits], "o", color="tab:red", markersize=3,
                 label="detected")
        labels = panel.get("labels")
        for k, t in enumerate(t for t in steps if labels is not None and labels[t]):
            top.axvspan(t - 0.5, t + 0.5, color="tab:orange", alpha=0.3, linewidth=0,
                        label="labelled" if k == 0 else None)
        top.set_ylabel(panel["name"], fontsize=8)
        bottom.plot(steps, score, color="tab:blue", linewidth=0.8)
        bottom.axhline(threshold, color="tab:red", linestyle="--", linewidth=0.8)
        bottom.set_ylabel("score", fontsize=8)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
        if i == 0:
            top.set_title(title)
            top.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_png(fig, path)
