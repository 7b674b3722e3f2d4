"""Write this example's data: synthetic proteins whose helices, strands and coils follow
the residue patterns real ones do (see ``seqlab.datasets.proteins``), as FASTA with a
companion FASTA of per-residue labels (H, E, C).

Usage (from the repository root): ``python examples/protein/prepare.py [--small]``.
"""

import argparse
from pathlib import Path

from seqlab.datasets.proteins import write_secondary_structure

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a few dozen proteins (for tests)")
    parser.add_argument("--out", default=str(HERE / "data"))
    args = parser.parse_args()
    n = (60, 20) if args.small else (2000, 400)
    counts = write_secondary_structure(args.out, n_train=n[0], n_val=n[1])
    print(f"proteins: {counts['train']} training and {counts['val']} validation, in {args.out}")


if __name__ == "__main__":
    main()
