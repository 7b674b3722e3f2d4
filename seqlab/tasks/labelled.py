"""Labelled objectives: ``classify`` (one class per sequence), ``tag`` (one label per
position) and ``regress`` (one or several numbers per sequence).

Each reads labelled examples of tokens (``examples`` source) or of feature vectors
(``features`` source) and works with every mixer in the mode the model runs: a causal
model classifies or regresses from its last real position (``pooling: auto``), a
bidirectional one from the mean over real positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch

from seqlab.errors import ConfigError
from seqlab.models.heads import POOLINGS, ClassifierHead, RegressionHead, TaggerHead
from seqlab.plots import plot_confusion
from seqlab.tasks.base import Objective, class_weights, register_objective
from seqlab.tasks.metrics import (ClassificationMetric, ReducedTaggingMetric, RegressionMetric,
                                  TaggingMetric, is_bio)
from seqlab.tasks.predict import LabelPipeline

Weights = Union[str, list[float], dict[str, float], None]


def _check_pooling(pooling: str) -> None:
    if pooling not in ("auto", *POOLINGS):
        raise ConfigError(f"task_options.pooling must be one of auto, {', '.join(POOLINGS)}, "
                          f"got {pooling!r}")


def _check_weights(weights: Weights) -> None:
    if isinstance(weights, str) and weights != "balanced":
        raise ConfigError(f"task_options.class_weights: the only named weighting is 'balanced', "
                          f"got {weights!r}")
    values = weights if isinstance(weights, list) else list((weights or {}).values()) \
        if isinstance(weights, dict) else []
    if any(v < 0 for v in values):
        raise ConfigError("task_options.class_weights must not be negative")


@dataclass
class ClassifyOptions:
    """``pooling``: ``auto`` (``last`` real position for a causal model, ``mean`` over real
    positions otherwise), ``mean``, ``first`` (token inputs get a ``<bos>`` slot in front)
    or ``last``. ``class_weights``: None, ``balanced`` (inverse class frequency), a list
    in class order, or a mapping of class name to weight."""

    pooling: str = "auto"
    class_weights: Weights = None

    def __post_init__(self):
        _check_pooling(self.pooling)
        _check_weights(self.class_weights)


@dataclass
class TagOptions:
    """``scheme``: ``auto`` (span-level F1 when the tags look like BIO), ``bio``,
    ``segments`` (every tag is a class whose maximal runs are segments: secondary
    structure, gene regions; segment F1 and SOV) or ``none``. ``class_weights`` as for
    ``classify``.

    ``reduce``: a mapping of tags to coarser classes, each class itself a tag (tags it
    leaves out are their own class), for data scored at two levels: eight-state
    secondary structure scored as Q8 and, with ``{G: H, I: H, B: E, T: C, S: C}``, as
    Q3. Evaluation then adds the metrics of the reduced predictions (the argmax tag,
    then mapped) under ``reduce_name``: ``q3_accuracy``, ``q3_f1/H``, and with
    ``scheme: segments`` ``q3_segment_f1`` and ``q3_sov``."""

    scheme: str = "auto"
    class_weights: Weights = None
    reduce: Union[dict[str, Union[str, int]], None] = None
    reduce_name: str = "reduced"

    def __post_init__(self):
        if self.scheme not in ("auto", "bio", "segments", "none"):
            raise ConfigError(f"task_options.scheme must be auto, bio, segments or none, got "
                              f"{self.scheme!r}")
        _check_weights(self.class_weights)
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", str(self.reduce_name)):
            raise ConfigError(f"task_options.reduce_name must be letters and digits, starting "
                              f"with a letter (q3), got {self.reduce_name!r}")
        if self.reduce is None:
            return
        if not isinstance(self.reduce, dict) or not self.reduce:
            raise ConfigError(f"task_options.reduce must be a mapping of tag to class, such as "
                              f"{{G: H, T: C}}, got {self.reduce!r}")
        self.reduce = {str(k): str(v) for k, v in self.reduce.items()}
        for tag, cls in self.reduce.items():
            if self.reduce.get(cls, cls) != cls:
                raise ConfigError(f"task_options.reduce maps {tag} to {cls} and {cls} on to "
                                  f"{self.reduce[cls]}; map each tag straight to its class")


def reduction(mapping: dict[str, str], names: list) -> tuple[list, torch.Tensor]:
    """The coarse classes of ``mapping`` (in the order of ``names``) and the class id of
    each tag id.

    Raises:
        ConfigError: a key or a value of ``mapping`` is not one of the tags ``names``.
    """
    tags = [str(n) for n in names]
    for key, value in mapping.items():
        for what, tag in (("key", key), ("value", value)):
            if tag not in tags:
                raise ConfigError(f"task_options.reduce {what} {tag!r} is not a tag of the data; "
                                  f"the tags are {', '.join(tags)}")
    coarse = [mapping.get(t, t) for t in tags]
    classes = [n for n, t in zip(names, tags) if t in coarse]
    index = {str(c): i for i, c in enumerate(classes)}
    return classes, torch.tensor([index[c] for c in coarse])


@dataclass
class RegressOptions:
    """``loss``: ``mse`` or ``mae``. ``pooling`` as for ``classify``. ``standardize``:
    learn targets scaled by the training mean and standard deviation (predictions and
    metrics stay in the targets' own units)."""

    loss: str = "mse"
    pooling: str = "auto"
    standardize: bool = True

    def __post_init__(self):
        if self.loss not in RegressionHead.LOSSES:
            raise ConfigError(f"task_options.loss must be one of "
                              f"{', '.join(RegressionHead.LOSSES)}, got {self.loss!r}")
        _check_pooling(self.pooling)


class _Labelled(Objective):
    """What the three share: label names, pooling, class counts, the pipeline."""

    @classmethod
    def check(cls, config) -> None:
        pooling = getattr(config.task_options, "pooling", None)
        if pooling == "first" and config.model.causal:
            raise ConfigError("task_options.pooling 'first' reads the first position, which a "
                              "causal model computes from the first token alone; use 'last' "
                              "(or 'auto'), or set model.causal: false")

    def pooling(self) -> str:
        pooling = self.options.pooling
        if pooling == "auto":
            return "last" if self.config.model.causal else "mean"
        return pooling

    def adds_bos(self) -> bool:
        return getattr(self.options, "pooling", None) == "first"

    @property
    def names(self) -> list:
        if self.source.labels is None:
            raise ConfigError("the labels are unknown: prepare the data or load a trained run")
        return self.source.labels.names

    def _weights(self, names: list) -> torch.Tensor | None:
        spec = self.options.class_weights
        counts = None
        if spec == "balanced":
            train = getattr(self.source, "train", None)
            if train is None:
                return None  # a loaded run predicts; the weights only shape the loss
            labels = torch.from_numpy(train.labels)
            counts = torch.bincount(labels[labels >= 0], minlength=len(names))
        return class_weights(spec, names, counts)

    def pipeline(self, model, run_dir=None):
        return LabelPipeline(self, model, run_dir)

    def write_plots(self, plots_dir: Path) -> None:
        for name, metric in self.last_metrics.items():
            confusion = getattr(metric, "confusion", None)
            if confusion is not None and len(self.names) <= 64:
                file = "confusion.png" if name == "val" else f"confusion-{name}.png"
                plot_confusion(confusion.tolist(), self.names, plots_dir / file,
                               title=f"{self.name}: {name}")
            reduced = getattr(metric, "reduced", None)
            if reduced is not None:
                part = metric.prefix if name == "val" else f"{name}-{metric.prefix}"
                plot_confusion(reduced.confusion.tolist(), reduced.names,
                               plots_dir / f"confusion-{part}.png",
                               title=f"{self.name}: {name}, {metric.prefix}")


@register_objective("classify", ClassifyOptions, sources=("examples", "features"),
                    label_kind="class")
class Classify(_Labelled):
    """One class per sequence: accuracy, macro-F1 and a confusion matrix."""

    def build_head(self, backbone) -> ClassifierHead:
        cfg = self.config.model
        return ClassifierHead(cfg.d_model, len(self.names), pooling=self.pooling(),
                              class_weights=self._weights(self.names), dropout=cfg.dropout)

    def metric(self) -> ClassificationMetric:
        return ClassificationMetric(self.names)


@register_objective("tag", TagOptions, sources=("examples", "features"), label_kind="tags")
class Tag(_Labelled):
    """One label per position: accuracy, F1 per tag, and segment-level F1 for BIO tags
    or segments; with ``reduce``, all of it again on coarser classes."""

    def build_head(self, backbone) -> TaggerHead:
        cfg = self.config.model
        return TaggerHead(cfg.d_model, len(self.names), class_weights=self._weights(self.names),
                          dropout=cfg.dropout)

    def metric(self) -> TaggingMetric | ReducedTaggingMetric:
        scheme, names = self.options.scheme, self.names
        spans = scheme == "bio" or (scheme == "auto" and is_bio(names))
        if not self.options.reduce:
            return TaggingMetric(names, spans=spans, segments=scheme == "segments")
        classes, lookup = reduction(self.options.reduce, names)
        return ReducedTaggingMetric(
            names, classes, lookup, prefix=self.options.reduce_name, spans=spans,
            segments=scheme == "segments",
            class_spans=scheme == "bio" or (scheme == "auto" and is_bio(classes)))


@register_objective("regress", RegressOptions, sources=("examples", "features"),
                    label_kind="number")
class Regress(_Labelled):
    """One or several numbers per sequence: MAE, RMSE and R²."""

    def build_head(self, backbone) -> RegressionHead:
        cfg = self.config.model
        head = RegressionHead(cfg.d_model, len(self.names), pooling=self.pooling(),
                              loss=self.options.loss, dropout=cfg.dropout)
        train = getattr(self.source, "train", None)
        if self.options.standardize and train is not None:
            y = torch.from_numpy(train.labels).double()
            head.set_target_stats(y.mean(0).float(), y.std(0, unbiased=False).float())
        return head

    def metric(self) -> RegressionMetric:
        return RegressionMetric([str(n) for n in self.names])
