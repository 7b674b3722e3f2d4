"""Write both classification data sets of this example:

* ``data/packages/``: 512-byte snippets of standard-library source labelled with the
  package they come from (split by file: no file on both sides);
* ``data/dynamics/``: multivariate time series from six families of noisy dynamical
  systems, as ragged ``.npz`` arrays.

Usage (from the repository root): ``python examples/classify/prepare.py [--small]``.
"""

import argparse
from pathlib import Path

from seqlab.datasets import write_dynamics, write_package_snippets

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a few hundred examples (for tests)")
    parser.add_argument("--out", default=str(HERE / "data"))
    args = parser.parse_args()
    cap = 24 if args.small else 160
    snippets = write_package_snippets(Path(args.out) / "packages", per_package_cap=cap,
                                      min_snippets=min(cap, 32))
    n = (120, 60) if args.small else (1200, 300)
    dynamics = write_dynamics(Path(args.out) / "dynamics", n_train=n[0], n_val=n[1])
    print(f"packages: {len(snippets['counts']['train'])} classes, {snippets['records']['train']} "
          f"training and {snippets['records']['val']} validation snippets")
    print(f"dynamics: {len(dynamics['classes'])} classes, {dynamics['train']['sequences']} training "
          f"and {dynamics['val']['sequences']} validation sequences")


if __name__ == "__main__":
    main()
