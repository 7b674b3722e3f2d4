"""LoRA fine-tuning: adapters start as the base, follow x W^T + b + scale (x A^T) B^T in
values and gradients (frozen weights get none) and merge into it exactly; a LoRA run
trains only adapters and head, saves only them with its base's digest, loads, resumes
exactly, refuses a changed base, merges into a standalone run and exports merged."""

import json

import pytest
import torch
from torch import nn

import seqlab
from seqlab.config import RunConfig
from seqlab.errors import CheckpointError, ConfigError
from seqlab.export import ExportedModel, export_run
from seqlab.models.lora import LoRALinear, apply_lora, lora_reference
from seqlab.tasks.causal_lm import build_language_model
from seqlab.train.checkpoint import CheckpointManager
from seqlab.train.trainer import Trainer
from seqlab.weights_file import load_weights


def test_an_adapter_starts_as_its_base_and_merges_exactly():
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    lora = LoRALinear(base, rank=2, alpha=4.0)
    x = torch.randn(5, 8)
    assert torch.equal(lora(x), base(x))  # B starts at zero
    assert lora.weight is base.weight  # the same parameter, under the same name
    with torch.no_grad():
        lora.lora_B.normal_()
    assert torch.allclose(lora.merged()(x), lora(x), atol=1e-6)
    assert not torch.allclose(lora(x), base(x))


@pytest.mark.parametrize("shape, bias, train_base, rank, alpha", [
    # N >= in rows take the merged-weight path, fewer the in-place addmm_ path
    ((2, 5, 8), True, False, 2, 4.0),  # (B, T, D) through a frozen base, scale 2; merged
    ((7, 8), False, False, 3, 5.0),  # no bias, scale 5/3 (not a power of two); addmm_
    ((2, 3, 8), True, True, 2, 3.0),  # a base that trains too (lora.train matching it); addmm_
    ((4, 6, 8), False, True, 3, 5.0),  # the same, merged, no bias
])
def test_an_adapter_follows_the_formula_in_values_and_gradients(shape, bias, train_base, rank, alpha):
    torch.manual_seed(0)
    lora = LoRALinear(nn.Linear(8, 6, bias=bias), rank=rank, alpha=alpha)
    with torch.no_grad():
        lora.lora_B.normal_()  # nonzero, so the low-rank term counts
    for p in (lora.weight, lora.bias):
        if p is not None:
            p.requires_grad_(train_base)
    W, b = lora.weight.detach().clone(), None if lora.bias is None else lora.bias.detach().clone()
    A, B = lora.lora_A.detach().clone(), lora.lora_B.detach().clone()
    for t in (W, b, A, B):
        if t is not None:
            t.requires_grad_(True)
    x = torch.randn(*shape, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    weights = torch.randn(*shape[:-1], 6)  # a loss whose gradient differs per element

    y = lora(x)
    y_ref = x_ref @ W.T + (0 if b is None else b) + (alpha / rank) * (x_ref @ A.T) @ B.T
    torch.testing.assert_close(y, y_ref)
    (y * weights).sum().backward()
    (y_ref * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(lora.lora_A.grad, A.grad)
    torch.testing.assert_close(lora.lora_B.grad, B.grad)
    if train_base:
        torch.testing.assert_close(lora.weight.grad, W.grad)
        if b is not None:
            torch.testing.assert_close(lora.bias.grad, b.grad)
    else:
        assert lora.weight.grad is None and (lora.bias is None or lora.bias.grad is None)
    with torch.no_grad():
        torch.testing.assert_close(lora.merged()(x), y)


def test_an_adapter_under_dropout_or_autocast_takes_the_plain_path():
    torch.manual_seed(0)
    lora = LoRALinear(nn.Linear(8, 6), rank=2, alpha=4.0, dropout=0.5)
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(4, 8)
    plain = lora_reference(x, lora.weight, lora.bias, lora.lora_A, lora.lora_B, lora.scale)
    torch.testing.assert_close(lora.eval()(x), plain)  # eval: dropout is off, the fast path
    torch.manual_seed(1)
    dropped = lora.train()(x)
    torch.manual_seed(1)
    torch.testing.assert_close(dropped, lora_reference(x, lora.weight, lora.bias, lora.lora_A,
                                                       lora.lora_B, lora.scale, dropout=lora.lora_dropout))
    assert not torch.allclose(dropped, plain)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = lora.eval()(x)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), plain, atol=5e-2, rtol=5e-2)


def test_adapted_models_give_frozen_weights_no_gradients():
    config = RunConfig.from_dict({"model": {"preset": "gpt-tiny", "vocab_size": 11, "d_model": 32,
                                            "n_layers": 2, "context_length": 8}})
    torch.manual_seed(0)
    model = build_language_model(config)
    apply_lora(model, rank=2, alpha=4, dropout=0.0, targets=config.lora.targets, train=[])
    ids = torch.randint(0, 11, (2, 8))
    model(ids, targets=ids).loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (".lora_" in name), name


