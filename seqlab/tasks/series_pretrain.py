"""The ``series_pretrain`` objective: self-supervised pre-training on series, no labels.

Windows of ``context + horizon`` steps come from the ``series`` source with every step
shown as history (the same feature layout a forecast reads, so a forecaster fine-tunes
from the run with ``init.run``: the input projection and the blocks load, the head is
new). With ``model.patch`` P, a patch of P steps is one position. Two methods
(``task_options.method``):

- ``masked`` (PatchTST's, SimMTM's family): a ``mask_ratio`` share of each window's
  patches is hidden the way a forecast hides its horizon (targets, observed and history
  flags, past covariates zero; known covariates and calendar kept), and the model
  reconstructs the hidden steps. Any mixer, causal or not; a forecast is the case where
  the hidden patches are the last ones.
- ``next``: a causal model predicts, at each position, the next patch's steps (the first
  patch is never a target).

The loss (``mse`` or ``mae``) is in the series' scaled units over the predicted steps;
the metrics are the reconstruction MSE and MAE. Masks are a pure function of the batch
key (exact resume; the same validation masks every evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from seqlab.data.series_layout import blank_steps
from seqlab.errors import ConfigError
from seqlab.models.forecast_head import ForecastHead
from seqlab.tasks.base import Metric, Objective, register_objective

METHODS = ("masked", "next")


@dataclass
class SeriesPretrainOptions:
    """``method``: ``masked`` or ``next``; ``mask_ratio``: the share of patches hidden
    (``masked``); ``loss``: ``mse`` or ``mae``."""

    method: str = "masked"
    mask_ratio: float = 0.4
    loss: str = "mse"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"task_options.method must be one of {', '.join(METHODS)}, got "
                              f"{self.method!r}")
        if not 0 < self.mask_ratio < 1:
            raise ConfigError(f"task_options.mask_ratio must be in (0, 1), got {self.mask_ratio}")
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


@register_objective("series_pretrain", SeriesPretrainOptions, sources=("series",),
                    label_kind="series")
class SeriesPretrain(Objective):
    """Masked-patch reconstruction or next-patch prediction (see the module docstring)."""

    item_name = "windows"

    def __init__(self, config):
        super().__init__(config)
        self.source.all_context = True

    @classmethod
    def check(cls, config) -> None:
        data, patch = config.data, config.model.patch
        window = data.context + data.horizon
        if window % patch:
            raise ConfigError(f"with model.patch {patch}, a pre-training window (data.context "
                              f"+ data.horizon = {window}) must be a multiple of it")
        if config.model.context_length < window // patch:
            raise ConfigError(f"model.context_length is {config.model.context_length}; a "
                              f"window is {window // patch} positions; raise it")
        if window // patch < 2:
            raise ConfigError(f"a pre-training window needs at least 2 patches, it has "
                              f"{window // patch}")
        if config.task_options.method == "next" and not config.model.causal:
            raise ConfigError("task_options.method next predicts each next patch from the "
                              "ones before it: it needs model.causal: true")

    @property
    def window(self) -> int:
        return self.config.data.context + self.config.data.horizon

    def build_head(self, backbone) -> ForecastHead:
        return ForecastHead(self.config.model.d_model, self.window, len(self.config.data.target),
                            loss=self.options.loss, patch=self.config.model.patch,
                            every_position=True)

    def transform(self, batch, *, key):
        d, P = self.config.data, self.config.model.patch
        k, masked = len(d.target), d.missing == "mask"
        x = batch.inputs
        values = x[..., :k]
        if masked:
            values = torch.where(x[..., k:2 * k] > 0.5, values, torch.full((), float("nan")))
        B, T = x.shape[:2]
        if self.options.method == "next":
            targets = torch.full_like(values, float("nan"))
            targets[:, :T - P] = values[:, P:]
            return type(batch)(x, targets, batch.padding_mask, batch.extras, batch.index)
        n = T // P
        hidden = max(1, min(n - 1, round(self.options.mask_ratio * n)))
        rng = np.random.default_rng([self.config.seed, 7, *key])
        order = np.argsort(rng.random((B, n)), axis=1)
        patches = torch.from_numpy(order < hidden)  # each row: `hidden` random patches
        where = patches.repeat_interleave(P, dim=1).to(x.device)
        inputs = blank_steps(x, where, n_targets=k, masked=masked,
                             n_past=len(d.past_covariates))
        targets = torch.where(where.unsqueeze(-1), values, torch.full((), float("nan")))
        return type(batch)(inputs, targets, batch.padding_mask, batch.extras, batch.index)

    def metric(self) -> ReconstructionMetric:
        return ReconstructionMetric()


__all__ = ["ReconstructionMetric", "SeriesPretrain", "SeriesPretrainOptions"]
