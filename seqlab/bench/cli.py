"""``seqlab bench``: the long-range task suite and the scaling benchmark."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_MIXERS = "lstm,gru,attention,window_attention,linear_attention,s4d,mamba"


def _csv(kind):
    def parse(text: str):
        try:
            return [kind(item) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None

    return parse


def add_parser(sub, add_common) -> None:
    bench = sub.add_parser("bench", help="benchmark suites: long-range tasks, scaling")
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="SUITE")

    p = kinds.add_parser("tasks", help="train every mixer on the synthetic long-range tasks")
    p.add_argument("--mixers", type=_csv(str), default=_csv(str)(DEFAULT_MIXERS))
    p.add_argument("--lengths", type=_csv(int), default=[64, 256, 1024])
    p.add_argument("--tasks", type=_csv(str), default=None, help="default: all synthetic tasks")
    p.add_argument("--budget", default="small", help="tiny (seconds, for tests), small (200 steps a run), medium")
    p.add_argument("--steps", type=int, default=None, help="override the budget's steps")
    p.add_argument("--tokens-per-step", type=int, default=None,
                   help="override the budget's tokens per step (batch = tokens // length)")
    p.add_argument("--lr", type=_csv(float), default=None,
                   help="the learning rate of every run, or several to sweep (e.g. 3e-3,3e-4): "
                        "each cell then shows its best run")
    p.add_argument("--out", default="runs/bench-tasks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_common(p)

    p = kinds.add_parser("scaling", help="step time, token time and memory against length")
    p.add_argument("--mixers", type=_csv(str), default=_csv(str)(DEFAULT_MIXERS))
    p.add_argument("--lengths", type=_csv(int),
                   default=[256 * 2 ** i for i in range(8)])  # 256 .. 32768
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--decode-tokens", type=int, default=16)
    p.add_argument("--timeout", type=float, default=None, help="seconds per measurement")
    p.add_argument("--out", default="runs/bench-scaling")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_common(p)


def cmd_bench(args) -> int:
    def progress(line: str) -> None:
        print(line, flush=True)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.bench == "tasks":
        from seqlab.bench.tasks import run_task_bench

        overrides = {key: value for key, value in (("steps", args.steps),
                     ("tokens_per_step", args.tokens_per_step)) if value is not None}
        run_task_bench(args.mixers, args.lengths, args.tasks, budget=args.budget,
                       budget_overrides=overrides, lrs=args.lr, out_dir=out,
                       seed=args.seed, device=args.device, progress=progress)
        print(f"results: {out / 'results.md'}, {out / 'results.csv'}, "
              f"{out / 'accuracy_vs_length.png'}")
    else:
        from seqlab.bench.scaling import run_scaling

        run_scaling(args.mixers, args.lengths, d_model=args.d_model, n_layers=args.n_layers,
                    n_heads=args.n_heads, batch_size=args.batch_size, device=args.device,
                    decode_tokens=args.decode_tokens, out_dir=out, timeout_s=args.timeout,
                    progress=progress)
        print(f"results: {out / 'scaling.md'}, {out / 'scaling.csv'}, {out / 'scaling.png'}")
    return 0
