"""The core's cost: padding and bucketing, and causal LM speed before and after the
reshaping of issue 8 (data sources, heads with summed losses, hooks).

1. ``classify`` on examples of varying length (64 to 256 tokens), padded and bucketed by
   the collator, against the same model fed unpadded batches without a padding mask:
   real tokens per second of whole training steps (batch, forward, loss, backward,
   AdamW). Two unpadded references: batches of the very same lengths (each bucketed batch
   cropped to its shortest row, so only padding and masking differ), and batches all of
   the mean length (which also removes the variation of length from step to step; a
   kernel whose cost per token grows with length, like oneDNN's LSTM backward on CPU or
   attention's T x T part, is cheaper there for reasons that have nothing to do with
   padding). Unbucketed padding is shown too. Target: bucketed >= 0.9x unpadded.
2. ``causal_lm`` training speed of this checkout against an older commit (``--baseline``,
   default: the last commit before issue 8), each trained in its own process on the same
   corpus and config. The two run at the same time, one per core and one thread each, so
   both see the same load from the rest of the (shared) machine; a ratio is the median
   over rounds.

Run: ``python benchmarks/bench_core.py [--quick] [--baseline REF] [--only padding|speed]
[--threads N]``; ``--only speed`` writes ``bench_core_speed.md`` (the speed check that any
later reshaping of the core runs against the commit before it).
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

from _common import ROOT, interleaved, markdown_table, parse_args, report

BASELINE = "ce3b509"  # the last commit before issue 8 reshaped the core


def write_examples(path: Path, lengths: list[int], seed: int = 0) -> None:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz "
    with open(path, "w") as f:
        for n in lengths:
            label = rng.randrange(4)
            text = "".join(rng.choice(letters) for _ in range(n))
            f.write(json.dumps({"text": text, "label": str(label)}) + "\n")


def classify_trainer(data: Path, run: Path, mixer: str, bucket: bool, threads: int):
    import seqlab
    from seqlab.train.trainer import Trainer

    position = "rope" if mixer == "attention" else "none"
    config = seqlab.RunConfig.from_dict({
        "task": "classify", "seed": 0,
        "model": {"mixer": mixer, "position": position, "d_model": 128, "n_layers": 4,
                  "n_heads": 4, "context_length": 256, "causal": False,
                  "ffn": "mlp" if mixer == "attention" else "none"},
        "data": {"source": "examples", "path": str(data), "bucket": bucket, "val_fraction": 0.05},
        "train": {"steps": 10**6, "batch_size": 16, "lr": 1e-3, "progress": False,
                  "num_threads": threads, "eval_every": 10**6}})
    trainer = Trainer(config, run)
    trainer._setup()
    return trainer


def padding_section(args, work: Path) -> str:
    rng = random.Random(0)
    varying = [rng.randint(64, 256) for _ in range(2000)]
    mean = round(statistics.mean(varying))
    write_examples(work / "varying.jsonl", varying)
    write_examples(work / "fixed.jsonl", [mean] * 2000)
    rows = []
    for mixer in ("attention", "lstm"):
        cases, tokens = {}, {}
        for name, file, bucket in (("bucketed", "varying.jsonl", True),
                                   ("unbucketed", "varying.jsonl", False),
                                   ("same lengths, unpadded", "varying.jsonl", True),
                                   ("mean length, unpadded", "fixed.jsonl", False)):
            trainer = classify_trainer(work / file, work / f"run-{mixer}-{len(cases)}", mixer,
                                       bucket, args.threads or 1)
            if name.startswith("same lengths"):
                trainer.objective.train_batch = cropped(trainer.objective.train_batch)
            tokens[name] = []

            def step(trainer=trainer, seen=tokens[name]):
                _, items, padded = trainer._train_step()
                trainer.step += 1
                seen.append((items, padded))

            cases[name] = step
        times = interleaved(cases, rounds=args.rounds, iters=args.iters, warmup=args.warmup)
        rates, padding = {}, {}
        for name in cases:
            done = tokens[name][args.warmup:]
            per_round = [sum(i for i, _ in done[r * args.iters:(r + 1) * args.iters]) / (t * args.iters)
                         for r, t in enumerate(times[name])]
            rates[name] = per_round
            padding[name] = sum(p for _, p in done) / max(sum(i + p for i, p in done), 1)
        same, fixed = rates["same lengths, unpadded"], rates["mean length, unpadded"]
        for name in cases:
            vs_same = statistics.median(a / b for a, b in zip(rates[name], same))
            vs_fixed = statistics.median(a / b for a, b in zip(rates[name], fixed))
            rows.append([mixer, name, f"{statistics.median(rates[name]):,.0f}",
                         f"{padding[name]:.1%}", f"{vs_same:.2f}x", f"{vs_fixed:.2f}x"])
    table = markdown_table(["mixer", "batches", "real tokens/s", "padding",
                            "vs same lengths unpadded", "vs mean length unpadded"], rows)
    return ("## classify: padded and bucketed vs unpadded batches\n\n"
            f"2000 examples of 64-256 tokens (mean {mean}); d_model 128, 4 layers, batch 16, "
            "bidirectional. 'same lengths, unpadded' crops each bucketed batch to its shortest "
            "row and drops the mask; 'mean length, unpadded' trains on 2000 examples all of "
            f"length {mean}. Real tokens per second of whole training steps; a ratio is the "
            "median of per-round ratios.\n\n" + table)


def cropped(train_batch):
    """``train_batch`` with each batch cut to its shortest row and the mask dropped: the
    same lengths as the bucketed batches, without padding."""
    import dataclasses

    def batch(step: int, micro: int):
        b = train_batch(step, micro)
        if b.padding_mask is None:
            return b
        shortest = int(b.padding_mask.sum(1).min())
        return dataclasses.replace(b, inputs=b.inputs[:, :shortest].contiguous(), padding_mask=None)

    return batch


CHILD = textwrap.dedent("""
    import json, sys, pathlib
    import seqlab
    from seqlab.train.trainer import Trainer
    corpus, run, steps, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    config = seqlab.RunConfig.from_dict({
        "task": "causal_lm", "seed": 0,
        "model": {"preset": "llama-tiny", "context_length": 128},
        "tokenizer": {"kind": "byte"},
        "data": {"path": corpus, "val_fraction": 0.05},
        "train": {"steps": steps, "batch_size": 16, "lr": 1e-3, "warmup_steps": 10,
                  "eval_every": 10**6, "eval_batches": 1, "log_every": 10, "progress": False,
                  "num_threads": threads, "keep_checkpoints": 1}})
    Trainer(config, run).fit()
    rates = [r["tokens_per_s"] for r in map(json.loads, pathlib.Path(run, "metrics.jsonl").read_text().splitlines())
             if "tokens_per_s" in r]
    print(json.dumps(rates[1:]))
