"""The anomaly objective: detection metrics against brute-force references, scores
against the head's distribution, streaming == whole-table scoring with constant state,
and an AnomalyDetector end to end."""

from __future__ import annotations

import itertools
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seqlab
from seqlab.config import RunConfig
from seqlab.errors import ConfigError, DataError
from seqlab.tasks import OBJECTIVES
from seqlab.tasks.anomaly_metrics import (auroc, average_precision, detection_scores,
                                          point_adjust, threshold_for)

C = 24


# -- metrics ---------------------------------------------------------------------------------
def pairwise_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def stepwise_average_precision(scores, labels):
    """Precision at each distinct threshold, weighted by the recall it adds."""
    total, out, prev_recall = sum(labels), 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        flagged = [y for s, y in zip(scores, labels) if s >= t]
        recall = sum(flagged) / total
        out += (recall - prev_recall) * sum(flagged) / len(flagged)
        prev_recall = recall
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=40))
def test_auroc_and_average_precision_equal_their_definitions(rows):
    scores = np.array([float(s) for s, _ in rows])  # few distinct values: many ties
    labels = np.array([y for _, y in rows])
    if labels.all() or not labels.any():
        assert np.isnan(auroc(scores, labels))
        return
    assert auroc(scores, labels) == pytest.approx(pairwise_auroc(scores, labels))
    assert average_precision(scores, labels) == pytest.approx(
        stepwise_average_precision(scores, labels))


def test_point_adjustment_and_detection_scores():
    labels = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0, 0])
    flags = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 1], bool)
    assert point_adjust(flags, labels).tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 0, 1]
    out = detection_scores(np.arange(10.0), flags, labels)
    assert out["precision"] == 0.5 and out["recall"] == pytest.approx(1 / 5)
    assert out["f1_point_adjusted"] == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))
    # point adjustment stays within a series: cut at row 3, the first segment's last
    # step (unflagged, in series b) is no longer found through row 2
    series = np.array(["a"] * 3 + ["b"] * 7)
    split = detection_scores(np.arange(10.0), flags, labels, series)
    assert split["f1_point_adjusted"] == pytest.approx(2 * (2 / 3) * (2 / 5) / (2 / 3 + 2 / 5))
    with pytest.raises(DataError, match="labels must be 0 or 1; found 2"):
        detection_scores(np.zeros(3), np.zeros(3, bool), np.array([0, 2, 1]))


def test_thresholds_by_quantile_and_false_alarm_rate():
    scores = np.r_[np.arange(100.0), [1000.0] * 10]
    labels = np.r_[np.zeros(100), np.ones(10)]
    assert threshold_for(scores, quantile=0.5) == pytest.approx(np.quantile(scores, 0.5))
    # the false-alarm rate counts only steps labelled normal
    t = threshold_for(scores, labels, false_alarm_rate=0.05)
    assert (scores[:100] > t).mean() == pytest.approx(0.05, abs=0.011)
    with pytest.raises(ConfigError, match="exactly one"):
        threshold_for(scores, quantile=0.9, false_alarm_rate=0.1)
    with pytest.raises(ConfigError, match=r"in \(0, 1\)"):
        threshold_for(scores, false_alarm_rate=1.5)


