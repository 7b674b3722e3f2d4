"""Write this example's data: English words and the phonemes espeak-ng gives them
(grapheme-to-phoneme), split by word into train/val/test TSV files
(``seqlab.datasets.seq2seq_pairs.write_g2p``; needs Debian's espeak-ng and wamerican
packages, which ``setup.sh`` installs).

Usage (from the repository root): ``python examples/seq2seq/prepare.py [--small]``
(``--small``: 600 words instead of 20,000).
"""

import argparse
from pathlib import Path

from seqlab.datasets.seq2seq_pairs import write_g2p

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "data")
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    counts = write_g2p(args.out, n_words=600 if args.small else 20000, seed=0)
    print(f"wrote {', '.join(f'{n} {split}' for split, n in counts.items())} pairs to {args.out}")


if __name__ == "__main__":
    main()
