"""Metric accumulators: classification, tagging (with BIO spans), regression.

Each adds one batch at a time and computes its metrics from counts, so evaluating a
large set needs no list of predictions. Padding never counts; a label never seen in
training (``IGNORE`` at a real position) counts as a miss.
"""

from __future__ import annotations

import math

import torch

from seqlab.data.batch import IGNORE, Batch
from seqlab.errors import ShapeError
from seqlab.models.heads import LossSum
from seqlab.tasks.base import Metric


def f1_scores(confusion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class F1 from a (C [+ 1 unseen row], C) confusion matrix (rows true, columns
    predicted), and which classes take part in the macro average: those that occur as a
    true or a predicted label (as scikit-learn's macro F1 over the labels present)."""
    C = confusion.shape[1]
    tp = confusion[:C].diagonal().double()
    predicted = confusion.sum(0).double()
    actual = confusion[:C].sum(1).double()
    f1 = torch.where(predicted + actual > 0, 2 * tp / (predicted + actual).clamp(min=1), 0.0)
    return f1, (predicted + actual) > 0


def _add(confusion: torch.Tensor, targets: torch.Tensor, predicted: torch.Tensor) -> None:
    """Count (true, predicted) pairs; IGNORE targets go to the last (unseen) row."""
    C = confusion.shape[1]
    rows = torch.where(targets == IGNORE, C, targets)
    confusion += torch.bincount(rows * C + predicted, minlength=(C + 1) * C).view(C + 1, C)


class ClassificationMetric(Metric):
    """``accuracy``, ``macro_f1`` and, when there are any, ``unseen`` (examples whose
    class training never saw; each counts as a miss). ``confusion`` keeps the matrix of
    the last evaluation for plots: (C + 1, C), the last row being the unseen examples."""

    directions = {"accuracy": "max", "macro_f1": "max"}

    def __init__(self, names: list):
        self.names = names
        self.confusion = torch.zeros(len(names) + 1, len(names), dtype=torch.long)

    def update(self, result: LossSum, batch: Batch) -> None:
        predicted = result.outputs.argmax(-1).cpu()
        _add(self.confusion, batch.targets.cpu(), predicted)

    def compute(self) -> dict[str, float]:
        n = int(self.confusion.sum())
        correct = int(self.confusion[:-1].diagonal().sum())
        f1, present = f1_scores(self.confusion)
        out = {"accuracy": correct / max(n, 1),
               "macro_f1": float(f1[present].mean()) if bool(present.any()) else 0.0}
        unseen = int(self.confusion[-1].sum())
        if unseen:
            out["unseen"] = float(unseen)
        return out


def bio_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """Labelled spans ``(type, start, end)`` of a BIO tag sequence, as conlleval reads
    them: ``B-X`` opens a span of X, ``I-X`` continues a span of X and opens one when the
    previous tag was not of X, anything else (``O``, an unknown tag) closes it."""
    spans, kind, start = set(), None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, name = tag.partition("-")
        continues = prefix == "I" and name == kind
        if kind is not None and not continues:
            spans.add((kind, start, i))
            kind = None
        if prefix == "B" or (prefix == "I" and not continues):
            kind, start = name, i
    return spans


def runs(tags: list) -> list[tuple[str, int, int]]:
    """The maximal runs of one tag, ``(tag, start, end)``: the segments of a labelling
    in which every tag is a class of its own (helix, strand, coil; exon, intron)."""
    out, start = [], 0
    for i in range(1, len(tags) + 1):
        if i == len(tags) or tags[i] != tags[start]:
            out.append((tags[start], start, i))
            start = i
    return out


def sov_terms(gold: list, predicted: list) -> tuple[float, float]:
    """The numerator and normaliser of the segment overlap score SOV'99 (Zemla et al.,
    1999) of one sequence: for each gold segment, every predicted segment of its class
    that overlaps it scores ``(minov + delta) / maxov * len(gold)``, with ``delta =
    min(maxov - minov, minov, len(gold) // 2, len(pred) // 2)`` forgiving small boundary
    shifts; gold segments with no overlapping prediction score 0 but count their length."""
    found = runs(predicted)
    score = norm = 0.0
    for label, a0, a1 in runs(gold):
        pairs = [(b0, b1) for kind, b0, b1 in found if kind == label and b0 < a1 and a0 < b1]
        if not pairs:
            norm += a1 - a0
        for b0, b1 in pairs:
            minov, maxov = min(a1, b1) - max(a0, b0), max(a1, b1) - min(a0, b0)
            delta = min(maxov - minov, minov, (a1 - a0) // 2, (b1 - b0) // 2)
            score += (minov + delta) / maxov * (a1 - a0)
            norm += a1 - a0
    return score, norm


def is_bio(names: list) -> bool:
    """Whether tag names follow BIO: ``O``, ``B-X`` or ``I-X``, with at least one ``B-``."""
    names = [str(n) for n in names]
    return any(n.startswith("B-") for n in names) and all(
        n == "O" or n.startswith(("B-", "I-")) for n in names)


class TaggingMetric(Metric):
    """Per-position ``accuracy``, ``macro_f1`` and ``f1/<tag>`` over real positions; for
    BIO tags segment-level ``span_precision``, ``span_recall``, ``span_f1``; with
    ``segments`` (every tag a class of its own, its maximal runs the segments)
    ``segment_precision``, ``segment_recall``, ``segment_f1`` (exact boundaries and
    class) and ``sov`` (SOV'99, pooled over sequences, 0..1)."""

    def __init__(self, names: list, *, spans: bool, segments: bool = False):
        self.directions = {"accuracy": "max", "macro_f1": "max", **({"span_f1": "max"} if spans else {}),
                           **({"segment_f1": "max", "sov": "max"} if segments else {})}
        self.names = names
        self.confusion = torch.zeros(len(names) + 1, len(names), dtype=torch.long)
        self.spans, self.segments = spans, segments
        self.gold = self.found = self.correct = 0
        self.sov_score = self.sov_norm = 0.0

    def update(self, result: LossSum, batch: Batch) -> None:
        predicted = result.outputs.argmax(-1).cpu()  # (B, T)
        self.add(batch.targets.cpu(), predicted, _real(batch))

    def add(self, targets: torch.Tensor, predicted: torch.Tensor, real: torch.Tensor) -> None:
        """Count tag ids ``targets`` (IGNORE: unseen) against ``predicted`` where ``real``.

        Shapes:
            targets, predicted, real: (B, T).
        """
        _add(self.confusion, targets[real], predicted[real])
        if self.spans or self.segments:
            names = [str(n) for n in self.names]
            for t_row, p_row, r_row in zip(targets, predicted, real):  # wherever padding lies
                keep = r_row & (t_row != IGNORE) if self.segments else r_row
                gold_tags = [names[t] if t != IGNORE else "O" for t in t_row[keep].tolist()]
                found_tags = [names[p] for p in p_row[keep].tolist()]
                if self.spans:
                    gold, found = bio_spans(gold_tags), bio_spans(found_tags)
                else:
                    gold, found = set(runs(gold_tags)), set(runs(found_tags))
                    score, norm = sov_terms(gold_tags, found_tags)
                    self.sov_score += score
                    self.sov_norm += norm
                self.gold += len(gold)
                self.found += len(found)
                self.correct += len(gold & found)

    def compute(self) -> dict[str, float]:
        n = int(self.confusion.sum())
        f1, present = f1_scores(self.confusion)
        out = {"accuracy": int(self.confusion[:-1].diagonal().sum()) / max(n, 1),
               "macro_f1": float(f1[present].mean()) if bool(present.any()) else 0.0}
        if self.spans or self.segments:
            p = self.correct / self.found if self.found else 0.0
            r = self.correct / self.gold if self.gold else 0.0
            kind = "span" if self.spans else "segment"
            out.update({f"{kind}_precision": p, f"{kind}_recall": r,
                        f"{kind}_f1": 2 * p * r / (p + r) if p + r else 0.0})
            if self.segments:
                out["sov"] = self.sov_score / self.sov_norm if self.sov_norm else 0.0
        unseen = int(self.confusion[-1].sum())
        if unseen:
            out["unseen"] = float(unseen)
        out.update({f"f1/{name}": float(v) for name, v in zip(self.names, f1)})
        return out


def _real(batch: Batch) -> torch.Tensor:
    """Which positions of ``batch`` are real (not padding), (B, T)."""
    if batch.padding_mask is None:
        return torch.ones_like(batch.targets, dtype=torch.bool, device="cpu")
    return batch.padding_mask.cpu()


class ReducedTaggingMetric(Metric):
    """Tagging metrics on the tags and again on coarser classes: eight-state secondary
    structure scored as Q8 and, reduced to helix, strand and coil, as Q3. Predictions
    are reduced after the argmax, as Q3 is computed from an eight-state predictor's
    output. Everything of :class:`TaggingMetric` is reported for the tags as is, and
    again under ``<prefix>_`` for the classes (``q3_accuracy``, ``q3_f1/H``, ``q3_sov``);
    tags never seen in training stay misses there and are not counted twice as
    ``unseen``.

    Args:
        names: the tag names in id order.
        classes: the coarse class names in class id order.
        lookup: the class id of each tag id, (C,).
        prefix: what the coarse metrics' names start with.
        spans, segments: as for :class:`TaggingMetric`, for the tags.
        class_spans: BIO spans for the classes.
    """

    def __init__(self, names: list, classes: list, lookup: torch.Tensor, *, prefix: str,
                 spans: bool, segments: bool, class_spans: bool = False):
        if lookup.shape != (len(names),):
            raise ShapeError(f"the reduction maps {tuple(lookup.shape)} tags, the data has "
                             f"{len(names)}")
        self.tags = TaggingMetric(names, spans=spans, segments=segments)
        self.reduced = TaggingMetric(classes, spans=class_spans, segments=segments)
        self.lookup, self.prefix = lookup.long(), prefix
        self.confusion = self.tags.confusion  # the plots' matrix
        self.directions = {**self.tags.directions,
                           **{f"{prefix}_{k}": v for k, v in self.reduced.directions.items()}}

    def update(self, result: LossSum, batch: Batch) -> None:
        predicted = result.outputs.argmax(-1).cpu()  # (B, T)
        targets, real = batch.targets.cpu(), _real(batch)
        self.tags.add(targets, predicted, real)
        unseen = targets == IGNORE
        coarse = torch.where(unseen, IGNORE, self.lookup[targets.clamp(min=0)])
        self.reduced.add(coarse, self.lookup[predicted], real)

    def compute(self) -> dict[str, float]:
        reduced = {f"{self.prefix}_{k}": v for k, v in self.reduced.compute().items()
                   if k != "unseen"}
        return {**self.tags.compute(), **reduced}


class RegressionMetric(Metric):
    """``mae``, ``rmse`` and ``r2`` (coefficient of determination: 1 - SSE / SST, mean over
    targets), in the targets' own units; per target too when there are several."""

    directions = {"mae": "min", "rmse": "min", "r2": "max"}

    def __init__(self, names: list[str]):
        self.names = names
        K = len(names)
        self.n = 0
        self.abs = torch.zeros(K, dtype=torch.float64)
        self.sq = torch.zeros(K, dtype=torch.float64)
        self.sum_y = torch.zeros(K, dtype=torch.float64)
        self.sum_y2 = torch.zeros(K, dtype=torch.float64)
        self.shift: torch.Tensor | None = None

    def update(self, result: LossSum, batch: Batch) -> None:
        y = batch.targets.cpu().double()
        out = result.outputs.cpu().double()
        if out.shape != y.shape:
            raise ShapeError(f"regression outputs {tuple(out.shape)} and targets "
                             f"{tuple(y.shape)} differ")
        if self.shift is None:  # sums around a shift keep SST exact when |mean| >> std
            self.shift = y.mean(0)
        error = out - y
        y = y - self.shift
        self.n += y.shape[0]
        self.abs += error.abs().sum(0)
        self.sq += error.square().sum(0)
        self.sum_y += y.sum(0)
        self.sum_y2 += y.square().sum(0)

    def compute(self) -> dict[str, float]:
        n = max(self.n, 1)
        mae, mse = self.abs / n, self.sq / n
        sst = self.sum_y2 - self.sum_y.square() / n
        r2 = torch.where(sst > 0, 1 - self.sq / sst.clamp(min=1e-300), torch.zeros_like(sst))
        out = {"mae": float(mae.mean()), "rmse": float(mse.mean().sqrt()), "r2": float(r2.mean())}
        if len(self.names) > 1:
            for i, name in enumerate(self.names):
                out.update({f"mae/{name}": float(mae[i]), f"rmse/{name}": math.sqrt(float(mse[i])),
                            f"r2/{name}": float(r2[i])})
        return out
