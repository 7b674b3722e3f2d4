"""The ``series_pretrain`` objective: self-supervised pre-training on series, no labels.

Two sources:

- ``series`` (tables of time series): windows of ``context + horizon`` steps with every
  step shown as history, in the feature layout a forecast reads, so a forecaster
  fine-tunes from the run with ``init.run`` (the input projection and the blocks load,
  the head is new). Hidden steps are blanked the way a forecast blanks its horizon
  (targets, observed and history flags, past covariates zero; known covariates and
  calendar kept); the targets are the series' targets.
- ``features`` (sequences of feature vectors, labelled or not): whole sequences; hidden
  steps are zero in every channel, and every feature is a target; a classifier (or
  tagger, or regressor) over the same features fine-tunes from the run.

Two methods (``task_options.method``):

- ``masked`` (the family of BERT's and PatchTST's masking): a ``mask_ratio`` share of
  each sequence's spans of ``span`` steps (default: ``model.patch``, a patch, where
  patches are used) is hidden, and the model reconstructs the hidden steps. Any mixer,
  causal or not; a forecast is the case where the hidden spans are the last ones.
- ``next``: a causal model predicts, at each position, the next position's steps (the
  next patch with ``model.patch``; the first is never a target).

The loss (``mse`` or ``mae``) is in standardised units (the series' scaling, the feature
statistics) over the predicted steps; the metrics are their MSE and MAE. Masks are a
pure function of the batch key (exact resume; the same validation masks every
evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from seqlab.data.series_layout import blank_steps
from seqlab.errors import ConfigError
from seqlab.models.forecast_head import ForecastHead
from seqlab.tasks.base import Metric, Objective, register_objective

METHODS = ("masked", "next")


@dataclass
class SeriesPretrainOptions:
    """``method``: ``masked`` or ``next``; ``mask_ratio``: the share of spans hidden
    (``masked``); ``span``: steps hidden together (default ``model.patch``; give 4 or
    more for an unpatched model, or single hidden steps are filled in from their
    neighbours); ``loss``: ``mse`` or ``mae``."""

    method: str = "masked"
    mask_ratio: float = 0.4
    span: Union[int, None] = None
    loss: str = "mse"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"task_options.method must be one of {', '.join(METHODS)}, got "
                              f"{self.method!r}")
        if not 0 < self.mask_ratio < 1:
            raise ConfigError(f"task_options.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.span is not None and self.span < 1:
            raise ConfigError(f"task_options.span must be >= 1, got {self.span}")
        if self.loss not in ("mse", "mae"):
            raise ConfigError(f"task_options.loss must be mse or mae, got {self.loss!r}")


class ReconstructionMetric(Metric):
    """MSE and MAE over the predicted steps, in scaled units."""

    directions = {"mse": "min", "mae": "min"}

    def __init__(self):
        self.sq = self.abs = 0.0
        self.n = 0

    def update(self, result, batch) -> None:
        y = batch.targets.float()
        seen = torch.isfinite(y)
        error = torch.where(seen, result.outputs[..., 0] - y, torch.zeros(()))
        self.sq += float(error.square().sum())
        self.abs += float(error.abs().sum())
        self.n += int(seen.sum())

    def compute(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {"mse": self.sq / n, "mae": self.abs / n}


@register_objective("series_pretrain", SeriesPretrainOptions, sources=("series", "features"))
class SeriesPretrain(Objective):
    """Masked-span reconstruction or next-patch prediction (see the module docstring)."""

    item_name = "windows"

    def items(self, batch) -> int:
        return batch.size  # throughput counts windows, not their steps

    def __init__(self, config):
        super().__init__(config)
        self.source.all_context = True  # (the series source; others ignore it)

    @classmethod
    def check(cls, config) -> None:
        data, patch, options = config.data, config.model.patch, config.task_options
        span = options.span or patch
        if span % patch:
            raise ConfigError(f"task_options.span ({span}) must be a multiple of model.patch "
                              f"({patch}): whole patches are hidden")
        if options.method == "next" and not config.model.causal:
            raise ConfigError("task_options.method next predicts each next patch from the "
                              "ones before it: it needs model.causal: true")
        if data.source != "series":
            if patch != 1:
                raise ConfigError(f"model.patch {patch} needs windows of equal length: the "
                                  "series source; with features use task_options.span instead")
            return
        window = data.context + data.horizon
        if window % span:
            raise ConfigError(f"a pre-training window (data.context + data.horizon = {window}) "
                              f"must be a multiple of the span {span} (model.patch or "
                              "task_options.span)")
        if config.model.context_length < window // patch:
            raise ConfigError(f"model.context_length is {config.model.context_length}; a "
                              f"window is {window // patch} positions; raise it")
        if window // span < 2:
            raise ConfigError(f"a pre-training window needs at least 2 spans, it has "
                              f"{window // span}")

    @property
    def series(self) -> bool:
        return self.config.data.source == "series"

    def n_targets(self) -> int:
        return len(self.config.data.target) if self.series else self.config.model.input_dim

    def build_head(self, backbone) -> ForecastHead:
        d = self.config.data
        window = d.context + d.horizon if self.series else self.config.model.context_length
        return ForecastHead(self.config.model.d_model, window, self.n_targets(),
                            loss=self.options.loss, patch=self.config.model.patch,
                            every_position=True)

    def transform(self, batch, *, key):
        d, P = self.config.data, self.config.model.patch
        x, k = batch.inputs, self.n_targets()
        masked = self.series and d.missing == "mask"
        values = x[..., :k]
        if masked:
            values = torch.where(x[..., k:2 * k] > 0.5, values, torch.full((), float("nan")))
        if batch.padding_mask is not None:
            values = torch.where(batch.padding_mask.unsqueeze(-1), values,
                                 torch.full((), float("nan")))
        B, T = x.shape[:2]
        if self.options.method == "next":
            targets = torch.full_like(values, float("nan"))
            targets[:, :T - P] = values[:, P:]
            return type(batch)(x, targets, batch.padding_mask, batch.extras, batch.index)
        where = self._hidden(batch, key).to(x.device)
        if self.series:
            inputs = blank_steps(x, where, n_targets=k, masked=masked,
                                 n_past=len(d.past_covariates))
        else:
            inputs = x * (~where).unsqueeze(-1).to(x.dtype)
        targets = torch.where(where.unsqueeze(-1), values, torch.full((), float("nan")))
        return type(batch)(inputs, targets, batch.padding_mask, batch.extras, batch.index)

    def _hidden(self, batch, key) -> torch.Tensor:
        """(B, T) bool: the hidden steps, whole spans, ``mask_ratio`` of each row's spans
        that lie inside its real steps (at least one, never all)."""
        B, T = batch.inputs.shape[:2]
        span = self.options.span or self.config.model.patch
        n = -(-T // span)
        lengths = (batch.padding_mask.sum(1).cpu().numpy() if batch.padding_mask is not None
                   else np.full(B, T))
        real = np.maximum(lengths // span, 1)  # spans wholly inside each row
        hidden = np.clip(np.round(self.options.mask_ratio * real), 1, np.maximum(real - 1, 1))
        rng = np.random.default_rng([self.config.seed, 7, *key])
        priority = rng.random((B, n))
        priority[np.arange(n)[None, :] >= real[:, None]] = np.inf  # never past the end
        rank = np.argsort(np.argsort(priority, axis=1), axis=1)
        spans = torch.from_numpy(rank < hidden[:, None])
        return spans.repeat_interleave(span, dim=1)[:, :T]

    def metric(self) -> ReconstructionMetric:
        return ReconstructionMetric()


__all__ = ["ReconstructionMetric", "SeriesPretrain", "SeriesPretrainOptions"]
