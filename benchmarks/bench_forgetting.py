"""Fine-tuning without forgetting: the new task's accuracy against how much of the
pre-training objective is lost, for each fine-tuning mode and mitigation, in one run.

A byte-level BPE tokenizer (``train_bpe``) is trained on standard-library source
(eight packages, ``PACKAGES``). Two small attention models are pre-trained on that
source with it: a causal one (next token) and a masked one (masked tokens). Each is then
fine-tuned on one of the previous issue's tasks (``--task``):

- ``classify`` (default): which package a 512-byte snippet comes from
  (``seqlab.datasets.write_package_snippets``);
- ``tag``: the token type of every character of standard-library source
  (``seqlab.datasets.write_token_tags``: 512-byte chunks, split by file), tags given per
  character and aligned to the BPE tokens by their character offsets.

Every fine-tuning uses the same steps and rate; only the mode or the mitigation differs:

- plain full fine-tuning, at a rate high enough to forget;
- ``frozen`` (a linear probe: nothing to forget, the least to learn);
- ``lora`` (rank 8 adapters on the attention and feed-forward projections);
- full with replay (``init.replay``), with L2-SP (``init.penalty``), with EWC (``init.ewc``).

Forgetting is ``pretrain/forgetting``: how much the pre-training objective's
validation loss rises through the fine-tuned backbone and the pre-trained head.
The target: at least one mitigation keeps forgetting under a quarter of plain full
fine-tuning's, with accuracy within 2 points of it (or better).

    python benchmarks/bench_forgetting.py [--quick] [--task classify|tag]
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from _common import markdown_table, parse_args, report

PACKAGES = ("json", "email", "http", "logging", "unittest", "asyncio", "importlib", "xml")
CASES = {
    "full": ({}, "full"),
    "frozen (linear probe)": ({}, "frozen"),
    "lora (rank 8)": ({}, "lora"),
    "full + replay 1.0": ({"init": {"replay": 1.0}}, "full"),
    "full + L2-SP 0.1": ({"init": {"penalty": 0.1}}, "full"),
    "full + EWC 1000": ({"init": {"ewc": 1000.0}}, "full"),
}
VARIANTS = {"causal": ("causal_lm", True), "masked": ("masked_lm", False)}


def source_files(out: Path, limit: int | None) -> None:
    """The packages' source, one file in ten held out for validation."""
    from seqlab.datasets import library_files, stdlib_dir

    root = stdlib_dir()
    files = [f for f in library_files() if f.relative_to(root).parts[0] in PACKAGES][:limit]
    for i, path in enumerate(files):
        split = out / ("val" if i % 10 == 9 else "train")
        split.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, split / "_".join(path.relative_to(root).parts))


def verdict(rows: list[dict]) -> str:
    full = next(r for r in rows if r["name"] == "full")
    passing = [r["name"] for r in rows if r["name"] not in ("full", "frozen (linear probe)")
               and r["forgetting"] < full["forgetting"] / 4
               and r["accuracy"] >= full["accuracy"] - 0.02]
    return (f"meets the target: {', '.join(passing)}" if passing
            else "no mitigation meets the target")


