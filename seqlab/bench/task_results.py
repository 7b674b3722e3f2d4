"""What one run of the long-range task suite records, and how the results are written:
``results.csv`` (every run), ``results.md`` (a table per task) and
``accuracy_vs_length.png``. The runs themselves are in ``seqlab.bench.tasks``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path

from seqlab.io import atomic_write
from seqlab.plots import new_figure, save_png

logger = logging.getLogger("seqlab")

# How far beyond the training length induction is evaluated (Olsson et al. 2022 and
# the H3 paper test length generalisation the same way).
EXTRAPOLATION = (2, 4, 8)

# The keys of one run's row, in the order of results.csv.
COLUMNS = ["task", "mixer", "length", "status", "accuracy", "chance", "val_loss", "mse",
           *[f"accuracy@{k}x" for k in EXTRAPOLATION], "params", "target_params", "d_model",
           "n_layers", "causal", "steps", "batch_size", "lr", "selected", "train_seconds",
           "mixer_options", "run_dir"]


def progress_line(row: dict) -> str:
    """One finished run in a line, for the progress callback."""
    head = f"{row['task']} L={row['length']} {row['mixer']} lr={row['lr']:g}"
    if row["status"] != "ok":
        return f"{head}: {row['status']} ({row['train_seconds']}s)"
    extra = "".join(f", @{k}x {row[f'accuracy@{k}x']}" for k in EXTRAPOLATION
                    if row[f"accuracy@{k}x"] != "")
    return (f"{head}: accuracy {row['accuracy']} (chance {row['chance']}){extra}; "
            f"d_model {row['d_model']}, {row['params']} params, {row['train_seconds']}s")


def write_results(rows: list[dict], out_dir: Path) -> None:
    """``results.csv`` (one row per run), ``results.md`` and ``accuracy_vs_length.png``
    (these two show only the runs with ``selected`` true, when a sweep chose among them)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out_dir / "results.csv", buf.getvalue())
    shown = [r for r in rows if r.get("selected", True)]
    atomic_write(out_dir / "results.md", results_markdown(shown, swept=len(shown) < len(rows)))
    plot_results(shown, out_dir / "accuracy_vs_length.png")


def _cell(row: dict | None, key: str = "accuracy") -> str:
    if row is None:
        return ""
    return str(row[key]) if row["status"] == "ok" else row["status"].split(":")[0]


def results_markdown(rows: list[dict], *, swept: bool = False) -> str:
    """One table per task (rows mixer, columns length), induction beyond its training
    length, the parameter counts, and after a sweep the learning rate of each cell's
    best run (``rows`` holds one run per cell)."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    mixers = list(dict.fromkeys(r["mixer"] for r in rows))
    lengths = sorted({r["length"] for r in rows})
    index = {(r["task"], r["mixer"], r["length"]): r for r in rows}
    lines = ["# Long-range task suite", "",
             "Accuracy on held-out sequences over the scored positions (adding: the rate of "
             "|error| < 0.04). OOM: out of memory; error: see results.csv.", ""]
    for task in tasks:
        chance = next(r["chance"] for r in rows if r["task"] == task)
        lines += [f"## {task} (chance {chance})", "",
                  "| mixer | " + " | ".join(f"L={n}" for n in lengths) + " |",
                  "|---|" + "---|" * len(lengths)]
        for mixer in mixers:
            cells = [_cell(index.get((task, mixer, n))) for n in lengths]
            lines.append(f"| {mixer} | " + " | ".join(cells) + " |")
        lines.append("")
        if task == "induction":
            lines += ["### induction beyond the training length", "",
                      "| mixer | trained at | 1x | " + " | ".join(f"{k}x" for k in EXTRAPOLATION)
                      + " |", "|---|---|---|" + "---|" * len(EXTRAPOLATION)]
            for mixer in mixers:
                for n in lengths:
                    row = index.get((task, mixer, n))
                    if row is not None:
                        cells = [_cell(row)] + [_cell(row, f"accuracy@{k}x") for k in EXTRAPOLATION]
                        lines.append(f"| {mixer} | {n} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["## parameters (d_model)", "", "| mixer | " + " | ".join(tasks) + " |",
              "|---|" + "---|" * len(tasks)]
    for mixer in mixers:
        cells = []
        for task in tasks:
            row = next((r for r in rows if r["task"] == task and r["mixer"] == mixer
                        and r["params"] != ""), None)
            cells.append(f"{row['params']} ({row['d_model']})" if row else "")
        lines.append(f"| {mixer} | " + " | ".join(cells) + " |")
    if swept:
        lines += ["", "## learning rate of the best run", "",
                  "Each cell is the best of a learning-rate sweep (highest accuracy, then lowest "
                  "validation loss); every run is in results.csv.", "",
                  "| task | mixer | " + " | ".join(f"L={n}" for n in lengths) + " |",
                  "|---|---|" + "---|" * len(lengths)]
        for task in tasks:
            for mixer in mixers:
                cells = [f"{index[task, mixer, n]['lr']:g}" if (task, mixer, n) in index else ""
                         for n in lengths]
                lines.append(f"| {task} | {mixer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_results(rows: list[dict], path: Path) -> None:
    """Accuracy against training length, one subplot per task (plus induction
    beyond its training length), a line per mixer, chance dashed. Skipped (logged)
    when matplotlib is not installed."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    mixers = list(dict.fromkeys(r["mixer"] for r in rows))
    panels = tasks + (["induction beyond training length"] if "induction" in tasks else [])
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = new_figure(4.5 * cols, 3.4 * nrows)
    if fig is None:
        logger.info("matplotlib is not installed; skipping %s", path)
        return
    import matplotlib  # importable: new_figure found it

    axes = fig.subplots(nrows, cols, squeeze=False)
    tab10 = matplotlib.colormaps["tab10"]
    colors = {m: tab10(i % 10) for i, m in enumerate(mixers)}
    for ax, panel in zip(axes.flat, panels):
        ok = [r for r in rows if r["status"] == "ok"]
        if panel in tasks:
            for mixer in mixers:
                pts = sorted((r["length"], r["accuracy"]) for r in ok
                             if r["task"] == panel and r["mixer"] == mixer)
                if pts:
                    ax.plot(*zip(*pts), "o-", color=colors[mixer], label=mixer)
            chance = next(r["chance"] for r in rows if r["task"] == panel)
            ax.set_xlabel("training length")
        else:
            styles = ["-", "--", ":", "-."]
            for mixer in mixers:
                runs = sorted((r for r in ok if r["task"] == "induction" and r["mixer"] == mixer),
                              key=lambda r: r["length"])
                for i, r in enumerate(runs):
                    pts = [(r["length"], r["accuracy"])] + [
                        (k * r["length"], r[f"accuracy@{k}x"]) for k in EXTRAPOLATION
                        if r[f"accuracy@{k}x"] != ""]
                    ax.plot(*zip(*pts), marker=".", linestyle=styles[i % len(styles)],
                            color=colors[mixer], label=mixer if i == 0 else None)
            chance = next(r["chance"] for r in rows if r["task"] == "induction")
            ax.set_xlabel("evaluated length (line style: training length)")
        ax.axhline(chance, color="gray", linestyle="--", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(panel)
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    save_png(fig, path)
