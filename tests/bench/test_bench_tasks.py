"""The long-range task suite and the ``synthetic`` task it trains."""

import csv

import pytest
import torch

import seqlab
from seqlab.bench import tasks as bench
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


# -- the synthetic task ------------------------------------------------------------------

def test_train_batches_are_a_pure_function_of_the_step():
    a, b = SyntheticTask(synthetic_config()), SyntheticTask(synthetic_config())
    assert all(torch.equal(x, y) for x, y in zip(a.train_batch(5, 0), b.train_batch(5, 0)))
    assert not torch.equal(a.train_batch(5, 0)[0], a.train_batch(5, 1)[0])
    assert not torch.equal(a.train_batch(5, 0)[0], a.train_batch(6, 0)[0])


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


# -- the bench ---------------------------------------------------------------------------

def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_bench_writes_csv_markdown_and_plot(tmp_path):
    lines = []
    rows = bench.run_task_bench(["lstm", "attention"], [32], ["copy", "induction"],
                                budget="tiny", out_dir=tmp_path, progress=lines.append)
    assert [(r["task"], r["mixer"]) for r in rows] == [
        ("copy", "lstm"), ("copy", "attention"), ("induction", "lstm"), ("induction", "attention")]
    assert all(r["status"] == "ok" for r in rows) and len(lines) == 4
    table = read_csv(tmp_path / "results.csv")
    assert list(table[0]) == bench.COLUMNS and len(table) == 4
    for row in table:
        assert 0 <= float(row["accuracy"]) <= 1 and int(row["params"]) > 0
        assert (row["accuracy@8x"] != "") == (row["task"] == "induction")
        assert (tmp_path / row["run_dir"] / "model.safetensors").exists()
    md = (tmp_path / "results.md").read_text()
    assert "## copy" in md and "| mixer | L=32 |" in md and "beyond the training length" in md
    assert (tmp_path / "accuracy_vs_length.png").read_bytes()[:4] == b"\x89PNG"


def test_parameter_budgets_match():
    spec = bench.BUDGETS["small"]
    for mixer in ["lstm", "gru"]:
        d, params, target = bench.match_width(mixer, "copy", 64, spec)
        assert d % 8 == 0 and abs(params - target) <= bench.PARAM_TOLERANCE * target


def test_unknown_mixer_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown mixer 'lstn'"):
        bench.run_task_bench(["lstn"], [32], ["copy"], budget="tiny", out_dir=tmp_path)
    with pytest.raises(ConfigError, match="budget"):
        bench.run_task_bench(["lstm"], [32], ["copy"], budget="huge", out_dir=tmp_path)
    assert not (tmp_path / "results.csv").exists()


def test_oom_and_errors_are_recorded_and_the_bench_goes_on(tmp_path, monkeypatch):
    real = bench.train_one

    def failing(config, run_dir):
        if config.model.mixer == "gru":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        if config.model.mixer == "rnn":
            raise RuntimeError("boom\nsecond line")
        return real(config, run_dir)

    monkeypatch.setattr(bench, "train_one", failing)
    rows = bench.run_task_bench(["gru", "rnn", "lstm"], [32], ["copy"], budget="tiny",
                                out_dir=tmp_path)
    assert [r["status"] for r in rows] == ["OOM", "error: RuntimeError: boom", "ok"]
    table = read_csv(tmp_path / "results.csv")
    assert [r["status"] for r in table] == ["OOM", "error: RuntimeError: boom", "ok"]
    assert "| gru | OOM |" in (tmp_path / "results.md").read_text()
