"""Detection metrics of per-step anomaly scores against 0/1 labels.

- ``threshold_for``: the score above which a step is flagged: a quantile of reference
  scores, or the quantile that flags ``false_alarm_rate`` of the reference steps labelled
  normal (of every reference step when there are no labels).
- ``detection_scores``: precision, recall and F1 of the flags; the point-adjusted F1
  (a labelled anomalous segment counts as wholly found when any of its steps is
  flagged, the convention of the anomaly-detection literature since Xu et al., 2018:
  kind to segment detectors, so both are reported); AUROC and AUPRC (average precision)
  of the scores, threshold-free.

Steps whose score is NaN (the first step of a series, which has no prediction) count
nowhere.
"""

from __future__ import annotations

import numpy as np

from seqlab.errors import ConfigError, DataError


def threshold_for(scores: np.ndarray, labels: np.ndarray | None = None, *,
                  quantile: float | None = None,
                  false_alarm_rate: float | None = None) -> float:
    """The flagging threshold from reference ``scores`` (see the module docstring)."""
    if (quantile is None) == (false_alarm_rate is None):
        raise ConfigError("give exactly one of a threshold quantile or a false-alarm rate")
    scores = np.asarray(scores, np.float64)
    ok = np.isfinite(scores)
    if false_alarm_rate is not None:
        if not 0 < false_alarm_rate < 1:
            raise ConfigError(f"the false-alarm rate is a fraction in (0, 1), got "
                              f"{false_alarm_rate}")
        if labels is not None:
            ok &= np.asarray(labels) == 0
        quantile = 1 - false_alarm_rate
    elif not 0 < quantile < 1:
        raise ConfigError(f"the threshold quantile must be in (0, 1), got {quantile}")
    if not ok.any():
        raise DataError("no scored step to set a threshold from")
    return float(np.quantile(scores[ok], quantile))


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every run of 1s in ``labels``."""
    padded = np.concatenate([[0], np.asarray(labels, np.int8), [0]])
    change = np.flatnonzero(np.diff(padded))
    return list(zip(change[::2].tolist(), change[1::2].tolist()))


def point_adjust(flags: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``flags`` with every labelled segment that has a flagged step flagged whole."""
    out = np.asarray(flags, bool).copy()
    for start, end in segments(labels):
        if out[start:end].any():
            out[start:end] = True
    return out


def prf(flags: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of boolean ``flags`` against 0/1 ``labels``."""
    flags, labels = np.asarray(flags, bool), np.asarray(labels, bool)
    tp = float((flags & labels).sum())
    precision = tp / max(float(flags.sum()), 1.0)
    recall = tp / max(float(labels.sum()), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the chance a random anomalous step outscores a random
    normal one (ties count half), from the rank sum."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mean_rank = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(mean_rank, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision: the mean over
    anomalous steps of the precision among steps scored at least as high."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    if not labels.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, hit = scores[order], labels[order]
    # group ties: precision and recall move once per distinct score
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(hit)[last]
    precision = tp / (last + 1)
    recall_gain = np.diff(np.r_[0, tp]) / labels.sum()
    return float((precision * recall_gain).sum())


def detection_scores(scores: np.ndarray, flags: np.ndarray, labels: np.ndarray,
                     series: np.ndarray | None = None) -> dict[str, float]:
    """Every detection metric (see the module docstring) of flat per-step arrays;
    ``series`` (one id per step) keeps point adjustment within each series."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels)
    if len(scores) != len(labels) or len(flags) != len(labels):
        raise DataError(f"{len(scores)} scores, {len(flags)} flags and {len(labels)} labels: "
                        "one of each per step is needed")
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        raise DataError(f"anomaly labels must be 0 or 1; found {labels[bad][0].item()!r}")
    ok = np.isfinite(scores)
    adjusted = np.zeros(len(scores), bool)
    groups = [np.arange(len(scores))] if series is None else \
        [np.flatnonzero(series == s) for s in dict.fromkeys(series)]
    for rows in groups:
        adjusted[rows] = point_adjust(np.asarray(flags)[rows] & ok[rows], labels[rows])
    precision, recall, f1 = prf(np.asarray(flags)[ok], labels[ok])
    return {"precision": precision, "recall": recall, "f1": f1,
            "f1_point_adjusted": prf(adjusted[ok], labels[ok])[2],
            "auroc": auroc(scores[ok], labels[ok]),
            "auprc": average_precision(scores[ok], labels[ok]),
            "anomalies": float(labels[ok].sum()), "flagged": float(np.asarray(flags)[ok].sum())}


__all__ = ["auroc", "average_precision", "detection_scores", "point_adjust", "prf",
           "segments", "threshold_for"]