def main() -> None:
    import seqlab
    from seqlab.data.bpe import stream_texts, train_bpe
    from seqlab.datasets import write_package_snippets, write_token_tags

    args = parse_args(__doc__.splitlines()[0], rounds=1, iters=1, warmup=0, extra=lambda p: p.add_argument(
        "--task", choices=("classify", "tag"), default="classify", help="the downstream task"))
    pre_steps, fine_steps = (40, 20) if args.quick else (800, 300)
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source_files(tmp / "source", 40 if args.quick else None)
        start = time.perf_counter()
        tokenizer = train_bpe(stream_texts(sorted((tmp / "source" / "train").iterdir())),
                              vocab_size=2048)
        tokenizer.save(tmp / "tokenizer.json")
        bpe_seconds = time.perf_counter() - start
        if args.task == "classify":
            write_package_snippets(tmp / "down", packages=PACKAGES, per_package_cap=160,
                                   min_snippets=32)
            metric, task_note = "accuracy", (
                f"classification of 512-byte snippets of those packages ({len(PACKAGES)} "
                f"classes, chance 0.125)")
        else:
            summary = write_token_tags(tmp / "down", chunk_bytes=512,
                                       max_files=40 if args.quick else 160)
            metric, task_note = "accuracy", (
                f"token-type tagging of 512-byte chunks of {summary['files']['used']} standard-library "
                "files (split by file), tags per character aligned to the BPE tokens (each "
                "token takes its first non-space character's tag)")
        train = {"batch_size": 16, "eval_batches": 8, "progress": False,
                 "num_threads": args.threads or 2}
        for variant, (objective, causal) in VARIANTS.items():
            model = {"mixer": "attention", "causal": causal, "position": "rope", "d_model": 96,
                     "n_layers": 3, "n_heads": 4, "context_length": 128}
            common = {"seed": 0, "model": model,
                      "tokenizer": {"kind": "bpe", "path": str(tmp / "tokenizer.json")}}
            pre = seqlab.RunConfig.from_dict({
                **common, "task": objective,
                "data": {"path": str(tmp / "source" / "train"),
                         "val_path": str(tmp / "source" / "val")},
                "train": {**train, "steps": pre_steps, "lr": 2e-3, "warmup_steps": 40,
                          "eval_every": pre_steps}})
            start = time.perf_counter()
            pre_metrics = seqlab.fit(pre, tmp / variant / "pre").metrics
            pre_seconds = time.perf_counter() - start
            rows = []
            for name, (extra, mode) in CASES.items():
                fine = seqlab.RunConfig.from_dict({
                    **common, **extra, "task": args.task,
                    "data": {"source": "examples", "path": str(tmp / "down" / "train.jsonl"),
                             "val_path": str(tmp / "down" / "val.jsonl"),
                             "max_length": 128, "bucket": True,
                             **({"label_field": "tags"} if args.task == "tag" else {})},
                    "train": {**train, "steps": fine_steps, "lr": 3e-3, "warmup_steps": 20,
                              "eval_every": fine_steps, "best_metric": metric}})
                m = seqlab.finetune(fine, tmp / variant / name.split()[-1], from_run=tmp / variant / "pre",
                                    mode=mode).metrics
                rows.append({"name": name, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                             "loss": m["pretrain/loss"], "forgetting": m["pretrain/forgetting"]})
            full = rows[0]["forgetting"]
            table = markdown_table(
                ["fine-tuning", "accuracy", "macro-F1", f"{objective} loss after",
                 "forgetting (loss rise)", "share of full's forgetting"],
                [[r["name"], f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}", f"{r['loss']:.3f}",
                  f"{r['forgetting']:+.3f}",
                  f"{r['forgetting'] / full:.2f}" if full > 0 else "-"] for r in rows])
            bpb = pre_metrics.get("bits_per_byte")
            sections.append(
                f"### {variant} pre-training ({objective})\n\n"
                f"{pre_steps} steps in {pre_seconds:.0f} s: validation loss "
                f"{pre_metrics['val_loss']:.3f}"
                + ("" if bpb is None else f", bits per byte {bpb:.3f}")
                + f". Target: {verdict(rows)}.\n\n{table}")
    name = "bench_forgetting" + ("" if args.task == "classify" else f"_{args.task}")
    report(name, f"Fine-tuning without forgetting ({args.task}): accuracy against forgetting", args,
           [f"Byte-level BPE of {tokenizer.vocab_size} ids trained in {bpe_seconds:.1f} s on "
            f"the source of {len(PACKAGES)} standard-library packages "
            f"({', '.join(PACKAGES)}); {task_note}. Model: attention, d_model 96, 3 layers, "
            f"context 128 tokens. Fine-tuning: {fine_steps} steps at lr 3e-3, batch 16, the "
            "best accuracy kept. Target: forgetting under a quarter of full's at an "
            "accuracy within 2 points of it.", *sections])


if __name__ == "__main__":
    main()
