"""Write this example's data: synthetic proteins whose helices, strands, turns, bends and
coil follow the residue patterns real ones do (see ``seqlab.datasets.proteins``), as
FASTA with companion FASTAs of per-residue labels (``ss8.fasta``: the eight DSSP states;
``ss.fasta``: their three-state reduction, H, E, C); and, in ``families/``, proteins of
families descended from common ancestors, the family in each header (see
``seqlab.datasets.protein_families``).

Usage (from the repository root): ``python examples/protein/prepare.py [--small]``.
"""

import argparse
from pathlib import Path

from seqlab.datasets.protein_families import write_protein_families
from seqlab.datasets.proteins import write_secondary_structure

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a few dozen proteins (for tests)")
    parser.add_argument("--out", default=str(HERE / "data"))
    args = parser.parse_args()
    n = (60, 20) if args.small else (2000, 400)
    counts = write_secondary_structure(args.out, n_train=n[0], n_val=n[1], states=8)
    print(f"proteins: {counts['train']} training and {counts['val']} validation, in {args.out}")
    n_families, n = (6, (60, 24)) if args.small else (12, (2400, 480))
    families = Path(args.out) / "families"
    counts = write_protein_families(families, n_families=n_families, n_train=n[0], n_val=n[1])
    print(f"families: {n_families} families, {counts['train']} training and {counts['val']} "
          f"validation proteins, in {families}")


if __name__ == "__main__":
    main()
