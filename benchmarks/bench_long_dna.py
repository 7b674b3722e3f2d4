"""Long DNA: is the gene on? Two signals 28,672+ bases apart decide, at 32,768 bases.

The records of ``seqlab.datasets.long_dna``: a cluster of enhancer sites in the first
2,048 bases and of core-promoter sites in the last 2,048, each of class ``dev`` or
``hk``; the gene is ``active`` when the classes match. The models learn the pair of
classes (``PAIR_LABEL``: four classes, chance 0.25; a model that reads only one end can
reach 0.5), and the answer to "is the gene on" is read off the pair they predict
(chance 0.5, and 0.5 for one end alone). Either way a model must carry what it read at
the start across at least 28,672 bases of background to the end. (Trained on the on/off
label directly, an XOR, both models sat at chance for hundreds of steps at 512 bases
before any learning, and not reliably: the pair has a first-order signal for each half.)

Two models of the same width and depth learn it the same way, by a curriculum of
record lengths (each stage fine-tunes the previous stage's run with ``init.run``):

1. 512 bases (signals 64 bases wide, at least 384 apart), where both can see both;
2. 4,096 bases (512-base regions, at least 3,072 apart);
3. 32,768 bases, the task itself; the accuracy reported is this stage's, on 32k records
   it never trained on.

- ``mamba``: the ``mamba`` preset (selective state-space mixers, RMSNorm, no positions)
  at d_model 64 and 2 layers, read causally and classified from its last position, so
  the answer must travel in its recurrent state;
- ``window_attention``: bidirectional attention in 256-base windows, rotary positions,
  2 layers: it sees 512 bases around each position, enough for stage 1 and not beyond.

Known flaw of this design (found in its first full run, to fix before its numbers mean
anything): window attention classifies from the mean over all positions, and a linear
head on a mean of local features can read the pair of classes (each class logit a sum of
an enhancer term and a promoter term) without any position ever seeing both ends. The
pair label therefore does not force long-range mixing on a mean-pooled model; only the
on/off label (an XOR, which a linear read-out of a sum cannot compute) does, and on that
label the models sit at chance for hundreds of steps before any learning. The fix to
try: the XOR label with a longer first stage (or a mean-pooled XOR-capable probe on both
arms), and a first stage whose mechanism survives the move to 4,096 bases.

Memory: the peak resident memory of a fresh process running one training step (forward
and backward, batch 1) at 32,768 bases, less that of the same process before the step;
and the peak of each arm's whole curriculum process.

    python benchmarks/bench_long_dna.py [--quick] [--threads N]
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import markdown_table, parse_args, report

ARMS = ("mamba", "window_attention")
D_MODEL, LAYERS, WINDOW = 64, 2, 256


def stages(quick: bool) -> list[dict]:
    """Each stage's record spec, data sizes and training (steps, batch, lr)."""
    from seqlab.datasets.long_dna import LongDNASpec

    if quick:
        return [dict(spec=LongDNASpec(512, 64, 64, sites=4, decoys=2), n_train=64, n_val=16,
                     steps=4, batch=8, lr=5e-3),
                dict(spec=LongDNASpec(), n_train=4, n_val=4, steps=2, batch=2, lr=1e-3)]
    return [dict(spec=LongDNASpec(512, 64, 64, sites=4, decoys=2), n_train=4096, n_val=128,
                 steps=500, batch=16, lr=5e-3),
            dict(spec=LongDNASpec(4096, 512, 512, sites=8, decoys=8), n_train=1024, n_val=64,
                 steps=100, batch=8, lr=2e-3),
            dict(spec=LongDNASpec(), n_train=256, n_val=64, steps=40, batch=4, lr=1e-3)]


def model_config(arm: str, length: int) -> dict:
    if arm == "mamba":
        return {"preset": "mamba", "d_model": D_MODEL, "n_layers": LAYERS, "context_length": length}
    return {"mixer": "window_attention", "causal": False, "position": "rope", "d_model": D_MODEL,
            "n_layers": LAYERS, "n_heads": 4, "context_length": length,
            "mixer_options": {"window_attention": {"window": WINDOW}}}


