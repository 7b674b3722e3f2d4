"""The Markdown report of ``bench_objectives.py``, rebuilt from every demo's JSON record.

Each demo's record (``benchmarks/results/objectives/<demo>.json``) keeps its own date,
machine and settings, so rerunning one demo leaves the others' numbers as measured.
Hand-written observations, if any, live in ``objectives/notes.md`` and are appended.
"""

from __future__ import annotations

import json
from pathlib import Path

from _common import markdown_table

ORDER = ("tag", "classify", "mlm", "features")
TITLES = {
    "tag": "1. Tagging: the token type of every byte of Python source",
    "classify": "2. Classification: which standard-library package a 512-byte snippet is from",
    "mlm": "3. Masked language modeling on standard-library source",
    "features": "4. Feature vectors: which dynamical system made a 3-channel series",
}


def _f(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _count(n) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e4 else str(n)


def _labelled_table(rows: list[dict]) -> str:
    """Accuracy is that of the weights kept (the run's best evaluation by its
    ``train.best_metric``); the last column is the accuracy of the last evaluation."""
    header = ["model", "what", "params", "steps × batch", "lr", "train s", "eval s",
              "train loss (last)", "val loss", "accuracy", "macro-F1", "accuracy (last eval)"]
    body = []
    for r in sorted(rows, key=lambda r: (r["kind"] != "baseline", -r["metrics"]["accuracy"])):
        m = r["metrics"]
        if r["kind"] == "baseline":
            body.append([f"baseline: {r['name']}", r["model"], _count(r["params"]), "—", "—",
                         _f(r["fit_s"], 1), "—", "—", "—", _f(m["accuracy"]), _f(m["macro_f1"]),
                         "—"])
        else:
            body.append([f"**{r['name']}**", r["model"], _count(r["params"]),
                         f"{r['steps']} × {r['batch_size']}", f"{r['lr']:g}", _f(r["fit_s"], 0),
                         _f(r["eval_s"], 1), _f(r["final_train_loss"]), _f(m["val_loss"]),
                         _f(m["accuracy"]), _f(m["macro_f1"]),
                         f"{_f(r['last_eval'].get('accuracy'))} (step {r['last_eval'].get('step')})"])
    return markdown_table(header, body)


def _per_label_table(rows: list[dict], labels: list[str], title: str) -> str:
    header = ["model", *labels]
    body = [[r["name"], *[_f(r.get("predicted", r["metrics"]).get(f"f1/{t}"), 2) for t in labels]]
            for r in sorted(rows, key=lambda r: (r["kind"] != "baseline", r["name"]))]
    return f"{title}\n\n" + markdown_table(header, body)


def _consistency(rows: list[dict]) -> str:
    """``run.predict`` on the validation inputs, scored here, against ``run.evaluate``."""
    checked = [r for r in rows if "predicted" in r]
    if not checked:
        return ""
    gaps = {r["name"]: abs(r["predicted"]["accuracy"] - r["metrics"]["accuracy"]) for r in checked}
    worst = max(gaps, key=gaps.get)
    verdict = ("they agree" if gaps[worst] < 1e-9 else
               f"**they disagree**: largest gap {gaps[worst]:.4f} ({worst})")
    return (f"Check: every seqlab run also predicted the validation inputs with `run.predict` "
            f"(scored here, as the baselines); its accuracy against `run.evaluate`'s: {verdict}. "
            f"Per-class F1 of the seqlab runs comes from these predictions.")


def _curves(rows: list[dict]) -> str:
    """The step of the weights reported per seqlab run (its best evaluation by the run's
    ``best_metric``)."""
    parts = [f"{r['name']} {r['best_step']}/{r['steps']}" for r in rows
             if r["kind"] == "seqlab" and r.get("best_step") is not None]
    metrics = sorted({r.get("best_metric", "val_loss") for r in rows if r["kind"] == "seqlab"})
    how = " or ".join("highest validation accuracy" if m == "accuracy" else
                      "lowest validation loss" if m == "val_loss" else f"best {m}" for m in metrics)
    return f"Step of the reported ({how}) weights: " + ", ".join(parts) + "."


def _provenance(record: dict) -> str:
    """Machine and pool size of the rows; when a partial rerun (``--only``) measured some
    rows elsewhere, each command with the rows it measured."""
    groups: dict[tuple, list[str]] = {}
    for r in record["rows"]:
        key = (r.get("machine", record["machine"]), r.get("workers", record["workers"]),
               r.get("command", record.get("command", "?")))
        groups.setdefault(key, []).append(r["name"])
    parts = []
    for (machine, workers, command), names in sorted(groups.items()):
        part = f"{machine}, {workers} jobs at a time, each on 1 thread"
        if len(groups) > 1:
            part += f" (`{command}`: {', '.join(names)})"
        parts.append(part)
    return "; ".join(parts)


def _section(record: dict) -> str:
    demo, data = record["demo"], record["data"]
    rows = [r for r in record["rows"] if "error" not in r]
    failed = [r for r in record["rows"] if "error" in r]
    stamps = sorted({r["measured"] for r in record["rows"]})
    when = stamps[0] if len(stamps) == 1 else f"{stamps[0]} to {stamps[-1]}" if stamps else "—"
    lines = [f"## {TITLES[demo]}", "",
             f"Measured {when}; {_provenance(record)}."
             + (f" Config overrides: `{' '.join(record['overrides'])}`." if record["overrides"] else "")
             + (" **--quick smoke run: not a measurement.**" if record["quick"] else ""), ""]
    if failed:
        lines += ["**Failed:** " + "; ".join(f"{r['name']}: `{r['error']}`" for r in failed), ""]
    seqlab_rows = [r for r in rows if r["kind"] == "seqlab"]
    if demo == "tag":
        tags = [t for t, n in data["tag_counts"]["val"].items() if n]
        lines += [f"Data: `write_token_tags(max_files=…, chunk_bytes=256)`: "
                  f"{data['files']['train']} training files ({data['records']['train']} chunks, "
                  f"{data['bytes']['train']:,} bytes) and {data['files']['val']} validation files "
                  f"({data['records']['val']} chunks, {data['bytes']['val']:,} bytes), split by "
                  f"file. Validation tag counts: "
                  + ", ".join(f"{t} {n:,}" for t, n in data["tag_counts"]["val"].items() if n)
                  + ". Scored: every validation byte (accuracy per position; macro-F1 over the "
                    "tags present in truth or prediction).", "",
                  _labelled_table(rows), "", _curves(seqlab_rows), "",
                  _consistency(rows), "", _per_label_table(rows, tags, "F1 per tag (N name, K keyword, O operator, "
                                               "S string, D number, C comment, L line break, "
                                               "W whitespace):")]
    elif demo == "classify":
        counts = data["counts"]
        n_val = data["records"]["val"]
        top = max(counts["val"].values())
        lines += [f"Data: `write_package_snippets(snippet_bytes=512)`: {len(data['labels'])} "
                  f"packages ({', '.join(data['labels'])}); {data['records']['train']} training "
                  f"snippets from {data['files']['train']} files, {n_val} validation snippets "
                  f"from {data['files']['val']} other files. Chance: 1/{len(data['labels'])} = "
                  f"{1 / len(data['labels']):.3f}; always the largest validation class: "
                  f"{top / n_val:.3f}. Every model and baseline weighs classes as balanced; "
                  f"the seqlab models pool the mean of the hidden states (`pooling: mean`) and keep "
                  f"the weights of their most accurate evaluation (`train.best_metric: "
                  f"accuracy`; chosen among 4 evaluations on the validation split, so slightly "
                  f"optimistic).",
                  "", _labelled_table(rows), "", _curves(seqlab_rows), "", _consistency(rows)]
    elif demo == "mlm":
        lines += [f"Data: standard-library `.py` files (tests left out), whole files in a "
                  f"seeded random order: {data['files']['train']} files "
                  f"({data['bytes']['train']:,} bytes) for training, {data['files']['val']} "
                  f"other files ({data['bytes']['val']:,} bytes) for validation. "
                  f"15% of the tokens chosen (80% `<mask>`, 10% random, 10% kept).", ""]
        header = ["model", "what", "params", "steps × batch × context", "lr", "train s",
                  "eval s", "train loss (last)", "val loss", "masked accuracy", "perplexity"]
        body = []
        for r in seqlab_rows:
            m, b = r["metrics"], r["baseline"]
            body.append([f"**{r['name']}**", r["model"], _count(r["params"]),
                         f"{r['steps']} × {r['batch_size']} × {r['context']}", f"{r['lr']:g}",
                         _f(r["fit_s"], 0), _f(r["eval_s"], 1), _f(r["final_train_loss"]),
                         _f(m["val_loss"]), _f(m["masked_accuracy"]), _f(m["perplexity"], 2)])
            body.append(["baseline: unigram", f"always {b['most_frequent_byte']!r}, the most "
                         "frequent training byte", "1", "—", "—", "—", "—", "—", "—",
                         _f(b["unigram_masked_accuracy"]), "—"])
            body.append(["baseline: neighbours", "most frequent training byte between the "
                         "two bytes around the position (as masked)", _count(None), "—", "—",
                         "—", "—", "—", "—", _f(b["neighbours_masked_accuracy"]), "—"])
            lines += [markdown_table(header, body), "",
                      f"Scored on the {b['masked_positions']:,} positions evaluation chose in "
                      f"{b['val_tokens_scored']:,} validation tokens (the baselines on the same "
                      f"positions, replaying the run's seeded masks). " + _curves(seqlab_rows)]
    elif demo == "features":
        classes = data["classes"]
        lines += [f"Data: `write_dynamics`: {len(classes)} classes ({', '.join(classes)}), "
                  f"{data['channels']} channels, lengths {data['lengths'][0]}–{data['lengths'][1]}; "
                  f"{data['train']['sequences']} training and {data['val']['sequences']} "
                  f"validation sequences (balanced, independent seeds). Chance: "
                  f"{1 / len(classes):.3f}. The seqlab runs normalise each channel with training "
                  "statistics (`normalize: true`) and pool the mean of the hidden states over "
                  "time.", "", _labelled_table(rows), "", _curves(seqlab_rows), "",
                  _consistency(rows), "", _per_label_table(rows, classes, "F1 per class:")]
    train_s = sum(r["wall_s"] for r in record["rows"])
    lines += ["", f"Sum of the job times in this demo (each job: data loading, training, "
                  f"evaluation and prediction): {train_s / 60:.1f} min. The last command "
                  f"(`{record.get('command', '?')}`) took "
                  f"{record.get('command_s', float('nan')) / 60:.1f} min in all."]
    return "\n".join(lines)


def render(out_dir: Path, *, quick: bool = False) -> str:
    records = {}
    for demo in ORDER:
        path = out_dir / f"{demo}.json"
        if path.exists():
            records[demo] = json.loads(path.read_text(encoding="utf-8"))
    head = ["# seqlab objectives on real data, each against a baseline", "",
            "`python benchmarks/bench_objectives.py` (see its docstring). Every seqlab number is "
            "the weights of the run's best evaluation (by its `train.best_metric`: the lowest "
            "validation loss, or in classification the highest accuracy) scored by "
            "`seqlab.load(run).evaluate()` on the whole validation split; every baseline is "
            "fitted on the same training split and scored on the same validation split with "
            "the same definitions. Training and validation are split by source file (tagging, "
            "classification, masked LM) or drawn from independent seeds (dynamics). "
            "'train s' is `seqlab.fit`'s wall time including its periodic evaluations."
            + (" **--quick smoke run: not a measurement.**" if quick else "")]
    text = "\n\n".join(["\n".join(head)] + [_section(r) for r in records.values()])
    notes = out_dir / "notes.md"
    if notes.exists() and not quick:
        text += "\n\n" + notes.read_text(encoding="utf-8").strip()
    return text + "\n"