# -- scores and streaming -------------------------------------------------------------------
def table(n_series: int = 2, n: int = 240, spikes: bool = True, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(n_series):
        t = np.arange(n)
        y = 10 + 3 * s + 2 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.2, n)
        label = np.zeros(n, int)
        if spikes:
            at = rng.choice(np.arange(n // 2, n), 4, replace=False)
            y[at] += rng.choice([-1, 1], 4) * 4.0
            label[at] = 1
        parts.append(pd.DataFrame({"ds": pd.date_range("2022-01-01", periods=n, freq="h"),
                                   "id": f"s{s}", "y": y, "anomaly": label}))
    return pd.concat(parts, ignore_index=True)


def objective(mixer="lstm", loss="normal", chunk=512, **options):
    cfg = RunConfig.from_dict({
        "task": "anomaly", "task_options": {"loss": loss, "chunk": chunk, **options},
        "model": {"mixer": mixer, "d_model": 16, "n_layers": 2, "context_length": C + 1,
                  "position": "none"},
        "data": {"source": "series", "path": "unused.csv", "id": "id", "context": C,
                 "horizon": 1, "calendar": ["hour"]},
        "train": {"num_threads": 1}})
    return OBJECTIVES.get("anomaly").cls(cfg)


def test_scores_are_standardised_errors_of_the_heads_distribution():
    obj = objective(loss="student_t")
    torch.manual_seed(0)
    head = obj.build_head(None)
    params = torch.randn(2, 5, 2, 3)
    y = torch.randn(2, 5, 2)
    y[0, 1, 1] = float("nan")
    net = torch.nn.Module()
    net.head = head
    got = obj.scores(net, params, y)
    dist = head._distribution(params)
    sd = dist.scale * torch.sqrt(dist.df / (dist.df - 2))
    z = ((y - dist.loc) / sd).square()
    expected = torch.stack([z[b, t][torch.isfinite(z[b, t])].mean().sqrt()
                            for b in range(2) for t in range(5)]).reshape(2, 5)
    torch.testing.assert_close(got, expected)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("anomaly")
    df = table()
    detector = seqlab.AnomalyDetector(
        "lstm", context=C, id="id", label="anomaly", false_alarm_rate=0.01, calendar=["hour"],
        steps=150, lr=1e-2,
        batch_size=16, d_model=16, n_layers=1, run_dir=root / "run",
        **{"train.num_threads": 1})
    detector.fit(df)
    return detector, df, root


def test_a_detector_finds_injected_spikes_and_reloads(trained):
    detector, df, root = trained
    scored = detector.score(df)
    assert list(scored.columns) == ["id", "ds", "y", "score", "detected", "anomaly"]
    assert scored.groupby("id")["score"].apply(lambda s: np.isnan(s.iloc[0])).all()
    metrics = detector.evaluate(df)
    assert metrics["auroc"] > 0.95 and metrics["recall"] >= 0.75  # 4-sigma-plus spikes
    assert (root / "run" / "anomaly.json").exists()
    assert detector.plot(df).stat().st_size > 1000
    detector.save(root / "saved")
    again = seqlab.load(root / "saved")
    assert again.threshold() == pytest.approx(detector.threshold)
    pd.testing.assert_frame_equal(again.score(df), scored)


def test_streaming_row_by_row_equals_one_call_and_keeps_constant_state(trained):
    detector, df, _ = trained
    pipeline = detector.pipeline
    first = df.groupby("id").head(C + 5)  # a warm-up sets each series' scale
    rest = df.drop(first.index)
    rest = rest[rest["ds"].isin(sorted(rest["ds"].unique())[:30])]
    at_once = pipeline.stream()
    at_once.update(first)
    expected = at_once.update(rest).sort_values(["id", "ds"]).reset_index(drop=True)
    stream = pipeline.stream()
    stream.update(first)
    parts, sizes = [], []
    for _, row in rest.groupby("ds", sort=True):  # one step of every series at a time
        parts.append(stream.update(row))
        state = stream.tracks["s0"].state
        sizes.append(sum(t.numel() for layer in state.layers for t in layer))
    streamed = pd.concat(parts).sort_values(["id", "ds"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(streamed, expected, rtol=1e-4, atol=1e-5)
    assert len(set(sizes)) == 1  # an lstm's state does not grow with the stream
    with pytest.raises(DataError, match="series 's0': the stream expected its next row"):
        stream.update(df[df["id"] == "s0"].iloc[:3])
    with pytest.raises(DataError, match="give at least data.context = 24 of them, got 3"):
        pipeline.stream().update(df[df["id"] == "s0"].iloc[:3])


def test_scores_do_not_depend_on_the_chunk(trained):
    detector, df, _ = trained
    pipeline = detector.pipeline
    whole = pipeline.score(df)
    pipeline.objective.options.chunk = 7
    try:
        pd.testing.assert_frame_equal(pipeline.score(df), whole, rtol=1e-4, atol=1e-5)
    finally:
        pipeline.objective.options.chunk = 512


def test_bad_anomaly_configs_are_refused():
    with pytest.raises(ConfigError, match="task_options.loss must be one of normal, student_t"):
        objective(loss="quantile")
    with pytest.raises(ConfigError, match="not both"):
        objective(threshold_quantile=0.9, false_alarm_rate=0.1)
    with pytest.raises(ConfigError, match="label 'score' is a column scoring writes"):
        objective(label="score")
    with pytest.raises(ConfigError, match="data.scale_by must be series"):
        RunConfig.from_dict({"task": "anomaly", "model": {"mixer": "lstm", "position": "none"},
                             "data": {"source": "series", "path": "x.csv", "scale_by": "window"}})
    with pytest.raises(ConfigError, match="needs a causal model"):
        RunConfig.from_dict({"task": "anomaly", "model": {"mixer": "lstm", "causal": False},
                             "data": {"source": "series", "path": "x.csv"}})


def test_detection_metrics_need_the_label_column(trained):
    detector, df, _ = trained
    with pytest.raises(DataError, match="'anomaly' is not in the table"):
        detector.evaluate(df.drop(columns="anomaly"))
    bad = df.copy()
    bad.loc[5, "anomaly"] = 3
    with pytest.raises(DataError, match="labels must be 0 or 1; found 3"):
        detector.evaluate(bad)


def test_detector_configs_keep_the_users_paths_and_size_named_mixers():
    from seqlab.forecaster import model_section

    assert seqlab.AnomalyDetector().config_dict("x.csv")["task_options"]["paths"] == 50
    given = seqlab.AnomalyDetector(**{"task_options.paths": 7}).config_dict("x.csv")
    assert given["task_options"]["paths"] == 7 and given["task"] == "anomaly"
    # "mamba" names a preset too; a Forecaster means the mixer at its own size
    section = model_section("mamba", d_model=16, n_layers=1, window=10)
    assert section["mixer"] == "mamba" and section["d_model"] == 16 and "preset" not in section
    assert model_section({"preset": "mamba"}, d_model=16, n_layers=1, window=10)["preset"] == "mamba"
