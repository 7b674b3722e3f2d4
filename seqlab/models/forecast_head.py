"""The forecasting head: a horizon of values, points or distributions, per target.

The head reads the hidden states of the last ``horizon`` positions (the horizon's slots
of a ``series`` window) and maps each to ``n_targets x n_params`` numbers: the
parameters of the forecast at that step. With patched inputs (``patch`` P steps per
position) it reads the last ``horizon / P`` positions and maps each to the parameters
of its P steps. With ``every_position`` (next-step models: the recursive strategy and
anomaly scoring; pre-training) it maps every position to the parameters of its P
steps, and its targets are (B, T * P, K). ``loss`` picks what they mean:

- ``mse``, ``mae``: a point forecast;
- ``normal``: mean and scale (softplus) of a Gaussian;
- ``student_t``: location, scale and degrees of freedom (2 + softplus: a finite variance);
- ``negbin``: mean (softplus, times the series' scale) and dispersion of a negative
  binomial, for counts; its loss reads the counts in their own units, so the series
  source must scale them by their mean absolute value (``scaling: mean_abs``), never
  shift them;
- ``quantile``: the forecast's quantiles at ``quantiles`` (pinball loss, averaged over
  the levels); sorted before use, so they never cross.

Everything but ``negbin`` is learnt on the series' scaled values (``(y - loc) / scale``);
every output the head reports (:meth:`ForecastHead.point`, :meth:`quantiles`,
:meth:`sample`) is in the series' own units. Missing targets (NaN) count nowhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.errors import ConfigError, ShapeError
from seqlab.models.heads import HEADS, Head, LossSum

N_PARAMS = {"mse": 1, "mae": 1, "normal": 2, "student_t": 3, "negbin": 2, "quantile": None}
DEFAULT_QUANTILES = (0.025, 0.1, 0.25, 0.5, 0.75, 0.9, 0.975)
MIN_SCALE = 1e-3  # the smallest predicted scale, in scaled units


def check_quantiles(quantiles) -> tuple[float, ...]:
    q = tuple(float(v) for v in quantiles)
    if not q or any(not 0 < v < 1 for v in q) or len(set(q)) != len(q):
        raise ConfigError(f"task_options.quantiles must be distinct levels in (0, 1), got "
                          f"{list(quantiles)}")
    return tuple(sorted(q))


@HEADS.register("forecast")
class ForecastHead(Head):
    """See the module docstring. ``forward`` returns the raw parameters (B, H, K, P)."""

    def __init__(self, d_model: int, horizon: int, n_targets: int, *, loss: str = "normal",
                 quantiles=DEFAULT_QUANTILES, samples: int = 400, patch: int = 1,
                 every_position: bool = False):
        super().__init__()
        self.every_position = every_position
        if horizon % patch:
            raise ConfigError(f"the horizon ({horizon}) must be a multiple of model.patch ({patch})")
        self.patch = patch
        if loss not in N_PARAMS:
            raise ConfigError(f"forecast loss must be one of {', '.join(N_PARAMS)}, got {loss!r}")
        self.kind, self.horizon, self.n_targets, self.samples = loss, horizon, n_targets, samples
        self.levels = check_quantiles(quantiles) if loss == "quantile" else ()
        self.n_params = len(self.levels) if loss == "quantile" else N_PARAMS[loss]
        self.proj = nn.Linear(d_model, patch * n_targets * self.n_params)

    @property
    def probabilistic(self) -> bool:
        return self.kind not in ("mse", "mae")

    def forward(self, hidden: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        if self.every_position:  # T positions of P steps: (B, T * P, K, params)
            out = self.proj(hidden)
            return out.reshape(out.shape[0], -1, self.n_targets, self.n_params)
        slots = self.horizon // self.patch
        if hidden.shape[1] < slots:
            raise ShapeError(f"the forecast head reads the last {slots} positions, but "
                             f"the input has {hidden.shape[1]}")
        out = self.proj(hidden[:, -slots:])  # (B, H / patch, patch * K * P)
        return out.reshape(out.shape[0], self.horizon, self.n_targets, self.n_params)

    def loss(self, hidden, targets, padding_mask=None, *, loc: Tensor | None = None,
             scale: Tensor | None = None, **extras) -> LossSum:
        params = self.forward(hidden).float()  # (B, H, K, P); (B, T, K, P) every position
        if targets.shape != params.shape[:3]:
            steps = "positions" if self.every_position else "horizon"
            raise ShapeError(f"forecast targets have shape {tuple(targets.shape)}, the head "
                             f"predicts {tuple(params.shape[:3])} (batch, {steps}, targets)")
        observed = torch.isfinite(targets)
        y = torch.where(observed, targets.float(), torch.zeros((), device=targets.device))
        if self.kind == "mse":
            each = (params[..., 0] - y).square()
        elif self.kind == "mae":
            each = (params[..., 0] - y).abs()
        elif self.kind == "quantile":
            level = torch.tensor(self.levels, device=y.device)
            error = y.unsqueeze(-1) - params.sort(-1).values  # (B, H, K, Q)
            each = torch.maximum(level * error, (level - 1) * error).mean(-1)
        elif self.kind == "negbin":
            s = scale[:, None, :].float()  # (B, 1, K)
            mu, alpha = self._negbin(params, s)
            counts = (y * s + loc[:, None, :]).clamp(min=0)
            r = 1.0 / alpha
            each = -(torch.lgamma(counts + r) - torch.lgamma(r) - torch.lgamma(counts + 1)
                     + r * torch.log(r / (r + mu)) + counts * torch.log(mu / (r + mu)))
        else:
            each = -self._distribution(params).log_prob(y)
        each = torch.where(observed, each, torch.zeros((), device=each.device))
        return LossSum(each.sum(), observed.sum(), params.detach())

    # -- distributions in scaled units -----------------------------------------------------
    def _distribution(self, params: Tensor):
        mu, sigma = params[..., 0], F.softplus(params[..., 1]) + MIN_SCALE
        if self.kind == "normal":
            return torch.distributions.Normal(mu, sigma)
        df = 2.0 + F.softplus(params[..., 2])
        return torch.distributions.StudentT(df, mu, sigma)

    @staticmethod
    def _negbin(params: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        """Mean in counts and dispersion alpha (variance = mu + alpha mu^2)."""
        return (F.softplus(params[..., 0]) * scale + 1e-6,
                F.softplus(params[..., 1]) + 1e-4)

    # -- what a forecast reports, in the series' own units ---------------------------------
    def point(self, params: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
        """(B, H, K) point forecast: the mean (the median for ``mae`` and ``quantile``)."""
        params = params.float()
        if self.kind == "quantile":
            return self.quantiles(params, [0.5], loc, scale)[..., 0]
        if self.kind == "negbin":
            return self._negbin(params, scale[:, None, :].float())[0]
        return params[..., 0] * scale[:, None, :] + loc[:, None, :]

    def quantiles(self, params: Tensor, levels, loc: Tensor, scale: Tensor, *,
                  generator: torch.Generator | None = None) -> Tensor:
        """(B, H, K, Q) the forecast's quantiles at ``levels`` (in (0, 1)).

        Exact for ``normal``; from ``samples`` draws for ``student_t`` and ``negbin``;
        linear between the learnt levels for ``quantile`` (a level outside them is an
        error, naming them).
        """
        if not self.probabilistic:
            raise ConfigError(f"a forecast trained with loss {self.kind!r} gives points, not "
                              "intervals; train with normal, student_t, negbin or quantile")
        params = params.float()
        p = torch.tensor([float(v) for v in levels], device=params.device)
        loc4, scale4 = loc[:, None, :, None].float(), scale[:, None, :, None].float()
        if self.kind == "normal":
            dist = self._distribution(params)
            z = torch.distributions.Normal(0.0, 1.0).icdf(p)
            return (dist.loc.unsqueeze(-1) + dist.scale.unsqueeze(-1) * z) * scale4 + loc4
        if self.kind == "quantile":
            known = torch.tensor(self.levels, device=params.device)
            if (p < known[0] - 1e-9).any() or (p > known[-1] + 1e-9).any():
                raise ConfigError(f"quantile level(s) {[float(v) for v in p]} lie outside the "
                                  f"learnt levels {list(self.levels)}; train with "
                                  "task_options.quantiles covering them")
            values = params.sort(-1).values
            hi = torch.searchsorted(known, p).clamp(1, len(known) - 1)
            lo = hi - 1
            w = ((p - known[lo]) / (known[hi] - known[lo])).clamp(0, 1)
            out = values[..., lo] * (1 - w) + values[..., hi] * w
            return out * scale4 + loc4
        draws = self.sample(params, self.samples, loc, scale, generator=generator)  # (N, B, H, K)
        return torch.quantile(draws, p, dim=0).permute(1, 2, 3, 0)

    def sample(self, params: Tensor, n: int, loc: Tensor, scale: Tensor, *,
               generator: torch.Generator | None = None) -> Tensor:
        """(n, B, H, K) draws from the forecast distribution, each horizon step drawn
        independently (a direct forecast has no joint law across steps)."""
        params = params.float()
        if generator is None:
            generator = torch.Generator(device=params.device).manual_seed(0)
        shape = (n, *params.shape[:3])
        loc3, scale3 = loc[:, None, :].float(), scale[:, None, :].float()
        if self.kind == "negbin":
            mu, alpha = self._negbin(params, scale3)
            r = 1.0 / alpha
            rate = torch._standard_gamma(r.expand(shape).contiguous(), generator=generator) * (mu / r)
            return torch.poisson(rate, generator=generator)
        if self.kind == "quantile":
            u = torch.rand(shape, generator=generator, device=params.device)
            lo, hi = self.levels[0], self.levels[-1]
            u = lo + (hi - lo) * u  # the learnt range: nothing beyond its outer quantiles
            flat = self.quantiles(params, torch.linspace(lo, hi, 101).tolist(), loc, scale)
            index = ((u - lo) / (hi - lo) * 100).round().long()  # (n, B, H, K)
            return torch.gather(flat.unsqueeze(0).expand(n, *flat.shape), -1,
                                index.unsqueeze(-1)).squeeze(-1)
        if self.kind in ("mse", "mae"):
            raise ConfigError(f"a forecast trained with loss {self.kind!r} has no distribution "
                              "to sample")
        dist = self._distribution(params)
        if self.kind == "normal":
            eps = torch.randn(shape, generator=generator, device=params.device)
        else:  # Student-t as a normal over the square root of a scaled chi-square
            df = dist.df.expand(shape).contiguous()
            chi2 = 2.0 * torch._standard_gamma(df / 2.0, generator=generator)
            eps = torch.randn(shape, generator=generator, device=params.device) / torch.sqrt(chi2 / df)
        return (dist.loc + dist.scale * eps) * scale3 + loc3


def crps_from_quantiles(quantiles: Tensor, levels, y: Tensor) -> Tensor:
    """The CRPS approximated by twice the mean pinball loss over ``levels`` (quantiles
    (..., Q) of forecasts of ``y`` (...)); per element."""
    level = torch.tensor([float(v) for v in levels], device=quantiles.device)
    error = y.unsqueeze(-1) - quantiles
    return 2.0 * torch.maximum(level * error, (level - 1) * error).mean(-1)


def interval_levels(levels) -> list[float]:
    """The quantile levels of the central intervals at ``levels`` percent: lo then hi."""
    out = []
    for level in levels:
        out += [(1 - level / 100) / 2, (1 + level / 100) / 2]
    return out


CRPS_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95

__all__ = ["CRPS_LEVELS", "DEFAULT_QUANTILES", "ForecastHead", "N_PARAMS", "check_quantiles",
           "crps_from_quantiles", "interval_levels"]
