"""Write this example's data: hourly series with daily and weekly cycles, trend changes,
a price and a promotion covariate, and injected anomalies of five kinds (spikes, level
shifts, variance bursts, flatlines, broken seasonality), labelled in ``anomaly``
(``seqlab.datasets.synthetic_series``; generated, seeded).

Usage (from the repository root): ``python examples/anomaly/prepare.py [--small]``
(``--small``: 6 shorter series).
"""

import argparse
from pathlib import Path

from seqlab.datasets.synthetic_series import make_series

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "data")
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    size = dict(n_series=6, min_length=300, max_length=400) if args.small else \
        dict(n_series=20, min_length=1000, max_length=2000)
    table = make_series(**size, freq="h", anomaly_rate=0.01, seed=0)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "series.csv", index=False)
    print(f"wrote {table['id'].nunique()} series, {len(table)} rows "
          f"({int(table['anomaly'].sum())} labelled anomalous) to {args.out / 'series.csv'}")


if __name__ == "__main__":
    main()
