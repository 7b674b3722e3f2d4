"""Write this example's data: a speech corpus made on this machine. espeak-ng speaks
numbers, dates and short sentences in 24 voices (7 accents, several variants, speeds
and pitches), white noise is added at 20, 10 and 5 dB SNR, and the split is by voice,
so validation and test voices are never heard in training
(``seqlab.datasets.speech_corpus.write_speech_corpus``; needs Debian's espeak-ng, which
``setup.sh`` installs).

Usage (from the repository root): ``python examples/ctc/prepare.py [--small]``
(``--small``: 80 utterances instead of 3,000).
"""

import argparse
from pathlib import Path

from seqlab.datasets.speech_corpus import write_speech_corpus

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "data")
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    counts = write_speech_corpus(args.out, n_utterances=80 if args.small else 3000,
                                 n_voices=8 if args.small else 24,
                                 val_voices=2 if args.small else 3,
                                 test_voices=2 if args.small else 3, seed=0)
    print(f"wrote {', '.join(f'{n} {split}' for split, n in counts.items())} utterances "
          f"to {args.out}")


if __name__ == "__main__":
    main()
