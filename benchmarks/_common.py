"""Shared helpers for the benchmark scripts: arguments, interleaved timing, tables.

Every comparison runs in one process. Each round times every case once (``iters``
calls), rotating the order so no case always runs first or last; a ratio is the
median over rounds of the per-round ratio, so both sides of a round share whatever
else the (shared, noisy) machine was doing at that moment.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def parse_args(description: str, *, rounds: int, iters: int, warmup: int,
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """``--quick`` (smoke run: 2 rounds of 1 call, 1 warm-up), knobs to override, and
    whatever options ``extra`` adds to the parser."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a short smoke run, not a measurement")
    p.add_argument("--rounds", type=int, default=None, help=f"interleaved rounds (default {rounds})")
    p.add_argument("--iters", type=int, default=None, help=f"calls per case per round (default {iters})")
    p.add_argument("--warmup", type=int, default=None, help=f"untimed calls per case (default {warmup})")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    if extra is not None:
        extra(p)
    args = p.parse_args()
    quick = dict(rounds=2, iters=1, warmup=1) if args.quick else dict(rounds=rounds, iters=iters,
                                                                      warmup=warmup)
    for name, value in quick.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def machine_info() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"torch {torch.__version__}, torch.get_num_threads()={torch.get_num_threads()}, "
            f"{os.cpu_count()} CPUs visible ({cpu}), Python {platform.python_version()}")


def interleaved(cases: dict[str, Callable[[], object]], *, rounds: int, iters: int,
                warmup: int) -> dict[str, list[float]]:
    """Seconds per call of every case, one entry per round.

    Warm-up calls run first for every case; then each round times ``iters`` calls of
    each case, the order rotated by one per round.
    """
    names = list(cases)
    for name in names:
        for _ in range(warmup):
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            for _ in range(iters):
                cases[name]()
            times[name].append((time.perf_counter() - start) / iters)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def speedup(times: dict[str, list[float]], fast: str, slow: str) -> float:
    """Median over rounds of ``time(slow) / time(fast)``: how many times faster ``fast`` is
    (equivalently, its throughput over ``slow``'s)."""
    return median([s / f for f, s in zip(times[fast], times[slow])])


def spread(xs: list[float], scale: float = 1.0, digits: int = 0) -> str:
    """``min–max`` of ``xs`` times ``scale``: how noisy the rounds were."""
    return f"{min(xs) * scale:.{digits}f}–{max(xs) * scale:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(name: str, title: str, args: argparse.Namespace, sections: list[str]) -> str:
    """Print the report and write it to ``benchmarks/results/NAME.md``."""
    head = [f"# {title}", "", machine_info(),
            f"rounds={args.rounds}, iters/round={args.iters}, warm-up={args.warmup}"
            + (" — **--quick smoke run: not a measurement**" if args.quick else "")]
    text = "\n\n".join(["\n".join(head)] + sections) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    print(f"written to {path.relative_to(ROOT)}")
    return text
