"""Calibrated intervals: the rescaling rule, the fitted factors against a known
mis-scaling, and a forecast run that keeps its factors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import seqlab
from seqlab.errors import DataError
from seqlab.tasks.calibration import CalibratedPredictive, fit_factors


class Normal:
    """A Predictive of independent normals."""

    def __init__(self, mu, sigma):
        self.mu, self.sigma = mu, sigma

    @property
    def point(self):
        return self.mu

    def quantiles(self, levels):
        z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(levels))
        return self.mu.unsqueeze(-1) + self.sigma.unsqueeze(-1) * z


def test_quantiles_are_rescaled_around_the_median_by_width():
    inner = Normal(torch.tensor([[[1.0]]]), torch.tensor([[[2.0]]]))
    calibrated = CalibratedPredictive(inner, {50.0: 1.0, 80.0: 2.0, 95.0: 3.0})
    levels = [0.1, 0.9, 0.25, 0.3, 0.025, 0.5, 0.0625]
    got = calibrated.quantiles(levels)[0, 0, 0]
    raw = inner.quantiles(levels)[0, 0, 0]
    factor = torch.tensor([2.0, 2.0, 1.0, 1.0, 3.0, 1.0, 2.5])  # width 0.875: halfway 80..95
    torch.testing.assert_close(got, 1.0 + factor * (raw - 1.0))
    assert torch.equal(calibrated.point, inner.point)


def test_fitted_factors_undo_a_known_overconfidence():
    g = torch.Generator().manual_seed(0)
    n = 20000
    y = 2.0 * torch.randn(n, generator=g)  # the truth has sigma 2 ...
    model = Normal(torch.zeros(n), torch.ones(n))  # ... the model says 1
    levels = [50.0, 80.0, 95.0]
    q = model.quantiles([0.5, 0.25, 0.75, 0.1, 0.9, 0.025, 0.975])
    factors = fit_factors(q[:, 0], q[:, 1:], y, levels)
    for level in levels:
        assert factors[level] == pytest.approx(2.0, rel=0.05)
    covered = CalibratedPredictive(model, factors).quantiles([0.1, 0.9])
    inside = ((y >= covered[:, 0]) & (y <= covered[:, 1])).float().mean()
    assert float(inside) == pytest.approx(0.80, abs=0.01)
    with pytest.raises(DataError, match="95% interval needs at least 19 validation values"):
        fit_factors(q[:3, 0], q[:3, 1:], y[:3], levels)


def table(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    parts = [pd.DataFrame({"ds": pd.date_range("2022-01-01", periods=n, freq="D"), "id": f"s{s}",
                           "y": 10 + s + np.sin(np.arange(n) / 3) + rng.normal(0, 0.3, n)})
             for s in range(3)]
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("calibrate", [True, False])
def test_a_forecaster_keeps_its_calibration(tmp_path, calibrate):
    f = seqlab.Forecaster("gru", context=16, horizon=4, id="id", steps=30, batch_size=8,
                          d_model=8, n_layers=1, run_dir=tmp_path / "run",
                          **{"train.num_threads": 1, "task_options.calibrate": calibrate})
    f.fit(table(), val_steps=40)
    saved = tmp_path / "run" / "calibration.json"
    assert saved.exists() == calibrate
    out = f.predict()
    if calibrate:
        factors = json.loads(saved.read_text())["factors"]
        assert set(factors) == {"50", "80", "95"}
        loaded = seqlab.load(tmp_path / "run")
        assert loaded.objective.calibration == {float(k): v for k, v in factors.items()}
        pd.testing.assert_frame_equal(loaded.predict(table()), out)
