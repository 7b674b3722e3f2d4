"""Trainer: run layout, exact resume (with a negative control), interrupts, errors."""

import errno
import json
import os
import signal

import pytest
import torch

from seqlab.config import RunConfig
from seqlab.errors import CheckpointError, TrainingError
from seqlab.train import checkpoint as checkpoint_module
from seqlab.train.checkpoint import CheckpointManager, load_weights
from seqlab.train.metrics import MetricsLog
from seqlab.train.trainer import Trainer


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    text = "the quick brown fox jumps over the lazy dog. " * 40
    for i in range(3):
        (folder / f"doc{i}.txt").write_text(f"document {i}: " + text)
    return folder


def tiny_config(corpus, **train):
    return RunConfig.from_dict({
        "seed": 3,
        "model": {"mixer": ["attention", "lstm"], "d_model": 32, "n_layers": 2, "n_heads": 4,
                  "context_length": 16, "dropout": 0.1, "position": "rope"},
        "data": {"path": str(corpus), "val_fraction": 0.2},
        "train": {"steps": 8, "batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "eval_every": 4,
                  "eval_batches": 2, "log_every": 2, "progress": False, **train},
    })


def final_weights(run_dir):
    ckpt = CheckpointManager(run_dir / "trainer").load_latest()
    return ckpt.step, ckpt.model


def test_run_directory_layout(corpus, tmp_path):
    run = tmp_path / "run"
    result = Trainer(tiny_config(corpus), run).fit()
    assert result.step == 8 and not result.interrupted
    names = {p.name for p in run.iterdir()}
    assert names == {"config.yaml", "model.safetensors", "tokenizer.json", "trainer",
                     "metrics.jsonl", "plots"}
    assert (run / "plots" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2, 4, 6, 8]
    assert {"val_loss", "perplexity", "bits_per_byte"} <= set(records[-1])
    assert result.metrics["perplexity"] == pytest.approx(torch.tensor(result.metrics["val_loss"]).exp().item(), rel=1e-5)
    assert RunConfig.from_yaml(run / "config.yaml").model.vocab_size == 259
    tensors, meta = load_weights(run / "model.safetensors")
    assert "backbone.embed.weight" in tensors and "head.proj.weight" not in tensors  # tied


@pytest.mark.parametrize("accum", [1, 2])
def test_exact_resume_is_bit_identical(corpus, tmp_path, accum):
    config = tiny_config(corpus, grad_accum=accum)
    Trainer(config, tmp_path / "once").fit()
    Trainer(config, tmp_path / "twice").fit(until_step=4)
    assert CheckpointManager(tmp_path / "twice" / "trainer").latest_step() == 4
    Trainer(config, tmp_path / "twice", resume=True).fit()
    (s1, a), (s2, b) = final_weights(tmp_path / "once"), final_weights(tmp_path / "twice")
    assert s1 == s2 == 8
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_rng_state_breaks_equality(corpus, tmp_path):
    """Negative control: proves the exact-resume test can fail (dropout draws differ)."""
    config = tiny_config(corpus)
    Trainer(config, tmp_path / "once").fit()
    Trainer(config, tmp_path / "twice").fit(until_step=4)
    torch.manual_seed(12345)
    Trainer(config, tmp_path / "twice", resume=True, restore_rng=False).fit()
    (_, a), (_, b) = final_weights(tmp_path / "once"), final_weights(tmp_path / "twice")
    assert not all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_and_resume_finishes_exactly(corpus, tmp_path,
                                                                          monkeypatch, sig):
    config = tiny_config(corpus)
    Trainer(config, tmp_path / "straight").fit()
    trainer = Trainer(config, tmp_path / "run")
    original = trainer.task.train_batch

    def interrupting(step, micro):
        if step == 2:
            os.kill(os.getpid(), sig)  # arrives mid-step: the step finishes, then a save
        return original(step, micro)

    def unhandled(signum, frame):  # what runs if the trainer does not catch the signal
        raise AssertionError(f"{signal.Signals(signum).name} was not handled by the trainer")

    monkeypatch.setattr(trainer.task, "train_batch", interrupting)
    previous = signal.signal(sig, unhandled)
    try:
        result = trainer.fit()
        assert signal.getsignal(sig) is unhandled  # the trainer put the handler back
    finally:
        signal.signal(sig, previous)
    assert result.interrupted and result.step == 3
    assert CheckpointManager(tmp_path / "run" / "trainer").latest_step() == 3
    result = Trainer(config, tmp_path / "run", resume=True).fit()
    assert result.step == 8 and not result.interrupted
    step, weights = final_weights(tmp_path / "run")
    _, straight = final_weights(tmp_path / "straight")
    assert step == 8 and all(torch.equal(weights[k], straight[k]) for k in straight)


def test_non_finite_loss_stops_naming_the_step(corpus, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(corpus), tmp_path / "run")
    original = type(trainer.task).loss

    def bad_loss(self, model, batch):
        result = original(self, model, batch)
        if trainer.step == 5:
            result.total = result.total * float("nan")
        return result

    monkeypatch.setattr(type(trainer.task), "loss", bad_loss)
    with pytest.raises(TrainingError, match="loss became nan at step 6.*step 4 is intact"):
        trainer.fit()


