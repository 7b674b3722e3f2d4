"""Write both regression data sets of this example:

* ``data/code/``: 256-byte chunks of standard-library source with two targets each, the
  share of the chunk's bytes inside comments and inside string literals (from
  ``tokenize``);
* ``data/oscillators/``: damped two-channel oscillations; the targets are the frequency
  (cycles per step) and the damping rate that made each one.

Usage (from the repository root): ``python examples/regress/prepare.py [--small]``.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from seqlab.datasets import write_token_tags

HERE = Path(__file__).resolve().parent


def code(out: Path, max_files: int) -> int:
    tags = out / "tags"
    write_token_tags(tags, max_files=max_files)
    n = 0
    for split in ("train", "val"):
        with open(out / f"{split}.jsonl", "w") as f:
            for line in open(tags / f"{split}.jsonl"):
                r = json.loads(line)
                t = r["tags"]
                f.write(json.dumps({"text": r["text"], "comment": t.count("C") / len(t),
                                    "string": t.count("S") / len(t)}) + "\n")
                n += 1
    return n


def oscillators(out: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", n // 4)):
        lengths = rng.integers(48, 160, count)
        freq = rng.uniform(0.02, 0.2, count)
        damping = rng.uniform(0.0, 0.03, count)
        rows = []
        for t, f, d in zip(lengths, freq, damping):
            time = np.arange(t)
            phase = rng.uniform(0, 2 * np.pi)
            wave = np.exp(-d * time)[:, None] * np.stack([np.sin(2 * np.pi * f * time + phase),
                                                 np.cos(2 * np.pi * f * time + phase)], 1)
            rows.append(wave + 0.05 * rng.normal(size=wave.shape))
        np.savez(out / f"{split}.npz", features=np.concatenate(rows).astype(np.float32),
                 lengths=lengths, labels=np.stack([freq, damping], 1).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a few hundred examples (for tests)")
    parser.add_argument("--out", default=str(HERE / "data"))
    args = parser.parse_args()
    out = Path(args.out)
    (out / "oscillators").mkdir(parents=True, exist_ok=True)
    n = code(out / "code", 20 if args.small else 200)
    oscillators(out / "oscillators", 200 if args.small else 2000)
    print(f"wrote {n} code chunks and the oscillators to {out}")


if __name__ == "__main__":
    main()
