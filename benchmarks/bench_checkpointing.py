"""Activation checkpointing: peak memory and step time of training with and without it.

Each case trains a causal LM for a few steps in its own process (so peak resident
memory, ``ru_maxrss``, is that case's alone), alternating the two cases round by round.
Memory is reported as the peak minus the resident size right after the model and
optimizer are built, i.e. what the training steps themselves added (activations,
gradients, optimizer state). On a GPU the same comparison would use
``torch.cuda.max_memory_allocated``; CPU RSS includes allocator slack, so read the
ratio, not the bytes.

    python benchmarks/bench_checkpointing.py [--quick] [--threads N]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import textwrap

from _common import ROOT, markdown_table, parse_args, report

CHILD = textwrap.dedent("""
    import json, resource, statistics, sys, time, torch
    import seqlab
    from seqlab.train.trainer import Trainer
    corpus, run, checkpointing, steps, threads, layers, context = sys.argv[1:8]
    torch.set_num_threads(int(threads))
    config = seqlab.RunConfig.from_dict({
        "seed": 0, "tokenizer": {"kind": "byte"},
        "model": {"mixer": "attention", "d_model": 256, "n_layers": int(layers), "n_heads": 4,
                  "context_length": int(context), "position": "rope", "ffn": "swiglu"},
        "data": {"path": corpus},
        "train": {"steps": 10**6, "batch_size": 8, "progress": False,
                  "num_threads": int(threads), "activation_checkpointing": checkpointing == "1"}})
    trainer = Trainer(config, run)
    trainer._setup()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(int(steps)):
        start = time.perf_counter()
        trainer._train_step()
        trainer.step += 1
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"added_mib": (peak - base) / 1024, "step_s": statistics.median(times[1:])}))
""")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=3, iters=1, warmup=0)
    layers, context, steps = (4, 256, 3) if args.quick else (12, 1024, 5)
    results = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = f"{tmp}/corpus.txt"
        text = (ROOT / "README.md").read_text(encoding="utf-8")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write(text * 40)
        for r in range(args.rounds):
            order = [("off", "0"), ("on", "1")]
            for name, flag in (order if r % 2 == 0 else order[::-1]):
                proc = subprocess.run(
                    [sys.executable, "-c", CHILD, corpus, f"{tmp}/run-{name}-{r}", flag, str(steps),
                     str(args.threads or 1), str(layers), str(context)],
                    capture_output=True, text=True, cwd=ROOT)
                if proc.returncode:
                    raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
                results[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rows = []
    for name, label in (("off", "plain"), ("on", "activation checkpointing")):
        mem = statistics.median(r["added_mib"] for r in results[name])
        step = statistics.median(r["step_s"] for r in results[name])
        rows.append([label, f"{mem:,.0f}", f"{step:.2f}"])
    mem_ratio = statistics.median(a["added_mib"] / b["added_mib"]
                                  for a, b in zip(results["on"], results["off"]))
    time_ratio = statistics.median(a["step_s"] / b["step_s"]
                                   for a, b in zip(results["on"], results["off"]))
    table = markdown_table(["training", "memory added by training (MiB, peak RSS)",
                            "step time (s, median)"], rows)
    report("bench_checkpointing", "Activation checkpointing: memory and time", args,
           [f"Attention, d_model 256, {layers} layers, context {context}, batch 8, byte "
            f"tokens, {steps} steps per process.\n\n" + table
            + f"\n\nwith / without: memory **{mem_ratio:.2f}x**, step time **{time_ratio:.2f}x** "
              "(medians of per-round ratios)"])


if __name__ == "__main__":
    main()