def test_targets_that_match_nothing_are_refused():
    model = nn.Sequential(nn.LSTM(4, 4))
    with pytest.raises(ConfigError, match="match no Linear module of this model"):
        apply_lora(model, rank=2, alpha=4, dropout=0, targets=["*.q_proj"], train=[])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora")
    (folder / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog. " * 40)
    rows = [{"text": ("ab" if i % 2 else "cd") * (1 + i % 5), "label": str(i % 2)} for i in range(48)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = RunConfig.from_dict({
        "task": "masked_lm", "seed": 0,
        "model": {"mixer": "attention", "d_model": 32, "n_layers": 2, "n_heads": 4, "causal": False,
                  "context_length": 24, "position": "rope"},
        "data": {"source": "examples", "path": str(folder / "train.jsonl")},
        "train": {"steps": 4, "batch_size": 8, "eval_every": 4, "progress": False, "num_threads": 1}})
    seqlab.fit(base, folder / "base")
    return folder


def classify(data, **train):
    return RunConfig.from_dict({
        "task": "classify", "seed": 1,
        "model": {"mixer": "attention", "d_model": 32, "n_layers": 2, "n_heads": 4, "causal": False,
                  "context_length": 24, "position": "rope", "dropout": 0.1},
        "data": {"source": "examples", "path": str(data / "train.jsonl")},
        "lora": {"rank": 4, "dropout": 0.1},
        "train": {"steps": 6, "batch_size": 8, "lr": 1e-2, "eval_every": 3, "progress": False,
                  "num_threads": 1, **train}})


def test_a_lora_run_trains_and_keeps_only_adapters_and_head(data, tmp_path):
    result = seqlab.finetune(classify(data), tmp_path / "run", from_run=data / "base", mode="lora")
    saved, meta = load_weights(tmp_path / "run" / "model.safetensors")
    assert saved and all(".lora_" in n or n.startswith("head.") for n in saved)
    assert meta["lora_base_sha256"]
    base, _ = load_weights(data / "base" / "model.safetensors")
    pipeline = seqlab.load(tmp_path / "run")
    own = dict(pipeline.model.state_dict())
    assert torch.equal(own["backbone.blocks.0.mixer.q_proj.weight"], base["backbone.blocks.0.mixer.q_proj.weight"])
    assert any(bool(saved[n].abs().sum()) for n in saved if n.endswith("lora_B"))  # adapters moved
    again = pipeline.evaluate()
    assert again["val_loss"] == pytest.approx(result.metrics["val_loss"], rel=1e-5)


def test_a_lora_run_resumes_exactly(data, tmp_path):
    config = seqlab.api.finetune_config(classify(data), data / "base", mode="lora")
    Trainer(config, tmp_path / "straight").fit()
    Trainer(config, tmp_path / "resumed").fit(until_step=3)
    Trainer(config, tmp_path / "resumed", resume=True).fit()
    a = CheckpointManager(tmp_path / "straight" / "trainer").load_latest().model
    b = CheckpointManager(tmp_path / "resumed" / "trainer").load_latest().model
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_merge_gives_a_standalone_run_with_the_same_outputs_and_export_merges(data, tmp_path):
    seqlab.finetune(classify(data), tmp_path / "run", from_run=data / "base", mode="lora")
    seqlab.merge(tmp_path / "run", tmp_path / "merged")
    adapted, merged = seqlab.load(tmp_path / "run"), seqlab.load(tmp_path / "merged")
    assert not any(isinstance(m, LoRALinear) for m in merged.model.modules())
    assert merged.config.lora.rank == 0 and merged.config.init.run is None
    ids = torch.randint(0, adapted.config.model.vocab_size, (3, 9))
    with torch.no_grad():
        assert torch.allclose(merged.model(ids).logits, adapted.model(ids).logits, atol=1e-5)
    export_run(tmp_path / "run", tmp_path / "pt2", fmt="torch-export")
    with torch.no_grad():
        assert torch.allclose(ExportedModel(tmp_path / "pt2").forward(ids), adapted.model(ids).logits,
                              atol=1e-5)
    with pytest.raises(ConfigError, match="is not a LoRA run"):
        seqlab.merge(tmp_path / "merged", tmp_path / "again")


def test_a_changed_or_missing_base_is_refused(data, tmp_path):
    import shutil

    shutil.copytree(data / "base", tmp_path / "base")
    config = classify(data)
    seqlab.finetune(config, tmp_path / "run", from_run=tmp_path / "base", mode="lora")
    tensors, meta = load_weights(tmp_path / "base" / "model.safetensors")
    tensors["backbone.embed.weight"] = tensors["backbone.embed.weight"] + 1
    from seqlab.weights_file import save_weights

    save_weights(tmp_path / "base" / "model.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="now has other weights than the ones its adapters"):
        seqlab.load(tmp_path / "run")
    shutil.rmtree(tmp_path / "base")
    with pytest.raises(CheckpointError, match="holds LoRA adapters over the run .* is not there"):
        seqlab.load(tmp_path / "run")


def test_lora_needs_a_base_run(data, tmp_path):
    with pytest.raises(ConfigError, match="lora adapts a trained run: set init.run"):
        Trainer(classify(data), tmp_path / "run").fit()
