"""Labelled objectives: ``classify`` (one class per sequence), ``tag`` (one label per
position) and ``regress`` (one or several numbers per sequence).

Each reads labelled examples of tokens (``examples`` source) or of feature vectors
(``features`` source) and works with every mixer in the mode the model runs: a causal
model classifies or regresses from its last real position (``pooling: auto``), a
bidirectional one from the mean over real positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch

from seqlab.errors import ConfigError
from seqlab.models.heads import POOLINGS, ClassifierHead, RegressionHead, TaggerHead
from seqlab.plots import plot_confusion
from seqlab.tasks.base import Objective, class_weights, register_objective
from seqlab.tasks.metrics import ClassificationMetric, RegressionMetric, TaggingMetric, is_bio
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
    ``classify``."""

    scheme: str = "auto"
    class_weights: Weights = None

    def __post_init__(self):
        if self.scheme not in ("auto", "bio", "segments", "none"):
            raise ConfigError(f"task_options.scheme must be auto, bio, segments or none, got "
                              f"{self.scheme!r}")
        _check_weights(self.class_weights)


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
    """One label per position: accuracy, F1 per tag, and segment-level F1 for BIO tags."""

    def build_head(self, backbone) -> TaggerHead:
        cfg = self.config.model
        return TaggerHead(cfg.d_model, len(self.names), class_weights=self._weights(self.names),
                          dropout=cfg.dropout)

    def metric(self) -> TaggingMetric:
        scheme = self.options.scheme
        spans = scheme == "bio" or (scheme == "auto" and is_bio(self.names))
        return TaggingMetric(self.names, spans=spans, segments=scheme == "segments")


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
