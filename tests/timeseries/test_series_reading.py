"""Reading tables of series: roles of columns, frequency, the checks and the missing-value
policies, each bad input named (series, column, first timestamps)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seqlab.data.series import SeriesColumns, calendar_features, read_series
from seqlab.errors import ConfigError, DataError


def frame(n: int = 10, ids=("a", "b"), freq: str = "D") -> pd.DataFrame:
    times = pd.date_range("2021-03-01", periods=n, freq=freq)
    parts = []
    for j, sid in enumerate(ids):
        parts.append(pd.DataFrame({"ds": times, "id": sid, "y": np.arange(n) + 100.0 * j,
                                   "price": np.linspace(1, 2, n), "promo": np.arange(n) % 2,
                                   "region": "north" if j == 0 else "south",
                                   "size": float(j + 1)}))
    return pd.concat(parts, ignore_index=True)


def test_roles_statics_calendar_and_frequency_are_read():
    cols = SeriesColumns(id="id", past_covariates=["price"], future_covariates=["promo"],
                         static_covariates=["size", "region"], calendar=["dayofweek", "month"])
    data, categories = read_series(frame(), cols)
    assert data.ids == ["a", "b"] and data.freq.freqstr == "D"
    assert data.offsets.tolist() == [0, 10, 20]
    assert data.target[:, 0].tolist() == [*range(10), *(100.0 + i for i in range(10))]
    assert data.past.shape == (20, 1) and data.future.shape == (20, 1)
    assert categories == {"region": ["north", "south"]}
    np.testing.assert_array_equal(data.static, [[1, 1, 0], [2, 0, 1]])  # size, one-hot region
    assert data.calendar.shape == (20, 4)
    # 2021-03-01 is a Monday: day-of-week phase 0 -> (sin, cos) = (0, 1)
    np.testing.assert_allclose(data.calendar[0, :2], [0.0, 1.0], atol=1e-6)
    np.testing.assert_array_equal(data.future_times(0, 2),
                                  pd.date_range("2021-03-11", periods=2).to_numpy())


def test_calendar_phases_wrap_december_next_to_january():
    times = pd.to_datetime(["2021-12-15", "2022-01-15", "2022-06-15"]).to_numpy()
    month = calendar_features(times, ["month"])
    near = np.linalg.norm(month[0] - month[1])
    far = np.linalg.norm(month[0] - month[2])
    assert near < 0.6 < far


def test_integer_time_columns_are_steps():
    df = pd.DataFrame({"t": [0, 2, 4, 6], "y": [1.0, 2, 3, 4]})
    data, _ = read_series(df, SeriesColumns(time="t"))
    assert data.freq == 2 and data.future_times(0, 2).tolist() == [8, 10]
    with pytest.raises(ConfigError, match="date/time column"):
        read_series(df, SeriesColumns(time="t", calendar=["month"]))


def test_csv_and_parquet_files_read_as_the_frame(tmp_path):
    df = frame()
    df.to_csv(tmp_path / "s.csv", index=False)
    df.to_parquet(tmp_path / "s.parquet", index=False)
    cols = SeriesColumns(id="id", future_covariates=["promo"])
    a, _ = read_series(df, cols)
    for path in ("s.csv", "s.parquet"):
        b, _ = read_series(tmp_path / path, cols)
        np.testing.assert_array_equal(a.target, b.target)
        np.testing.assert_array_equal(a.times, b.times)
    with pytest.raises(DataError, match="no such file"):
        read_series(tmp_path / "absent.csv", cols)
    (tmp_path / "s.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown table format"):
        read_series(tmp_path / "s.xlsx", cols)


@pytest.mark.parametrize("change, match", [
    (lambda d: d.drop(columns=["price"]), r"no column\(s\) 'price'"),
    (lambda d: d.assign(y=d["y"].astype(str) + "x"), "'y' must hold numbers"),
    (lambda d: d.assign(y=d["y"].where(d.index != 13)), r"series 'b', column 'y': 1 NaN .*2021-03-04"),
    (lambda d: d.assign(price=d["price"].where(d.index != 2, np.inf)),
     r"series 'a', column 'price'.*infinite.*2021-03-03"),
    (lambda d: d.drop(index=[4, 5]), r"series 'a' has 2 gap\(s\) in its D time grid, first at 2021-03-05"),
    (lambda d: pd.concat([d, d.iloc[[3]]]), r"series 'a': duplicate timestamp\(s\) 2021-03-04"),
    (lambda d: d.iloc[[1, 0, *range(2, 20)]], r"series 'a': timestamps are not sorted \(2021-03-01 comes after 2021-03-02\)"),
    (lambda d: d.assign(ds=d["ds"].where(d.index != 6, pd.Timestamp("2021-03-07 06:00"))),
     r"series 'a': the time step changes at 2021-03-07 06:00:00"),
    (lambda d: d.assign(size=np.arange(20.0)), "static covariate 'size' varies within series a"),
])
def test_bad_tables_are_named(change, match):
    cols = SeriesColumns(id="id", past_covariates=["price"], static_covariates=["size"])
    with pytest.raises(DataError, match=match):
        read_series(change(frame()), cols)


def test_misconfigured_columns_are_config_errors():
    with pytest.raises(ConfigError, match="both target and past_covariates"):
        SeriesColumns(target="y", past_covariates=["y"])
    with pytest.raises(ConfigError, match="data.missing must be one of"):
        SeriesColumns(missing="zero")
    with pytest.raises(ConfigError, match="unknown feature.*fortnight"):
        SeriesColumns(calendar=["fortnight"])


def gappy() -> pd.DataFrame:
    """Series a: day 3 missing (a gap) and day 6's y NaN; series b is whole."""
    df = frame()
    df.loc[5, "y"] = np.nan
    return df.drop(index=[2])


