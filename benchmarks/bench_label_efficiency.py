"""Label efficiency: downstream score against the number of labelled training examples,
trained from scratch and fine-tuned from a masked-LM run, for two per-position tasks.

- ``protein``: per-residue secondary structure (H, E, C) of generated proteins
  (``seqlab.datasets.proteins``); the score is Q3 (tag accuracy). Pre-training reads
  other generated proteins as plain FASTA, without their labels.
- ``text``: per-byte token types of standard-library source
  (``seqlab.datasets.write_token_tags``, 128-byte chunks, split by file); the score is
  tag accuracy. Pre-training reads the text of every training chunk, without its tags.

For each task one masked-LM run is trained, then for each size N the first N records of
one shuffled training file are trained on twice with the same config (model shape,
steps, batch, learning rate): ``seqlab.fit`` from scratch and ``seqlab.finetune(...,
mode="full")`` from the masked-LM run. Both are scored on the same held-out set after
the same fixed number of steps (the last evaluation, not the best one).

    python benchmarks/bench_label_efficiency.py [--quick] [--tasks protein,text]
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

from _common import markdown_table, parse_args, report

SIZES = (50, 200, 1000, 5000)
QUICK_SIZES = (20, 50)


def _options(p) -> None:
    p.add_argument("--tasks", default="protein,text", help="comma-separated: protein, text")
    p.add_argument("--sizes", default=None, help=f"labelled sizes (default {SIZES})")
    p.add_argument("--pre-steps", type=int, default=None, help="masked-LM steps (default 1500)")
    p.add_argument("--fine-steps", type=int, default=None,
                   help="steps of every labelled run, both arms (default 300)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the labelled runs")
    p.add_argument("--pre-lr", type=float, default=2e-3, help="learning rate of pre-training")
    p.add_argument("--d-model", type=int, default=96)
    p.add_argument("--layers", type=int, default=2)


def _model(args) -> dict:
    return {"mixer": "attention", "causal": False, "position": "rope", "d_model": args.d_model,
            "n_layers": args.layers, "n_heads": 4, "context_length": 128}


def _write_fasta(path: Path, records) -> None:
    path.write_text("".join(f">{r.fields['description']}\n{r.fields['text']}\n" for r in records))


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def protein_data(root: Path, sizes: list[int], *, n_pre: int, n_val: int) -> dict:
    """Labelled proteins (seed 0) and a separate unlabelled set for pre-training (seed 1)."""
    from seqlab.data.records import read_records
    from seqlab.datasets.proteins import write_secondary_structure

    write_secondary_structure(root / "labelled", n_train=max(sizes), n_val=n_val, noise=0.15, seed=0)
    write_secondary_structure(root / "unlabelled", n_train=n_pre, n_val=min(n_val, 500),
                              noise=0.15, seed=1)
    records = read_records(root / "labelled" / "train.fasta")
    random.Random(0).shuffle(records)
    subsets = {}
    for n in sizes:
        subsets[n] = root / "labelled" / f"train_{n}.fasta"
        _write_fasta(subsets[n], records[:n])
    return {
        "pretrain": {"source": "examples", "path": str(root / "unlabelled" / "train.fasta"),
                     "val_path": str(root / "unlabelled" / "val.fasta"), "bucket": True},
        "labelled": lambda n: {"source": "examples", "path": str(subsets[n]),
                               "val_path": str(root / "labelled" / "val.fasta"),
                               "tags_path": str(root / "labelled" / "ss.fasta"), "bucket": True},
        "tokenizer": {"kind": "protein"},
        "about": (f"generated proteins, noise 0.15: labelled training file of {max(sizes)} "
                  f"(seed 0), validation {n_val}; pre-training {n_pre} other proteins "
                  "(seed 1) read as FASTA without labels"),
    }


def text_data(root: Path, sizes: list[int], *, n_val: int, max_files: int | None) -> dict:
    """Token-type tags of 128-byte chunks; pre-training text: every training chunk's text."""
    from seqlab.datasets import write_token_tags

    summary = write_token_tags(root / "tags", chunk_bytes=128, max_files=max_files, seed=0)
    rng = random.Random(0)
    train = [json.loads(line) for line in (root / "tags" / "train.jsonl").open()]
    val = [json.loads(line) for line in (root / "tags" / "val.jsonl").open()]
    if len(train) < max(sizes):
        raise SystemExit(f"only {len(train)} tagged training chunks, fewer than {max(sizes)}")
    rng.shuffle(train)
    rng.shuffle(val)
    _write_jsonl(root / "val.jsonl", val[:n_val])
    _write_jsonl(root / "pretrain.jsonl", [{"text": r["text"]} for r in train])
    subsets = {}
    for n in sizes:
        subsets[n] = root / f"train_{n}.jsonl"
        _write_jsonl(subsets[n], train[:n])
    return {
        "pretrain": {"source": "examples", "path": str(root / "pretrain.jsonl"),
                     "val_fraction": 0.02, "max_length": 128},
        "labelled": lambda n: {"source": "examples", "path": str(subsets[n]),
                               "val_path": str(root / "val.jsonl"), "label_field": "tags",
                               "max_length": 128},
        "tokenizer": {"kind": "byte"},
        "about": (f"stdlib source in 128-byte chunks, split by file: {len(train)} training "
                  f"chunks from {summary['files']['train']} files (all of them, without tags, "
                  f"for pre-training), validation {min(n_val, len(val))} chunks drawn from "
                  f"{summary['files']['val']} held-out files"),
    }


