"""`seqlab quickstart` end to end: wall time and final validation bits per byte.

Runs the real command in a subprocess, exactly as the README's first command does
after set-up, into a temporary run directory.

    python benchmarks/bench_quickstart.py [--quick]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
from _common import markdown_table, parse_args, report


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=1, iters=1, warmup=0)
    extra = ["--set", "train.steps=20", "--set", "data.max_bytes=300000"] if args.quick else []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "seqlab", "quickstart", "--out",
                               str(Path(tmp) / "qs"), "-q", *extra],
                              capture_output=True, text=True, cwd=_common.ROOT)
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"quickstart failed:\n{proc.stderr[-2000:]}")
    metrics = dict(re.findall(r"^(val_loss|perplexity|bits_per_byte): ([0-9.]+)$", proc.stdout, re.M))
    sample = proc.stdout.split("sample:", 1)[1].split("\nnext:", 1)[0].strip()
    table = markdown_table(["wall time (s)", "val_loss", "perplexity", "bits per byte"],
                           [[f"{wall:.0f}", metrics["val_loss"], metrics["perplexity"],
                             metrics["bits_per_byte"]]])
    report("bench_quickstart", "seqlab quickstart (the README's main job)", args,
           [table, "Sample (temperature 0.8, top-k 40, seed 0, prompt 'def '):\n\n```\n"
            + sample + "\n```"])


if __name__ == "__main__":
    main()