def test_interpolate_fills_in_time():
    data, _ = read_series(gappy(), SeriesColumns(id="id", missing="interpolate"))
    a = data.target[data.rows(0), 0]
    np.testing.assert_allclose(a, np.arange(10.0))  # y was linear in time
    assert len(data.times[data.rows(0)]) == 10


def test_ffill_carries_the_last_value():
    data, _ = read_series(gappy(), SeriesColumns(id="id", missing="ffill"))
    a = data.target[data.rows(0), 0]
    np.testing.assert_allclose(a, [0, 1, 1, 3, 4, 4, 6, 7, 8, 9])


def test_drop_keeps_only_whole_rows():
    data, _ = read_series(gappy(), SeriesColumns(id="id", missing="drop"))
    np.testing.assert_allclose(data.target[data.rows(0), 0], [0, 1, 3, 4, 6, 7, 8, 9])


def test_mask_keeps_missing_targets_missing_and_fills_covariates():
    df = gappy()
    df.loc[7, "price"] = np.nan
    data, _ = read_series(df, SeriesColumns(id="id", missing="mask", past_covariates=["price"]))
    a = data.target[data.rows(0), 0]
    assert np.isnan(a[[2, 5]]).all() and np.isfinite(np.delete(a, [2, 5])).all()
    price = data.past[data.rows(0), 0]
    assert np.isfinite(price).all() and price[7] == price[6]  # last value seen


def test_a_policy_sorts_unsorted_rows():
    df = frame().iloc[::-1]
    data, _ = read_series(df, SeriesColumns(id="id", missing="ffill"))
    assert (np.diff(data.times[data.rows(0)]) > np.timedelta64(0)).all()


def test_trained_categories_and_frequency_are_reused():
    cols = SeriesColumns(id="id", static_covariates=["region"])
    _, categories = read_series(frame(), cols)
    new = frame(ids=("c",)).assign(region="east")  # a region training never saw
    data, _ = read_series(new, cols, categories=categories, freq=pd.tseries.frequencies.to_offset("D"))
    np.testing.assert_array_equal(data.static, [[0, 0]])
    with pytest.raises(DataError, match="time step changes"):
        read_series(frame(freq="h"), cols, categories=categories,
                    freq=pd.tseries.frequencies.to_offset("D"))
