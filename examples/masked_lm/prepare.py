"""Write the text this example trains on: the same standard-library source as the
causal LM example, into ``examples/masked_lm/data/`` (so each example stands alone).

Usage (from the repository root): ``python examples/masked_lm/prepare.py [--max-files N]``.
"""

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    if "--out" not in sys.argv:
        sys.argv += ["--out", str(HERE / "data")]
    runpy.run_path(str(HERE.parent / "causal_lm" / "prepare.py"), run_name="__main__")
