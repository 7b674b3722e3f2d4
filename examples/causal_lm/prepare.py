"""Write the text this example trains on: source files of a few standard-library
packages, copied to ``examples/causal_lm/data/`` (the data is on every machine with
Python; nothing is downloaded).

Usage (from the repository root): ``python examples/causal_lm/prepare.py [--max-files N]``.
"""

import argparse
import shutil
from pathlib import Path

from seqlab.datasets import library_files, stdlib_dir

HERE = Path(__file__).resolve().parent
PACKAGES = ("json", "email", "http", "logging", "unittest", "asyncio", "importlib", "xml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-files", type=int, default=None, help="copy at most this many files")
    parser.add_argument("--out", default=str(HERE / "data"))
    args = parser.parse_args()
    root, out = stdlib_dir(), Path(args.out)
    files = [f for f in library_files() if f.relative_to(root).parts[0] in PACKAGES]
    files = files[: args.max_files] if args.max_files else files
    for val, target in ((False, out / "train"), (True, out / "val")):
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
    for i, path in enumerate(files):
        split = "val" if i % 10 == 9 else "train"  # one file in ten is held out
        name = "_".join(path.relative_to(root).parts)
        shutil.copyfile(path, out / split / name)
    print(f"wrote {len(files)} files to {out} (train/ and val/)")


if __name__ == "__main__":
    main()
