import math

import numpy as np
import pandas as pd
import pytest

from seqlab.datasets.synthetic_series import ANOMALY_KINDS, make_series, split_by_time
from seqlab.errors import ConfigError

SMALL = {"n_series": 4, "min_length": 60, "max_length": 150}


@pytest.fixture(scope="module")
def big():
    """Enough series and anomalies for every kind to occur several times."""
    return make_series(40, min_length=200, max_length=500, n_targets=2, anomaly_rate=0.03, seed=1)


def runs(g):
    """(kind, start, length) of each labelled run of one series, positions within the series."""
    kind = g["anomaly_kind"].to_numpy()
    edges = np.flatnonzero(kind[1:] != kind[:-1]) + 1
    starts, ends = np.r_[0, edges], np.r_[edges, len(kind)]
    return [(kind[a], a, b - a) for a, b in zip(starts, ends) if kind[a]]


def test_same_seed_same_frame_other_seed_differs():
    a, b = make_series(**SMALL, n_targets=2, seed=5), make_series(**SMALL, n_targets=2, seed=5)
    pd.testing.assert_frame_equal(a, b)
    c = make_series(**SMALL, n_targets=2, seed=6)
    assert len(a) != len(c) or not np.allclose(a["y"], c["y"])


def test_lengths_within_bounds_and_differ():
    df = make_series(12, min_length=80, max_length=200, seed=2)
    sizes = df.groupby("id").size()
    assert list(sizes.index) == [f"s{i:03d}" for i in range(12)]
    assert sizes.between(80, 200).all() and sizes.nunique() > 1


@pytest.mark.parametrize("freq", ["h", "D"])
def test_timestamps_regular_and_sorted(freq):
    df = make_series(**SMALL, freq=freq, seed=3)
    step = pd.tseries.frequencies.to_offset(freq)
    for _, g in df.groupby("id"):
        assert (g["ds"].diff().iloc[1:] == pd.Timedelta(step)).all()
    assert df.groupby("id")["ds"].first().nunique() > 1  # each series starts on its own date
    order = df.sort_values(["id", "ds"], kind="stable")
    assert (order.index == df.index).all()


def test_columns_and_correlated_extra_target(big):
    assert list(make_series(**SMALL).columns) == [
        "id", "ds", "y", "price", "promo", "anomaly", "anomaly_kind"]
    assert list(make_series(**SMALL, n_targets=3).columns)[2:5] == ["y", "y2", "y3"]
    corr = np.array([np.corrcoef(g["y"], g["y2"])[0, 1] for _, g in big.groupby("id")])
    assert np.median(corr) > 0.7 and (corr > 0.3).all()
    assert not np.allclose(big["y"], big["y2"])
    assert set(big["promo"].unique()) == {0, 1} and np.isfinite(big[["y", "y2"]]).all().all()


def test_labelled_fraction_near_rate_and_every_kind_occurs(big):
    assert abs(big["anomaly"].mean() - 0.03) < 0.003
    assert set(big["anomaly_kind"]) == {"", *ANOMALY_KINDS}
    assert (big["anomaly"] == (big["anomaly_kind"] != "")).all()
    assert make_series(**SMALL, anomaly_rate=0.0)["anomaly"].sum() == 0


def test_no_anomaly_in_first_fifth(big):
    for _, g in big.groupby("id"):
        assert g["anomaly"].iloc[:math.ceil(0.2 * len(g))].sum() == 0


def test_segment_lengths(big):
    found = [r for _, g in big.groupby("id") for r in runs(g)]
    for kind, _, length in found:
        assert length == 1 if kind == "spike" else 10 <= length <= 50


def test_spikes_stand_out_from_local_noise(big):
    ratios = []
    for _, g in big.groupby("id"):
        resid = (g["y"] - g["y"].rolling(5, center=True, min_periods=1).median()).abs()
        resid /= resid[g["anomaly"] == 0].mean()
        ratios += list(resid[g["anomaly_kind"] == "spike"])
    assert len(ratios) >= 3 and np.mean(ratios) > 5  # normal rows: 1 on average


def test_flatline_repeats_last_normal_value(big):
    n_checked = 0
    for _, g in big.groupby("id"):
        for kind, start, length in runs(g):
            if kind == "flatline":
                for col in ("y", "y2"):
                    seg = g[col].to_numpy()[start - 1:start + length]
                    assert (seg == seg[0]).all()
                n_checked += 1
    assert n_checked >= 2


def test_price_lowers_y_and_promo_lifts_it(big):
    price_coef, promo_coef = [], []
    for _, g in big.groupby("id"):
        d = g[["y", "price", "promo"]].diff().iloc[1:].to_numpy()
        x = np.column_stack([np.ones(len(d)), d[:, 1], d[:, 2]])
        coef = np.linalg.lstsq(x, d[:, 0], rcond=None)[0]
        price_coef.append(coef[1])
        promo_coef.append(coef[2])
    assert np.mean(np.array(price_coef) < 0) > 0.9 and np.median(price_coef) < 0
    assert np.mean(np.array(promo_coef) > 0) > 0.9 and np.median(promo_coef) > 0


def test_split_by_time():
    df = make_series(**SMALL, seed=4)
    head, tail = split_by_time(df, 0.75)
    assert len(head) + len(tail) == len(df)
    for sid, g in df.groupby("id"):
        h, t = head[head["id"] == sid], tail[tail["id"] == sid]
        assert len(h) == math.floor(0.75 * len(g)) and h["ds"].max() < t["ds"].min()
    with pytest.raises(ConfigError, match="fraction"):
        split_by_time(df, 1.0)


@pytest.mark.parametrize("kwargs, name", [
    ({"n_series": 0}, "n_series"),
    ({"min_length": 49}, "min_length"),
    ({"min_length": 300, "max_length": 200}, "max_length"),
    ({"n_targets": 0}, "n_targets"),
    ({"anomaly_rate": -0.01}, "anomaly_rate"),
    ({"anomaly_rate": 0.2}, "anomaly_rate"),
    ({"freq": "not-a-freq"}, "freq"),
])
def test_bad_arguments_raise_config_error(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        make_series(**kwargs)
