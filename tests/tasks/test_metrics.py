"""Metric accumulators against values worked out by hand and a pure-Python reference."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.data.batch import IGNORE, Batch
from seqlab.models.heads import LossSum
from seqlab.tasks.metrics import (
    ClassificationMetric,
    RegressionMetric,
    TaggingMetric,
    bio_spans,
    f1_scores,
    is_bio,
    runs,
    sov_terms,
)


def result(outputs):
    return LossSum(total=torch.tensor(0.0), count=1.0, outputs=outputs)


def logits_for(predicted, n_classes):
    """Logits whose argmax is ``predicted`` (any shape of class ids)."""
    return F.one_hot(torch.as_tensor(predicted), n_classes).float() * 3 - 1


def feed_classes(metric, truth, predicted, n_classes):
    metric.update(result(logits_for(predicted, n_classes)),
                  Batch(torch.zeros(len(truth), 1), torch.tensor(truth)))


# ---------------------------------------------------------------- classification

def test_classification_by_hand():
    # truth  a a b b c  (unseen)     pred  a b b b a c
    # correct: a->a, b->b, b->b = 3 of 6, accuracy 0.5 (the unseen example is a miss)
    # a: tp 1, predicted 2 (a, c->a), true 2      F1 = 2*1 / (2 + 2) = 0.5
    # b: tp 2, predicted 3 (a->b, b, b), true 2   F1 = 2*2 / (3 + 2) = 0.8
    # c: tp 0, predicted 1 (unseen->c), true 1    F1 = 0
    # macro F1 over a, b, c (d occurs nowhere, so it does not take part) = 1.3 / 3
    metric = ClassificationMetric(["a", "b", "c", "d"])
    feed_classes(metric, [0, 0, 1], [0, 1, 1], 4)  # in two batches
    feed_classes(metric, [1, 2, IGNORE], [1, 0, 2], 4)
    out = metric.compute()
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["macro_f1"] == pytest.approx(1.3 / 3)
    assert out["unseen"] == 1.0
    assert metric.confusion.shape == (5, 4) and metric.confusion[-1, 2] == 1


def test_classification_without_unseen_reports_no_unseen_key():
    metric = ClassificationMetric(["a", "b"])
    feed_classes(metric, [0, 1, 1], [0, 1, 0], 2)
    # a: tp 1, predicted 2, true 1 -> 2/3; b: tp 1, predicted 1, true 2 -> 2/3
    assert metric.compute() == pytest.approx({"accuracy": 2 / 3, "macro_f1": 2 / 3})


def test_f1_scores_by_hand():
    confusion = torch.tensor([[3, 1, 0],   # true 0
                              [0, 0, 0],   # true 1: never occurs, but is predicted once
                              [0, 0, 0],   # true 2: never occurs nor predicted
                              [0, 0, 0]])  # unseen
    f1, present = f1_scores(confusion)
    # class 0: 2*3 / (3 + 4); class 1: 0 / (1 + 0); class 2 absent
    torch.testing.assert_close(f1, torch.tensor([6 / 7, 0.0, 0.0], dtype=torch.float64))
    assert present.tolist() == [True, True, False]


def reference_scores(truth, predicted, n_classes):
    """Accuracy and macro F1 written out per class; IGNORE truth is a miss and a label
    outside the classes, so its prediction is a false positive of the predicted class."""
    correct = sum(t == p for t, p in zip(truth, predicted))
    f1s = []
    for c in range(n_classes):
        tp = sum(t == c and p == c for t, p in zip(truth, predicted))
        n_pred = sum(p == c for p in predicted)
        n_true = sum(t == c for t in truth)
        if n_pred == 0 and n_true == 0:
            continue
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return correct / len(truth), sum(f1s) / len(f1s)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n_classes=st.integers(1, 5))
def test_classification_matches_a_pure_python_reference(data, n_classes):
    label = st.integers(0, n_classes - 1)
    pairs = data.draw(st.lists(st.tuples(st.one_of(label, st.just(IGNORE)), label),
                               min_size=1, max_size=30))
    cut = data.draw(st.integers(0, len(pairs)))
    metric = ClassificationMetric([f"c{i}" for i in range(n_classes)])
    for part in (pairs[:cut], pairs[cut:]):
        if part:
            feed_classes(metric, *zip(*part), n_classes)
    accuracy, macro = reference_scores(*zip(*pairs), n_classes)
    out = metric.compute()
    assert out["accuracy"] == pytest.approx(accuracy)
    assert out["macro_f1"] == pytest.approx(macro)
    assert out.get("unseen", 0.0) == sum(t == IGNORE for t, _ in pairs)


# ---------------------------------------------------------------- BIO spans

@pytest.mark.parametrize("tags, spans", [
    ([], set()),
    (["O", "O"], set()),
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 2), ("LOC", 3, 4)}),  # a span at the end
    (["O", "I-PER", "I-PER", "O"], {("PER", 1, 3)}),  # I- after O opens a span (conlleval)
    (["I-PER", "O"], {("PER", 0, 1)}),  # ... and so does I- at the start
    (["B-PER", "I-LOC", "I-LOC"], {("PER", 0, 1), ("LOC", 1, 3)}),  # B-X I-Y: two spans
    (["B-PER", "B-PER", "I-PER"], {("PER", 0, 1), ("PER", 1, 3)}),  # adjacent B-X B-X
    (["B-ORG", "I-ORG", "I-ORG"], {("ORG", 0, 3)}),  # runs to the end
    (["B-MISC-X", "I-MISC-X"], {("MISC-X", 0, 2)}),  # the type is all after the first dash
])
def test_bio_spans_by_hand(tags, spans):
    assert bio_spans(tags) == spans


def test_is_bio():
    assert is_bio(["O", "B-PER", "I-PER"])
    assert not is_bio(["O", "I-PER"])  # no B-
    assert not is_bio(["O", "B-PER", "PER"])
    assert not is_bio([0, 1, 2])


TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def tagging_batch(truth, predicted, mask):
    targets = torch.tensor(truth)
    inputs = torch.zeros(targets.shape, dtype=torch.long)
    return result(logits_for(predicted, len(TAGS))), Batch(inputs, targets, mask)


def spans_example(*, left=False, padding_tag=1):
    """Row 0 (4 real) truth  B-PER I-PER O     B-LOC   spans (PER 0-2) (LOC 3-4)
                     pred   B-PER I-PER O     O       spans (PER 0-2)
       Row 1 (5 real) truth  O B-LOC I-LOC O  O       spans (LOC 1-3)
                     pred   O B-LOC I-LOC O  B-PER   spans (LOC 1-3) (PER 4-5)
    ``padding_tag`` (truth and prediction) fills the padded position of row 0."""
    truth = [[1, 2, 0, 3], [0, 3, 4, 0, 0]]
    pred = [[1, 2, 0, 0], [0, 3, 4, 0, 1]]
    mask = torch.tensor([[True] * 4 + [False], [True] * 5])
    if left:
        truth[0], pred[0] = [padding_tag] + truth[0], [padding_tag] + pred[0]
        mask[0] = mask[0].flip(0)
    else:
        truth[0], pred[0] = truth[0] + [padding_tag], pred[0] + [padding_tag]
    return tagging_batch(truth, pred, mask)


def test_tagging_spans_and_per_tag_scores_by_hand():
    # spans: gold 3, found 3, correct 2 (PER 0-2 in row 0, LOC 1-3 in row 1)
    #   precision = recall = F1 = 2/3
    # positions: 9 real, wrong at row 0 pos 3 (B-LOC -> O) and row 1 pos 4 (O -> B-PER): 7/9
    # per tag (tp, predicted, true): O (3, 4, 4) -> 6/8; B-PER (1, 2, 1) -> 2/3;
    #   I-PER (1, 1, 1) -> 1; B-LOC (1, 1, 2) -> 2/3; I-LOC (1, 1, 1) -> 1
    metric = TaggingMetric(TAGS, spans=True)
    metric.update(*spans_example())
    out = metric.compute()
    per_tag = {"O": 0.75, "B-PER": 2 / 3, "I-PER": 1.0, "B-LOC": 2 / 3, "I-LOC": 1.0}
    assert out == pytest.approx({
        "accuracy": 7 / 9, "macro_f1": sum(per_tag.values()) / 5,
        "span_precision": 2 / 3, "span_recall": 2 / 3, "span_f1": 2 / 3,
        **{f"f1/{k}": v for k, v in per_tag.items()}})


@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("padding_tag", [0, 1, 2, 4])
def test_padding_creates_no_spans_and_counts_nowhere(left, padding_tag):
    expected = TaggingMetric(TAGS, spans=True)
    expected.update(*spans_example())
    metric = TaggingMetric(TAGS, spans=True)
    metric.update(*spans_example(left=left, padding_tag=padding_tag))
    assert metric.compute() == pytest.approx(expected.compute())


def test_tagging_counts_an_unseen_tag_as_a_miss():
    # truth B-PER (unseen) O, pred B-PER I-PER O: 2 of 3 positions right, 1 unseen.
    # The gold sequence reads the unseen tag as O: gold spans {PER 0-1}, found {PER 0-2},
    # none correct.
    metric = TaggingMetric(TAGS, spans=True)
    metric.update(*tagging_batch([[1, IGNORE, 0]], [[1, 2, 0]], None))
    out = metric.compute()
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["unseen"] == 1.0
    assert (out["span_precision"], out["span_recall"], out["span_f1"]) == (0.0, 0.0, 0.0)
    # I-PER: tp 0, predicted 1 (the unseen position), true 0 -> 0
    assert out["f1/I-PER"] == 0.0 and out["f1/B-PER"] == 1.0


def test_tagging_without_spans_reports_no_span_keys():
    metric = TaggingMetric(["x", "y"], spans=False)
    metric.update(result(logits_for([[0, 1]], 2)),
                  Batch(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, 0]])))
    out = metric.compute()
    assert not any(k.startswith("span") for k in out)
    # x: tp 1, predicted 1, true 2 -> 2/3; y: tp 0, predicted 1, true 0 -> 0
    assert out == pytest.approx({"accuracy": 0.5, "macro_f1": 1 / 3, "f1/x": 2 / 3, "f1/y": 0.0})


# ---------------------------------------------------------------- regression

def feed_values(metric, predicted, truth):
    metric.update(result(torch.tensor(predicted, dtype=torch.float32)),
                  Batch(torch.zeros(len(truth), 1), torch.tensor(truth, dtype=torch.float32)))


def test_regression_by_hand():
    # y 1 2 3 4, prediction 1 2 3 5: MAE 1/4, RMSE sqrt(1/4) = 0.5;
    # mean 2.5, SST 2.25 + 0.25 + 0.25 + 2.25 = 5, SSE 1, R2 = 1 - 1/5 = 0.8
    metric = RegressionMetric(["y"])
    feed_values(metric, [[1.0], [2.0]], [[1.0], [2.0]])
    feed_values(metric, [[3.0], [5.0]], [[3.0], [4.0]])
    assert metric.compute() == pytest.approx({"mae": 0.25, "rmse": 0.5, "r2": 0.8})


def test_regression_constant_targets_give_r2_zero():
    metric = RegressionMetric(["y"])
    feed_values(metric, [[1.0], [3.0]], [[2.0], [2.0]])
    assert metric.compute()["r2"] == 0.0


def test_regression_several_targets_against_numpy():
    rng = np.random.default_rng(0)
    y = rng.normal([10.0, -2.0, 0.0], [3.0, 0.1, 1.0], size=(13, 3))
    pred = y + rng.normal(0, [1.0, 0.05, 2.0], size=y.shape)
    metric = RegressionMetric(["a", "b", "c"])
    for rows in (slice(0, 5), slice(5, 6), slice(6, 13)):
        feed_values(metric, pred[rows].tolist(), y[rows].tolist())
    y, pred = y.astype(np.float32).astype(np.float64), pred.astype(np.float32).astype(np.float64)
    mae = np.abs(pred - y).mean(0)
    mse = ((pred - y) ** 2).mean(0)
    r2 = 1 - ((pred - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    expected = {"mae": mae.mean(), "rmse": math.sqrt(mse.mean()), "r2": r2.mean()}
    for i, name in enumerate("abc"):
        expected.update({f"mae/{name}": mae[i], f"rmse/{name}": math.sqrt(mse[i]),
                         f"r2/{name}": r2[i]})
    assert metric.compute() == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------- segments and SOV

def test_runs_are_the_maximal_segments():
    assert runs(list("HHHCCE")) == [("H", 0, 3), ("C", 3, 5), ("E", 5, 6)]
    assert runs([]) == []


@pytest.mark.parametrize("gold, predicted, expected", [
    ("HHHHHHHHHH", "HHHHHHHHHH", 1.0),
    # A helix of 10 predicted as 5 (then coil): minov 5, maxov 10, delta min(5, 5, 5, 2) = 2
    # -> (5 + 2) / 10 * 10 = 7 of 10.
    ("HHHHHHHHHH", "HHHHHCCCCC", 0.7),
    # Shifted by one inside a coil: delta forgives it. H: minov 4, maxov 6, delta
    # min(2, 4, 2, 2) = 2 -> (4 + 2) / 6 * 5 = 5; coils C0-2 vs C0-3: minov 2, maxov 3,
    # delta min(1, 2, 1, 1) = 1 -> 2; C7-9 vs C8-9: minov 1, maxov 2, delta 0 -> 1;
    # N = 5 + 2 + 2 = 9, score 5 + 2 + 1 = 8.
    ("CCHHHHHCC", "CCCHHHHHC", 8 / 9),
    # Nothing of the strand is found: it counts its length 4 and scores 0. The coil C4-8
    # against C0-8: minov 4, maxov 8, delta min(4, 4, 2, 4) = 2 -> (4 + 2) / 8 * 4 = 3.
    ("EEEECCCC", "CCCCCCCC", 3 / 8),
])
def test_sov_by_hand(gold, predicted, expected):
    score, norm = sov_terms(list(gold), list(predicted))
    assert score / norm == pytest.approx(expected)


def test_segment_scores_by_hand():
    names = ["C", "E", "H"]
    truth = [[0, 0, 2, 2, 2, 2, 0]]  # segments C0-2 H2-6 C6-7
    pred = [[0, 0, 2, 2, 2, 0, 0]]   # segments C0-2 H2-5 C5-7: one of three exact
    metric = TaggingMetric(names, spans=False, segments=True)
    metric.update(result(logits_for(pred, 3)), Batch(torch.zeros(1, 7, dtype=torch.long),
                                                     torch.tensor(truth)))
    out = metric.compute()
    assert out["segment_precision"] == pytest.approx(1 / 3)
    assert out["segment_recall"] == pytest.approx(1 / 3)
    score, norm = sov_terms(list("CCHHHHC"), list("CCHHHCC"))
    assert out["sov"] == pytest.approx(score / norm) and 0 < out["sov"] < 1
    assert metric.directions["sov"] == "max"
