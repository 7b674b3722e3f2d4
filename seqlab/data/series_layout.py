"""Other layouts of a ``series`` window than the forecast one.

**Next step** (``lag_targets``): every position predicts its own step. A forecast window (``seqlab.data.series_source``) shows the model the context's targets
and blanks the horizon's. A next-step model (the forecast objective's ``recursive``
strategy, and anomaly scoring) instead reads, at position t, the targets of step t - 1
(and, with ``missing: mask``, whether they were observed), with step t's covariates,
calendar and history flag unchanged, and predicts step t. Its targets are every step of
the window; position 0, which has no step before it, counts in no loss.

In a training batch the lagged targets are the truth everywhere (teacher forcing). In a
batch to forecast (no targets) the horizon's lagged slots after position ``context``
are zero: the rollout (``seqlab.tasks.rollout``) fills them with its own draws, one
step at a time through the model's state.

**Blanked steps** (``blank_steps``): any steps of a window hidden the way a forecast
hides its horizon (targets, observed flags, history flag and past covariates zero; known
covariates, calendar and statics kept), for masked reconstruction.
"""

from __future__ import annotations

import torch

from seqlab.data.batch import Batch


def lag_targets(batch: Batch, *, context: int, n_targets: int, masked: bool) -> Batch:
    """The next-step layout of a forecast-layout ``batch`` (see the module docstring).

    Returns a new batch: inputs (B, C + H, F) with the target (and observed) channels
    moved one step later; targets (B, C + H, K) in scaled units with NaN where nothing is
    counted (position 0, missing values), or None when ``batch`` had none.
    """
    x, k = batch.inputs, n_targets
    seen = x[:, :context, :k]
    if masked:  # missing context values come back as NaN
        seen = torch.where(x[:, :context, k:2 * k] > 0.5, seen, torch.full((), float("nan")))
    B, T = x.shape[:2]
    values = torch.full((B, T, k), float("nan"), dtype=x.dtype, device=x.device)
    values[:, :context] = seen
    if batch.targets is not None:
        values[:, context:] = batch.targets.to(x.dtype)
    lagged = torch.cat([torch.full_like(values[:, :1], float("nan")), values[:, :-1]], 1)
    out = x.clone()
    out[..., :k] = torch.nan_to_num(lagged, nan=0.0)
    if masked:
        out[..., k:2 * k] = torch.isfinite(lagged).to(x.dtype)
    targets = None
    if batch.targets is not None:
        targets = values.clone()
        targets[:, 0] = float("nan")
    return Batch(out, targets, batch.padding_mask, dict(batch.extras), batch.index)


def blank_steps(inputs: torch.Tensor, where: torch.Tensor, *, n_targets: int, masked: bool,
                n_past: int) -> torch.Tensor:
    """``inputs`` (B, T, F) with the steps where ``where`` (B, T) is True blanked (see
    the module docstring)."""
    k = n_targets
    history = 2 * k if masked else k  # the history flag's channel
    out = inputs.clone()
    keep = (~where).unsqueeze(-1).to(inputs.dtype)
    out[..., :history + 1 + n_past] *= keep
    return out


__all__ = ["blank_steps", "lag_targets"]
