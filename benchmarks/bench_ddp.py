"""Data-parallel training on CPU: tokens/s of 2 ranks (torchrun, DDP on gloo) against 1.

Two trainers run the same causal LM (attention, d_model 256, 4 layers, context 256,
global batch 16, byte tokens) for the same steps, each on 1 process and on 2 ranks with
one thread per process:

- **seqlab**: ``seqlab train`` (``torchrun -m seqlab train`` for 2 ranks); tokens/s from
  its ``metrics.jsonl`` (the global batch's tokens over the step time), first log
  window dropped as warm-up.
- **torch DDP loop**: the peer, a hand-written nanoGPT-style loop on the same seqlab
  model: random windows of the same corpus, AdamW, clipping, DDP with ``no_sync`` for
  accumulation. It shows what the Trainer's own work (sharding, the sum/count reduction,
  logging) costs at 2 ranks.

Scaling = 2-rank tokens/s / 1-rank tokens/s (2.00 would be perfect). On a machine with
2 cores the 2-rank runs use both; other load on the machine lowers them.

    python benchmarks/bench_ddp.py [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from _common import ROOT, markdown_table, parse_args, report

MODEL = {"mixer": "attention", "d_model": 256, "n_layers": 4, "n_heads": 4,
         "context_length": 256, "position": "rope", "ffn": "swiglu", "dropout": 0.0}
BATCH = 16

PEER = textwrap.dedent("""
    import json, os, sys, time, torch, numpy as np
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from seqlab.config import RunConfig
    from seqlab.tasks import OBJECTIVES
    corpus, steps, model = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    batch = int(sys.argv[4])
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    cfg = RunConfig.from_dict({"model": {**model, "vocab_size": 259, "input": "tokens"}})
    torch.manual_seed(0)
    net = OBJECTIVES.get("causal_lm").cls(cfg).build_model()  # the same model as seqlab's
    step_fn = DistributedDataParallel(net) if world > 1 else net
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4, weight_decay=0.1)
    data = np.frombuffer(open(corpus, "rb").read(), dtype=np.uint8).astype(np.int64)
    T, local = model["context_length"], batch // world
    rng = np.random.default_rng(rank)
    times = []
    for step in range(steps):
        start = time.perf_counter()
        offsets = rng.integers(0, len(data) - T - 1, local)
        x = torch.from_numpy(np.stack([data[o:o + T] for o in offsets]))
        y = torch.from_numpy(np.stack([data[o + 1:o + T + 1] for o in offsets]))
        logits = step_fn(x).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    if rank == 0:
        steady = sorted(times[2:])[len(times[2:]) // 2]
        print(json.dumps({"tokens_per_s": batch * T / steady}))
    if world > 1:
        dist.destroy_process_group()
""")


def launch(nprocs: int, target: list[str]) -> list[str]:
    if nprocs == 1:
        return [sys.executable, *target]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(nprocs), *target]


def seqlab_case(tmp: Path, corpus: Path, nprocs: int, steps: int, tag: str) -> float:
    config = tmp / f"seqlab-{tag}.yaml"
    config.write_text(json.dumps({
        "seed": 0, "tokenizer": {"kind": "byte"}, "model": MODEL, "data": {"path": str(corpus)},
        "train": {"steps": steps, "batch_size": BATCH, "log_every": 2, "eval_every": 10**6,
                  "save_every": 10**6, "progress": False, "num_threads": 1}}))
    run = tmp / f"run-{tag}"
    done = subprocess.run(launch(nprocs, ["-m", "seqlab", "train", str(config), "--out", str(run),
                                          "-q"]), capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        raise SystemExit(f"seqlab {nprocs} rank(s) failed:\n{done.stderr[-3000:]}")
    rates = [r["tokens_per_s"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if "tokens_per_s" in r]
    return statistics.median(rates[1:])


def peer_case(tmp: Path, corpus: Path, nprocs: int, steps: int) -> float:
    script = tmp / "peer.py"
    script.write_text(PEER)
    done = subprocess.run(launch(nprocs, [str(script), str(corpus), str(steps), json.dumps(MODEL),
                                          str(BATCH)]),
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    if done.returncode:
        raise SystemExit(f"torch DDP loop, {nprocs} rank(s), failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["tokens_per_s"]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=2, iters=1, warmup=0)
    steps = 10 if args.quick else 30
    rates: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.txt"
        corpus.write_text((ROOT / "README.md").read_text(encoding="utf-8") * 20, encoding="utf-8")
        for r in range(args.rounds):
            for nprocs in ((1, 2) if r % 2 == 0 else (2, 1)):
                rates.setdefault(("seqlab", nprocs), []).append(
                    seqlab_case(tmp, corpus, nprocs, steps, f"{nprocs}-{r}"))
                rates.setdefault(("torch DDP loop", nprocs), []).append(
                    peer_case(tmp, corpus, nprocs, steps))
    rows = []
    for trainer in ("seqlab", "torch DDP loop"):
        one = statistics.median(rates[(trainer, 1)])
        two = statistics.median(rates[(trainer, 2)])
        rows.append([trainer, f"{one:,.0f}", f"{two:,.0f}", f"{two / one:.2f}x"])
    seqlab_two = statistics.median(rates[("seqlab", 2)])
    peer_two = statistics.median(rates[("torch DDP loop", 2)])
    table = markdown_table(["trainer", "1 rank (tokens/s)", "2 ranks (tokens/s)", "scaling"], rows)
    report("bench_ddp", "Data-parallel training on CPU: 2 ranks against 1", args,
           [f"Causal LM: attention, d_model {MODEL['d_model']}, {MODEL['n_layers']} layers, "
            f"context {MODEL['context_length']}, global batch {BATCH}, {steps} steps, 1 thread "
            "per process, gloo on loopback. Medians over rounds.\n\n" + table
            + f"\n\nseqlab / torch DDP loop at 2 ranks: **{seqlab_two / peer_two:.2f}x** tokens/s"])


if __name__ == "__main__":
    main()
