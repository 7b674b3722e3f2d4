"""Write this example's data: one voice to learn. espeak-ng's en-us+m3 speaks numbers,
dates and short sentences at one speed and pitch, clean, split by text into
train/val/test manifests (``seqlab.datasets.speech_corpus.write_voice_corpus``; needs
Debian's espeak-ng, which ``setup.sh`` installs).

Usage (from the repository root): ``python examples/tts/prepare.py [--small]``
(``--small``: 60 utterances instead of 1,800).
"""

import argparse
from pathlib import Path

from seqlab.datasets.speech_corpus import write_voice_corpus

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "data")
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    counts = write_voice_corpus(args.out, n_utterances=60 if args.small else 1800,
                                test=8 if args.small else 100, val=8 if args.small else 60)
    print(f"wrote {', '.join(f'{n} {split}' for split, n in counts.items())} utterances "
          f"to {args.out}")


if __name__ == "__main__":
    main()
