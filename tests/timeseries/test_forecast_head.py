"""The forecast head against references: torch.distributions log-likelihoods, the
pinball loss written out, quantiles against the distributions' own, and missing
targets counting nowhere."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.errors import ConfigError, ShapeError
from seqlab.models.forecast_head import ForecastHead, crps_from_quantiles

B, T, D, H, K = 3, 7, 8, 4, 2


def setup(loss: str, **kw):
    torch.manual_seed(0)
    head = ForecastHead(D, H, K, loss=loss, **kw)
    hidden = torch.randn(B, T, D)
    y = torch.randn(B, H, K)
    loc, scale = torch.randn(B, K), torch.rand(B, K) + 0.5
    return head, hidden, y, loc, scale


def test_the_head_reads_the_last_horizon_positions():
    head, hidden, *_ = setup("normal")
    params = head(hidden)
    assert params.shape == (B, H, K, 2)
    changed = hidden.clone()
    changed[:, :T - H] += 10  # the context positions do not enter the head directly
    torch.testing.assert_close(head(changed), params)
    with pytest.raises(ShapeError, match="last 4 positions"):
        head(hidden[:, :2])


@pytest.mark.parametrize("loss", ["normal", "student_t"])
def test_likelihood_losses_equal_torch_distributions(loss):
    head, hidden, y, loc, scale = setup(loss)
    result = head.loss(hidden, y, loc=loc, scale=scale)
    p = head(hidden)
    sigma = F.softplus(p[..., 1]) + 1e-3
    if loss == "normal":
        ref = torch.distributions.Normal(p[..., 0], sigma)
    else:
        ref = torch.distributions.StudentT(2 + F.softplus(p[..., 2]), p[..., 0], sigma)
    torch.testing.assert_close(result.total, -ref.log_prob(y).sum())
    assert int(result.count) == B * H * K


def test_negative_binomial_equals_torch_on_counts():
    head, hidden, _, _, scale = setup("negbin")
    counts = torch.randint(0, 30, (B, H, K)).float()
    loc = torch.zeros(B, K)
    result = head.loss(hidden, counts / scale[:, None], loc=loc, scale=scale)
    p = head(hidden)
    mu = F.softplus(p[..., 0]) * scale[:, None] + 1e-6
    alpha = F.softplus(p[..., 1]) + 1e-4
    r = 1 / alpha
    ref = torch.distributions.NegativeBinomial(total_count=r, probs=mu / (mu + r))
    torch.testing.assert_close(result.total, -ref.log_prob(counts).sum(), rtol=1e-4, atol=1e-3)


def test_quantile_loss_is_the_mean_pinball_loss():
    levels = [0.1, 0.5, 0.9]
    head, hidden, y, loc, scale = setup("quantile", quantiles=levels)
    result = head.loss(hidden, y, loc=loc, scale=scale)
    q = head(hidden).sort(-1).values
    total = 0.0
    for j, tau in enumerate(levels):
        e = y - q[..., j]
        total = total + torch.where(e >= 0, tau * e, (tau - 1) * e)
    torch.testing.assert_close(result.total, (total / 3).sum())


@pytest.mark.parametrize("loss", ["mse", "mae"])
def test_point_losses(loss):
    head, hidden, y, loc, scale = setup(loss)
    e = head(hidden)[..., 0] - y
    ref = e.square().sum() if loss == "mse" else e.abs().sum()
    torch.testing.assert_close(head.loss(hidden, y, loc=loc, scale=scale).total, ref)
    with pytest.raises(ConfigError, match="gives points, not intervals"):
        head.quantiles(head(hidden), [0.1], loc, scale)


@pytest.mark.parametrize("loss", ["normal", "student_t", "negbin", "quantile", "mse"])
def test_missing_targets_count_nowhere(loss):
    head, hidden, y, loc, scale = setup(loss)
    if loss == "negbin":
        y, loc = y.abs(), torch.zeros(B, K)
    gappy = y.clone()
    gappy[0, 1, 0] = float("nan")
    result = head.loss(hidden, gappy, loc=loc, scale=scale)
    assert int(result.count) == B * H * K - 1 and torch.isfinite(result.total)
    other = gappy.clone()
    other[0, 1, 0] = 0.0
    each = head.loss(hidden, other, loc=loc, scale=scale).total - result.total
    assert each.abs() > 0  # the value at the missing slot was what the difference is about
    result.total.backward()
    assert torch.isfinite(head.proj.weight.grad).all()


def test_normal_quantiles_are_exact_and_in_series_units():
    head, hidden, _, loc, scale = setup("normal")
    p = head(hidden)
    q = head.quantiles(p, [0.1, 0.5, 0.9], loc, scale)
    dist = torch.distributions.Normal(p[..., 0], F.softplus(p[..., 1]) + 1e-3)
    for j, level in enumerate([0.1, 0.5, 0.9]):
        ref = dist.icdf(torch.tensor(level)) * scale[:, None] + loc[:, None]
        torch.testing.assert_close(q[..., j], ref)
    torch.testing.assert_close(head.point(p, loc, scale), q[..., 1])


@pytest.mark.parametrize("loss", ["student_t", "negbin"])
def test_sampled_quantiles_match_the_distribution(loss):
    head, hidden, _, loc, scale = setup(loss, samples=20000)
    if loss == "negbin":
        loc = torch.zeros(B, K)
    p = head(hidden)
    draws = head.sample(p, 20000, loc, scale)
    if loss == "student_t":
        df = 2 + F.softplus(p[..., 2])
        sigma = F.softplus(p[..., 1]) + 1e-3
        ref_mean = p[..., 0] * scale[:, None] + loc[:, None]
        # the median of a Student-t is its location
        median = head.quantiles(p, [0.5], loc, scale)[..., 0]
        torch.testing.assert_close(median, ref_mean, atol=0.05 * float(scale.max() * sigma.max()),
                                   rtol=0)
        assert (df > 2).all()
    else:
        mu = head.point(p, loc, scale)
        torch.testing.assert_close(draws.mean(0), mu, rtol=0.05, atol=0.1)


def test_quantile_head_interpolates_inside_its_levels_only():
    head, hidden, _, loc, scale = setup("quantile", quantiles=[0.1, 0.5, 0.9])
    p = head(hidden)
    q = head.quantiles(p, [0.1, 0.3, 0.5, 0.9], loc, scale)
    torch.testing.assert_close(q[..., 1], (q[..., 0] + q[..., 2]) / 2)
    assert (q.diff(dim=-1) >= 0).all()  # sorted: the quantiles never cross
    with pytest.raises(ConfigError, match=r"outside the learnt levels \[0.1, 0.5, 0.9\]"):
        head.quantiles(p, [0.05], loc, scale)


@settings(max_examples=30, deadline=None)
@given(st.floats(-3, 3), st.floats(0.2, 3))
def test_crps_of_a_normal_approaches_the_closed_form(mu, sigma):
    """Quantile-decomposition CRPS with many levels vs Gneiting & Raftery's formula."""
    levels = torch.linspace(0.005, 0.995, 199)
    dist = torch.distributions.Normal(torch.tensor(mu), torch.tensor(sigma))
    q = dist.icdf(levels)
    y = torch.tensor(0.3)
    z = (y - mu) / sigma
    std = torch.distributions.Normal(0.0, 1.0)
    exact = sigma * (z * (2 * std.cdf(z) - 1) + 2 * std.log_prob(z).exp() - 1 / torch.pi ** 0.5)
    approx = crps_from_quantiles(q, levels.tolist(), y)
    assert float(approx) == pytest.approx(float(exact), rel=0.03, abs=0.01)


def test_bad_options():
    with pytest.raises(ConfigError, match="forecast loss must be one of"):
        ForecastHead(D, H, K, loss="poisson")
    with pytest.raises(ConfigError, match="distinct levels in"):
        ForecastHead(D, H, K, loss="quantile", quantiles=[0.5, 1.5])