""")


def extract(ref: str, into: Path) -> Path:
    archive = into / "baseline.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", ref], stdout=f, check=True)
    tree = into / "baseline"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def corpus(work: Path, max_bytes: int = 2_000_000) -> Path:
    import sysconfig

    out, total = work / "corpus.txt", 0
    with open(out, "w", encoding="utf-8") as f:
        for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
            text = path.read_text(encoding="utf-8", errors="replace")
            f.write(text)
            total += len(text)
            if total >= max_bytes:
                break
    return out


def speed_section(args, work: Path) -> str:
    tree = extract(args.baseline, work)
    text = corpus(work)
    steps = 40 if args.quick else 120
    rates = {"before": [], "after": []}
    for r in range(args.rounds):
        procs = {name: subprocess.Popen(
                    [sys.executable, "-c", CHILD, str(text), str(work / f"lm-{name}-{r}"),
                     str(steps), "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                    env={"PYTHONPATH": str(source), "PATH": "/usr/bin:/bin"}, cwd=str(source))
                 for name, source in (("before", tree), ("after", ROOT))}
        for name, proc in procs.items():
            out, err = proc.communicate()
            if proc.returncode:
                raise RuntimeError(f"{name} run failed: {err[-2000:]}")
            rates[name].append(statistics.median(json.loads(out.strip().splitlines()[-1])))
    ratio = statistics.median(a / b for a, b in zip(rates["after"], rates["before"]))
    rows = [[name, f"{statistics.median(v):,.0f}", f"{min(v):,.0f}-{max(v):,.0f}"]
            for name, v in rates.items()]
    return (f"## causal_lm training speed: `{args.baseline}` (before) and this checkout (after)\n\n"
            f"`llama-tiny`, context 128, batch 16, byte tokenizer, {steps} steps per run on "
            f"2 MB of standard-library source; before = commit `{args.baseline}`, after = this "
            "checkout; each run in its own process on one thread, the two at the same time. "
            "Tokens per second of training (median over the log windows after the first).\n\n"
            + markdown_table(["code", "tokens/s (median)", "min-max over rounds"], rows)
            + f"\n\nafter / before: **{ratio:.3f}x** (median of per-round ratios)")


def main() -> None:
    def extra(p):
        p.add_argument("--baseline", default=BASELINE)
        p.add_argument("--only", choices=["padding", "speed"], default=None)

    args = parse_args(__doc__.splitlines()[0], rounds=5, iters=5, warmup=2, extra=extra)
    parts = {"padding": padding_section, "speed": speed_section}
    wanted = [args.only] if args.only else list(parts)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sections = [parts[name](args, work) for name in wanted]
    report("bench_core" + (f"_{args.only}" if args.only else ""),
           "The core: padding, bucketing, and causal LM speed before/after", args, sections)


if __name__ == "__main__":
    main()