def run_task(name: str, data: dict, sizes: list[int], args, root: Path) -> tuple[list, dict]:
    import seqlab

    train = {"batch_size": 32, "progress": False, "num_threads": args.threads or 2}
    pre = seqlab.RunConfig.from_dict({
        "task": "masked_lm", "seed": 0, "model": _model(args), "tokenizer": data["tokenizer"],
        "data": data["pretrain"],
        "train": {**train, "steps": args.pre_steps, "lr": args.pre_lr, "warmup_steps": 50,
                  "eval_every": args.pre_steps, "eval_batches": 20}})
    pre_result = seqlab.fit(pre, root / "pre")
    pre_info = {"steps": args.pre_steps, "seconds": pre_result.seconds,
                "masked_accuracy": pre_result.metrics["masked_accuracy"],
                "val_loss": pre_result.metrics["val_loss"]}
    rows = []
    for n in sizes:
        fine = seqlab.RunConfig.from_dict({
            "task": "tag", "seed": 0, "model": _model(args), "tokenizer": data["tokenizer"],
            "data": data["labelled"](n),
            "train": {**train, "steps": args.fine_steps, "lr": args.lr, "warmup_steps": 20,
                      "eval_every": args.fine_steps}})
        start = time.perf_counter()
        scratch = seqlab.fit(fine, root / f"scratch_{n}").metrics["accuracy"]
        mid = time.perf_counter()
        tuned = seqlab.finetune(fine, root / f"pretrained_{n}", from_run=root / "pre", mode="full",
                                overrides=["init.measure_forgetting=false"]).metrics["accuracy"]
        seconds = (mid - start, time.perf_counter() - mid)
        rows.append([n, f"{scratch:.3f}", f"{tuned:.3f}", f"{tuned - scratch:+.3f}",
                     f"{seconds[0]:.0f} / {seconds[1]:.0f}"])
        print(f"{name} N={n}: scratch {scratch:.3f}, pre-trained {tuned:.3f}", flush=True)
    return rows, pre_info


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=1, iters=1, warmup=0, extra=_options)
    sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes
             else list(QUICK_SIZES if args.quick else SIZES))
    if args.pre_steps is None:
        args.pre_steps = 40 if args.quick else 1500
    if args.fine_steps is None:
        args.fine_steps = 20 if args.quick else 300
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for task in tasks:
            root = tmp / task
            if task == "protein":
                data = protein_data(root, sizes, n_pre=500 if args.quick else 20000,
                                    n_val=100 if args.quick else 500)
                title, score = "Per-residue secondary structure", "Q3"
            elif task == "text":
                data = text_data(root, sizes, n_val=100 if args.quick else 1000,
                                 max_files=40 if args.quick else None)
                title, score = "Token-type tagging of standard-library source", "tag accuracy"
            else:
                raise SystemExit(f"unknown task {task!r}; choose from protein, text")
            rows, pre = run_task(task, data, sizes, args, root)
            table = markdown_table(["N labelled", f"scratch {score}", f"pre-trained {score}",
                                    "gain", "seconds (scratch / pre-trained)"], rows)
            sections.append(
                f"## {title}\n\nData: {data['about']}.\n\n"
                f"Pre-training (masked LM, 15% of tokens): {pre['steps']} steps of batch 32 at "
                f"lr {args.pre_lr}, {pre['seconds']:.0f} s wall; validation loss "
                f"{pre['val_loss']:.3f}, masked accuracy {pre['masked_accuracy']:.3f}.\n\n"
                f"Labelled runs (both arms): {args.fine_steps} steps of batch 32 at lr {args.lr}, "
                "20 warm-up steps, scored once at the last step.\n\n" + table)
    model = _model(args)
    report("bench_label_efficiency", "Label efficiency: from scratch against masked-LM pre-training",
           args, [f"Model (every run): {model['mixer']}, bidirectional, rope, d_model "
                  f"{model['d_model']}, {model['n_layers']} layers, {model['n_heads']} heads, "
                  f"context {model['context_length']}."] + sections)


if __name__ == "__main__":
    main()
