"""Forecasts as distributions over the horizon, direct or rolled out through the state.

Everything that reports a forecast (the forecast metrics, ``predict``, backtests) reads
it as a :class:`Predictive`: a point per step and quantiles at any levels, in the
series' own units. Two kinds exist:

- :class:`HeadPredictive`: a direct forecast, the head's parameters for every horizon
  step at once (each step's law on its own);
- :class:`SamplePredictive`: sample paths of a recursive forecast. :func:`rollout` runs
  a causal next-step model over the context once (one parallel pass that returns the
  streaming state, copied to every path), then, for each horizon step, draws that step from the head, feeds
  the draw back as the next position's lagged target and advances the state by one
  position: one step of the state protocol per horizon step, never re-reading the
  context. Paths carry the joint law across steps (an error at step 3 moves step 4), so
  intervals widen as errors compound, which a direct forecast cannot show.
"""

from __future__ import annotations

import torch
from torch import Tensor


class HeadPredictive:
    """A direct forecast: the head's (B, H, K, P) parameters."""

    def __init__(self, head, params: Tensor, loc: Tensor, scale: Tensor, *,
                 generator: torch.Generator | None = None):
        self.head, self.params, self.loc, self.scale = head, params, loc, scale
        self.generator = generator

    @property
    def point(self) -> Tensor:
        return self.head.point(self.params, self.loc, self.scale)

    def quantiles(self, levels) -> Tensor:
        return self.head.quantiles(self.params, levels, self.loc, self.scale,
                                   generator=self.generator)


class SamplePredictive:
    """A forecast given by (n, B, H, K) sample paths in the series' units; its point is
    their mean (their median with ``median``: for heads that learn a median)."""

    def __init__(self, paths: Tensor, *, median: bool = False):
        self.paths, self.median = paths, median

    @property
    def point(self) -> Tensor:
        return self.paths.median(0).values if self.median else self.paths.mean(0)

    def quantiles(self, levels) -> Tensor:
        p = torch.tensor([float(v) for v in levels], device=self.paths.device)
        return torch.quantile(self.paths, p, dim=0).permute(1, 2, 3, 0)


@torch.no_grad()
def rollout(model, inputs: Tensor, *, context: int, horizon: int, n_targets: int,
            masked: bool, loc: Tensor, scale: Tensor, paths: int,
            generator: torch.Generator | None = None) -> Tensor:
    """(paths, B, H, K) sample paths of the ``horizon`` steps after ``context``.

    ``inputs``: (B, context + horizon, F) windows in the next-step layout
    (``seqlab.data.series_layout``); the horizon's lagged target slots are overwritten.
    A head without a distribution (``mse``, ``mae``) rolls out its point forecast: one
    path, whatever ``paths`` says.
    """
    head, k = model.head, n_targets
    if not head.probabilistic:
        paths = 1
    B = inputs.shape[0]
    x = inputs.repeat(paths, 1, 1)  # path-major: row p * B + b
    loc_n, scale_n = loc.repeat(paths, 1), scale.repeat(paths, 1)
    if generator is None:
        generator = torch.Generator(device=inputs.device).manual_seed(0)
    # the context is read once per window; its state is then copied to every path
    out = model(inputs[:, :context + 1], model.init_state(B, device=inputs.device))
    rows = torch.arange(B, device=inputs.device).repeat(paths)
    state, params = out.state.reorder(rows), out.logits[:, -1:][rows]
    drawn = []
    for h in range(horizon):
        if h:
            params = out.logits[:, -1:]  # (nB, 1, K, P): the law of step context + h
        if head.probabilistic:
            value = head.sample(params, 1, loc_n, scale_n, generator=generator)[0]
        else:
            value = head.point(params, loc_n, scale_n)
        drawn.append(value[:, 0])
        if h + 1 == horizon:
            break
        step = x[:, context + 1 + h:context + 2 + h].clone()
        step[..., :k] = ((value - loc_n[:, None]) / scale_n[:, None]).to(step.dtype)
        if masked:
            step[..., k:2 * k] = 1.0
        out = model(step, state)
        state = out.state
    return torch.stack(drawn, 1).reshape(paths, B, horizon, k)


__all__ = ["HeadPredictive", "SamplePredictive", "rollout"]