def run_arm(arm: str, data: Path, out: Path, quick: bool, threads: int) -> dict:
    """The curriculum of one arm (in its own process): each stage's metrics and seconds."""
    import seqlab
    from seqlab.datasets.long_dna import PAIR_LABEL

    results, previous = [], None
    for i, stage in enumerate(stages(quick)):
        length = stage["spec"].length
        config = {
            "seed": 0, "task": "classify", "model": model_config(arm, length),
            "tokenizer": {"kind": "dna"},
            "data": {"source": "examples", "path": str(data / str(length) / "train.fasta"),
                     "val_path": str(data / str(length) / "val.fasta"),
                     "header_label": PAIR_LABEL},
            "train": {"steps": stage["steps"], "batch_size": stage["batch"], "lr": stage["lr"],
                      "warmup_steps": min(20, stage["steps"]), "eval_every": stage["steps"],
                      "num_threads": threads, "progress": False}}
        if previous is not None:
            config["init"] = {"run": str(previous), "measure_forgetting": False}
        start = time.perf_counter()
        run = out / f"{arm}-{length}"
        metrics = seqlab.fit(seqlab.RunConfig.from_dict(config), run).metrics
        seconds = time.perf_counter() - start
        results.append({"length": length, "steps": stage["steps"], "batch": stage["batch"],
                        "seconds": seconds, "on_off": on_off_accuracy(run, data / str(length)),
                        **metrics})
        previous = run
    return {"stages": results, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def on_off_accuracy(run: Path, data: Path) -> float:
    """How often "is the gene on" read off the predicted pair of classes is right."""
    import seqlab
    from seqlab.datasets.long_dna import HEADER_LABEL

    predictions = run / "val-predictions.jsonl"
    seqlab.load(run).predict_file(data / "val.fasta", predictions)
    truth = [re.search(HEADER_LABEL, line).group(1) for line in
             (data / "val.fasta").read_text().splitlines() if line.startswith(">")]
    said = []
    for line in predictions.read_text().splitlines():
        enhancer, promoter = re.fullmatch(r"enhancer=(\w+) promoter=(\w+)",
                                          json.loads(line)["label"]).groups()
        said.append("active" if enhancer == promoter else "inactive")
    if len(said) != len(truth):
        raise SystemExit(f"{predictions}: {len(said)} predictions for {len(truth)} records")
    return sum(a == b for a, b in zip(said, truth)) / len(truth)


def step_memory(arm: str, threads: int) -> dict:
    """Peak RSS added by one forward + backward at 32,768 bases, batch 1 (own process)."""
    import torch

    import seqlab
    from seqlab.models.build import build_backbone

    torch.set_num_threads(threads)
    model = build_backbone(seqlab.RunConfig.from_dict(
        {"task": "classify", "model": {**model_config(arm, 32768), "vocab_size": 16}}).model)
    ids = torch.randint(0, 16, (1, 32768))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    hidden = model(ids).hidden  # (1, T, D)
    hidden.float().square().mean().backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step_mb": peak - before, "step_seconds": seconds,
            "params": sum(p.numel() for p in model.parameters())}


def child(what: str, *extra: str) -> dict:
    """Run this script as ``--child WHAT ...`` and read the JSON it prints last."""
    out = subprocess.run([sys.executable, __file__, "--child", what, *extra],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"bench_long_dna --child {what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        what, *rest = sys.argv[2:]
        if what == "memory":
            print(json.dumps(step_memory(rest[0], int(rest[1]))))
        else:
            print(json.dumps(run_arm(what, Path(rest[0]), Path(rest[1]), rest[2] == "1",
                                     int(rest[3]))))
        return

    from seqlab.datasets.long_dna import write_long_dna

    args = parse_args(__doc__.splitlines()[0], rounds=1, iters=1, warmup=0)
    threads = args.threads or 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for stage in stages(args.quick):
            write_long_dna(tmp / "data" / str(stage["spec"].length), n_train=stage["n_train"],
                           n_val=stage["n_val"], spec=stage["spec"])
        memory = {arm: child("memory", arm, str(threads)) for arm in ARMS}
        arms = {arm: child(arm, str(tmp / "data"), str(tmp / "runs"), "1" if args.quick else "0",
                           str(threads)) for arm in ARMS}

    rows = []
    for arm in ARMS:
        for s in arms[arm]["stages"]:
            rows.append([arm, f"{s['length']:,}", f"{s['steps']} x {s['batch']}",
                         f"{s['accuracy']:.3f}", f"{s['on_off']:.3f}", f"{s['val_loss']:.3f}",
                         f"{s['seconds']:.0f}"])
    final = {arm: arms[arm]["stages"][-1]["on_off"] for arm in ARMS}
    solved = [arm for arm in ARMS if final[arm] >= 0.9]
    verdict = (f"is the gene on, at 32,768 bases: "
               f"{', '.join(f'{a} {final[a]:.3f}' for a in ARMS)} accuracy (chance 0.5, and "
               f"0.5 for a model that reads one end); solved (>= 0.9): "
               f"{', '.join(solved) or 'neither'}.")
    memory_table = markdown_table(
        ["model", "parameters", "one step at 32,768 bases, batch 1: added peak RSS",
         "its seconds", "whole curriculum process: peak RSS"],
        [[arm, f"{memory[arm]['params']:,}", f"{memory[arm]['step_mb']:.0f} MB",
          f"{memory[arm]['step_seconds']:.1f}", f"{arms[arm]['peak_rss_mb']:.0f} MB"]
         for arm in ARMS])
    report("bench_long_dna", "Long DNA: two signals 28,672+ bases apart, at 32,768 bases", args, [
        f"Records of `seqlab.datasets.long_dna`: an enhancer class in the first 2,048 bases "
        f"and a promoter class in the last 2,048; the gene is on when they match. Both models "
        f"learn the pair (4 classes) and on/off is read off it. Both: d_model "
        f"{D_MODEL}, {LAYERS} layers, DNA tokenizer (one token per base), fp32, "
        f"{threads} threads; a curriculum of lengths, each stage fine-tuned from the last; "
        f"accuracy on held-out records of each stage's length.",
        "Verdict: " + verdict,
        markdown_table(["model", "record length", "steps x batch", "pair accuracy (4 classes)",
                        "gene on/off accuracy", "val loss", "seconds"], rows),
        memory_table])


if __name__ == "__main__":
    main()
