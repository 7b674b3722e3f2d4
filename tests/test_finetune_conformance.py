"""The conformance suite over fine-tuning: each mode (full, frozen, lora) and each
mitigation of forgetting (replay, L2-SP, EWC), started from a pre-trained masked-LM run,
resumes exactly, trains on 2 ranks as on 1, loads through ``seqlab.load`` and is served
with the predictions the Python call gives, and exports to ONNX with equal outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from starlette.testclient import TestClient

import seqlab
from seqlab.api import finetune_config
from seqlab.config import RunConfig
from seqlab.export import ExportedModel, export_run
from seqlab.serve.app import Service, create_app
from seqlab.train.trainer import Trainer
from tests.helpers.two_ranks import train_all
from tests.test_objective_conformance import TRAIN, data, examples_config, final, text_config  # noqa: F401

# name: (fine-tuning mode, extra overrides)
CASES = {
    "full": ("full", []),
    "frozen": ("frozen", []),
    "lora": ("lora", ["lora.rank=4"]),
    "replay": ("full", ["init.replay=0.5"]),
    "l2sp": ("full", ["init.penalty=0.1"]),
    "ewc": ("full", ["init.ewc=10.0", "init.ewc_batches=2"]),
}
# Attention only, so that every case exports (which mixers export is tests/test_export.py's).
MODEL = {"mixer": "attention", "d_model": 16, "n_layers": 2, "n_heads": 2, "causal": False,
         "context_length": 24, "position": "rope", "dropout": 0.1}


@pytest.fixture(scope="module")
def base(data, tmp_path_factory) -> Path:
    """A masked-LM run on the shared corpus: the pre-trained backbone every case starts from."""
    run = tmp_path_factory.mktemp("base") / "run"
    seqlab.fit(RunConfig.from_dict({**text_config(data, "masked_lm", causal=False),
                                    "model": MODEL}), run)
    return run


def config_for(name: str, data: Path, base: Path, *overrides: str) -> RunConfig:
    mode, extra = CASES[name]
    config = examples_config(data, "classify")
    config["model"] = MODEL
    return finetune_config(RunConfig.from_dict(config).replace(extra + list(overrides)), base,
                           mode=mode)


@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_resume(name, data, base, tmp_path):
    config = config_for(name, data, base)
    Trainer(config, tmp_path / "straight").fit()
    Trainer(config, tmp_path / "resumed").fit(until_step=2)
    Trainer(config, tmp_path / "resumed", resume=True).fit()
    a, b = final(tmp_path / "straight"), final(tmp_path / "resumed")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def two_ranks(data, base, tmp_path_factory) -> dict:
    """Every case trained on 2 ranks, all in one torchrun launch."""
    return train_all({name: config_for(name, data, base, "model.dropout=0.0") for name in CASES},
                     tmp_path_factory.mktemp("two-ranks"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_ranks_train_as_one(name, data, base, two_ranks, tmp_path):
    Trainer(config_for(name, data, base, "model.dropout=0.0"), tmp_path / "one").fit()
    two, error = two_ranks[name]
    assert error is None, error
    a, b = final(tmp_path / "one"), final(two)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-4, worst


@pytest.mark.parametrize("name", sorted(CASES))
def test_load_serve_and_export(name, data, base, tmp_path):
    result = seqlab.fit(config_for(name, data, base), tmp_path / "run")
    assert "pretrain/forgetting" in result.metrics
    pipeline = seqlab.load(tmp_path / "run")
    again = pipeline.evaluate(max_batches=TRAIN["eval_batches"])
    assert again["val_loss"] == pytest.approx(result.best, rel=1e-5)  # the weights kept
    with TestClient(create_app(Service(tmp_path / "run"))) as client:
        response = client.post("/v1/predict", json={"texts": ["axxa", "bbz"]})
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == pipeline.predict(["axxa", "bbz"])
    export_run(tmp_path / "run", tmp_path / "onnx", fmt="onnx")
    ids = torch.randint(4, 200, (3, 7))
    with torch.no_grad():
        assert torch.allclose(ExportedModel(tmp_path / "onnx").forward(ids),
                              pipeline.model(ids).logits, atol=1e-4)
