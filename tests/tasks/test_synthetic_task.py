"""The ``synthetic`` task: seeded batches, metrics at several lengths, regression
inputs, exact resume, bidirectional encoders, option errors, and learning."""

import pytest
import torch

import seqlab
from seqlab.config import RunConfig
from seqlab.errors import ConfigError
from seqlab.tasks.synthetic import SyntheticTask
from seqlab.train.checkpoint import CheckpointManager
from seqlab.train.trainer import Trainer


COPY = {"name": "copy", "length": 12, "n_copy": 3, "n_tokens": 4}


def synthetic_config(steps=4, mixer="lstm", causal=True, **task):
    """A tiny run; ``task`` overrides the task options (a small copy task by default)."""
    base = COPY if task.get("name", "copy") == "copy" else {}
    return RunConfig.from_dict({
        "task": "synthetic", "seed": 1,
        "task_options": {**base, "eval_examples": 32, **task},
        "model": {"mixer": mixer, "d_model": 32, "n_layers": 1, "n_heads": 4, "causal": causal,
                  "position": "rope" if mixer == "attention" else "none"},
        "train": {"steps": steps, "batch_size": 8, "lr": 1e-2, "warmup_steps": 2,
                  "weight_decay": 0.0, "eval_every": steps, "log_every": 1, "progress": False,
                  "num_threads": 1},
    })


def test_train_batches_are_a_pure_function_of_the_step():
    a, b = SyntheticTask(synthetic_config()), SyntheticTask(synthetic_config())
    x, y = a.train_batch(5, 0), b.train_batch(5, 0)
    assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)
    assert torch.equal(x.extras["scored"], y.extras["scored"])
    assert not torch.equal(a.train_batch(5, 0).inputs, a.train_batch(5, 1).inputs)
    assert not torch.equal(a.train_batch(5, 0).inputs, a.train_batch(6, 0).inputs)


def test_metrics_at_every_eval_length_and_load(tmp_path):
    config = synthetic_config(name="induction", length=10, eval_lengths=[10, 20, 40],
                              eval_examples=16)
    result = Trainer(config, tmp_path / "run").fit()
    wanted = {"val_loss", "accuracy", "accuracy@10", "accuracy@20", "accuracy@40"}
    assert wanted <= set(result.metrics)
    pipeline = seqlab.load(tmp_path / "run")
    assert pipeline.config.model.vocab_size == 17 and pipeline.model.causal
    assert set(pipeline.evaluate(40, examples=4)) == {"loss", "accuracy"}


def test_adding_is_regression_on_features(tmp_path):
    config = synthetic_config(name="adding", length=16)
    result = Trainer(config, tmp_path / "run").fit()
    assert {"val_loss", "accuracy", "mse"} <= set(result.metrics)
    assert result.metrics["val_loss"] == pytest.approx(result.metrics["mse"], rel=1e-5)
    saved = RunConfig.from_yaml(tmp_path / "run" / "config.yaml").model
    assert (saved.input, saved.input_dim) == ("features", 2)


def test_exact_resume(tmp_path):
    config = synthetic_config(steps=6)
    Trainer(config, tmp_path / "once").fit()
    Trainer(config, tmp_path / "twice").fit(until_step=3)
    Trainer(config, tmp_path / "twice", resume=True).fit()
    a = CheckpointManager(tmp_path / "once" / "trainer").load_latest().model
    b = CheckpointManager(tmp_path / "twice" / "trainer").load_latest().model
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bidirectional_encoder_trains(tmp_path):
    result = Trainer(synthetic_config(causal=False), tmp_path / "run").fit()
    assert 0.0 <= result.metrics["accuracy"] <= 1.0


@pytest.mark.parametrize("options, match", [
    ({"lenght": 12}, "did you mean 'length'"),
    ({"name": "coppy"}, "did you mean 'copy'"),
    ({"length": 4}, "length >= 7"),
    ({"eval_lengths": [12, 0]}, "eval_lengths"),
])
def test_bad_task_options_are_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        SyntheticTask(synthetic_config(**options))


def test_lstm_learns_copy_above_chance(tmp_path):
    config = synthetic_config(steps=60, length=8, n_copy=3, n_tokens=4, eval_examples=64)
    config.train.batch_size = 32
    result = Trainer(config, tmp_path / "run").fit()
    assert result.metrics["accuracy"] > 0.45  # chance is 0.25
