"""The long-range task suite (``seqlab bench tasks``)."""

import csv

import pytest
import torch

from seqlab.bench import tasks as bench
from seqlab.errors import ConfigError


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


def test_budget_overrides_reach_every_run_and_the_table(tmp_path):
    from seqlab.cli import main

    assert main(["bench", "tasks", "--mixers", "lstm", "--lengths", "32", "--tasks", "copy",
                 "--budget", "tiny", "--steps", "5", "--tokens-per-step", "128", "--lr", "0.01",
                 "--out", str(tmp_path), "-q"]) == 0
    (row,) = read_csv(tmp_path / "results.csv")
    assert (row["steps"], row["batch_size"], float(row["lr"])) == ("5", "4", 0.01)
    metrics = (tmp_path / row["run_dir"] / "metrics.jsonl").read_text()
    assert '"step": 5' in metrics and '"step": 6' not in metrics


@pytest.mark.parametrize("overrides, match", [
    ({"stepz": 3}, "unknown budget field 'stepz'"),
    ({"steps": 0}, "steps must be positive"),
])
def test_bad_budget_overrides_are_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        bench.resolve_budget("tiny", overrides)


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
    with pytest.raises(ConfigError, match="length >= 21"):
        bench.run_task_bench(["lstm"], [32, 16], ["copy"], budget="tiny", out_dir=tmp_path)
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