@pytest.mark.parametrize("flush", [True, False])
def test_denormals_flush_during_training_only(corpus, tmp_path, monkeypatch, flush):
    trainer = Trainer(tiny_config(corpus, steps=2, flush_denormal=flush), tmp_path / "run")
    original, seen = type(trainer.task).loss, []

    def loss(self, model, batch):
        seen.append((torch.tensor(1e-39) * 1.0).item())  # a float32 denormal
        return original(self, model, batch)

    monkeypatch.setattr(type(trainer.task), "loss", loss)
    trainer.fit()
    if torch.set_flush_denormal(False):  # the platform supports flushing
        assert len(seen) >= 2 and (all(v == 0 for v in seen) if flush else all(v > 0 for v in seen))
    assert (torch.tensor(1e-39) * 1.0).item() > 0  # restored afterwards


def test_bf16_autocast_trains(corpus, tmp_path):
    result = Trainer(tiny_config(corpus, precision="bf16", steps=4), tmp_path / "run").fit()
    assert torch.isfinite(torch.tensor(result.metrics["val_loss"]))


def test_existing_run_is_never_overwritten(corpus, tmp_path):
    Trainer(tiny_config(corpus, steps=2), tmp_path / "run").fit()
    with pytest.raises(CheckpointError, match="already holds a run; pass --resume"):
        Trainer(tiny_config(corpus), tmp_path / "run").fit()


def test_stale_temporary_files_are_removed_at_the_next_start(corpus, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(corpus, steps=2), run).fit()
    stale = [run / ".tmp-model.safetensors.abc123", run / "plots" / ".tmp-loss.png.x",
             run / "trainer" / ".tmp-step-00000004-999"]
    stale[0].write_bytes(b"torn")
    stale[1].write_bytes(b"torn")
    stale[2].mkdir()
    Trainer(tiny_config(corpus, steps=4), run, resume=True).fit()
    assert not any(p.exists() for p in stale)


def test_resume_with_a_different_model_names_the_keys(corpus, tmp_path):
    from seqlab.errors import ConfigError

    Trainer(tiny_config(corpus, steps=2), tmp_path / "run").fit()
    changed = tiny_config(corpus, steps=4).replace(["model.d_model=64"])
    with pytest.raises(ConfigError, match="model.d_model: run has 32, config has 64"):
        Trainer(changed, tmp_path / "run", resume=True).fit()
    longer = tiny_config(corpus, steps=4).replace(["train.lr=1e-3"])  # train.* may change
    assert Trainer(longer, tmp_path / "run", resume=True).fit().step == 4


def test_a_run_that_never_saved_can_be_started_again(corpus, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task: causal_lm\n")
    (run / "metrics.jsonl").write_text('{"step": 7, "loss": 1.0}\n')
    Trainer(tiny_config(corpus, steps=2), run).fit()
    assert all(r["step"] <= 2 for r in MetricsLog(run / "metrics.jsonl").read())


def test_resume_without_checkpoint(corpus, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist; there is nothing to resume"):
        Trainer(tiny_config(corpus), tmp_path / "nowhere", resume=True).fit()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer(tiny_config(corpus), tmp_path / "empty", resume=True).fit()


def test_corrupt_newest_checkpoint_falls_back_on_resume(corpus, tmp_path, caplog_seqlab):
    config = tiny_config(corpus, keep_checkpoints=2)
    Trainer(config, tmp_path / "run").fit(until_step=4)
    Trainer(config.replace(["train.steps=8"]), tmp_path / "run", resume=True).fit(until_step=6)
    newest = tmp_path / "run" / "trainer" / "step-00000006" / "model.safetensors"
    data = bytearray(newest.read_bytes())
    data[-5] ^= 0xFF
    newest.write_bytes(bytes(data))
    result = Trainer(config, tmp_path / "run", resume=True).fit()
    assert result.step == 8
    assert any("step-00000006" in r.getMessage() and "falling back" in r.getMessage()
               for r in caplog_seqlab.records)


def test_disk_full_while_saving_keeps_the_old_checkpoint(corpus, tmp_path, monkeypatch):
    config = tiny_config(corpus)
    Trainer(config, tmp_path / "run").fit(until_step=4)
    real_write = checkpoint_module._write_file

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "_write_file", full)
    with pytest.raises(CheckpointError, match="no space left on device.*step 4"):
        Trainer(config, tmp_path / "run", resume=True).fit()
    monkeypatch.setattr(checkpoint_module, "_write_file", real_write)
    assert CheckpointManager(tmp_path / "run" / "trainer").load_latest().step == 4
    assert not [p for p in (tmp_path / "run" / "trainer").iterdir() if p.name.startswith(".tmp-")]


def test_ssm_parameters_listed_by_modules_get_no_weight_decay():
    from seqlab.tasks.causal_lm import build_language_model
    from seqlab.train.optim import build_optimizer

    cfg = RunConfig.from_dict({"model": {"mixer": ["mamba", "s4d"], "position": "none",
                                         "d_model": 32, "n_layers": 2, "vocab_size": 11}})
    model = build_language_model(cfg)
    opt = build_optimizer(model, cfg.train)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    named = dict(model.named_parameters())
    for name in ("backbone.blocks.0.mixer.A_log", "backbone.blocks.1.mixer.log_a_real"):
        assert id(named[name]) not in decayed
    assert id(named["backbone.blocks.0.mixer.in_proj.weight"]) in decayed
