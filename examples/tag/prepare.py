"""Write the tagging data set of this example: every byte of standard-library source
labelled with the token type Python's own ``tokenize`` gives it (N name, K keyword,
O operator, S string, D number, C comment, L line break, W whitespace, E other), in
256-byte chunks, split by file.

Usage (from the repository root): ``python examples/tag/prepare.py [--max-files N]``.
"""

import argparse
from pathlib import Path

from seqlab.datasets import write_token_tags

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-files", type=int, default=300)
    parser.add_argument("--out", default=str(HERE / "data"))
    args = parser.parse_args()
    summary = write_token_tags(args.out, max_files=args.max_files)
    print(f"wrote {summary['records']['train']} training and {summary['records']['val']} "
          f"validation chunks from {summary['files']['used']} files to {args.out}")


if __name__ == "__main__":
    main()
