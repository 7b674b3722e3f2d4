"""Write this example's data: monthly sea-surface temperatures of the El Niño region,
1950-2010 (statsmodels' ``elnino`` data set, which ships inside the statsmodels package),
as a table of ``ds`` (the first day of each month) and ``y`` (degrees Celsius).

Usage (from the repository root): ``python examples/forecast/prepare.py [--small]``
(``--small``: the last 20 years only).
"""

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "data")
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    try:
        import statsmodels.api as sm
    except ImportError:
        raise SystemExit("this example's data comes with statsmodels: pip install statsmodels")
    import pandas as pd

    wide = sm.datasets.elnino.load_pandas().data
    long = wide.melt(id_vars="YEAR", value_vars=MONTHS, var_name="month", value_name="y")
    long["ds"] = pd.to_datetime(long["YEAR"].astype(int).astype(str) + "-"
                                + (long["month"].map(MONTHS.index) + 1).astype(str) + "-01")
    table = long.sort_values("ds")[["ds", "y"]]
    if args.small:
        table = table.tail(240)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "elnino.csv", index=False)
    print(f"wrote {len(table)} months to {args.out / 'elnino.csv'}")


if __name__ == "__main__":
    main()
