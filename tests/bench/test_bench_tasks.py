"""The long-range task suite (``seqlab bench tasks``)."""

import csv
import dataclasses
import sys

import pytest
import torch

from seqlab.bench import task_results
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


def test_learning_rate_sweep_keeps_every_run_and_shows_each_cells_best(tmp_path):
    from seqlab.cli import main

    assert main(["bench", "tasks", "--mixers", "lstm,attention", "--lengths", "32", "--tasks",
                 "copy", "--budget", "tiny", "--lr", "0.01,0.001", "--out", str(tmp_path),
                 "-q"]) == 0
    table = read_csv(tmp_path / "results.csv")
    assert [(r["mixer"], float(r["lr"])) for r in table] == [
        ("lstm", 0.01), ("lstm", 0.001), ("attention", 0.01), ("attention", 0.001)]
    md = (tmp_path / "results.md").read_text()
    assert "## learning rate of the best run" in md
    for mixer in ("lstm", "attention"):
        runs = [r for r in table if r["mixer"] == mixer]
        assert [r["selected"] for r in runs].count("True") == 1
        best = max(runs, key=lambda r: (float(r["accuracy"]), -float(r["val_loss"])))
        assert best["selected"] == "True"
        assert f"| copy | {mixer} | {float(best['lr']):g} |" in md
        assert f"| {mixer} | {best['accuracy']} |" in md  # the table shows the best run
        assert {r["run_dir"] for r in runs} == {f"runs/copy/{mixer}/L32/lr0.01",
                                                f"runs/copy/{mixer}/L32/lr0.001"}
        for r in runs:
            assert (tmp_path / r["run_dir"] / "model.safetensors").exists()


def test_best_run_of_a_cell():
    def row(status="ok", accuracy="", val_loss="", mse=""):
        return dict(status=status, accuracy=accuracy, val_loss=val_loss, mse=mse)

    rank = bench._rank
    assert rank(row(accuracy=0.1, val_loss=9.0)) > rank(row("OOM"))
    assert rank(row(accuracy=0.5, val_loss=2.0)) > rank(row(accuracy=0.4, val_loss=1.0))
    assert rank(row(accuracy=0.5, val_loss=1.0)) > rank(row(accuracy=0.5, val_loss=2.0))
    assert rank(row(accuracy=0.5, val_loss=9.0, mse=0.1)) > rank(row(accuracy=0.5, val_loss=1.0,
                                                                      mse=0.2))


@pytest.mark.parametrize("lrs, overrides, match", [
    ([], None, "non-empty list of positive"),
    ([1e-3, 0.0], None, "non-empty list of positive"),
    ([1e-3, 1e-3], None, "repeat a value"),
    ([1e-3, 3e-4], {"lr": 1e-2}, "either as a budget override or as a sweep"),
])
def test_bad_learning_rate_sweeps_are_config_errors(tmp_path, lrs, overrides, match):
    with pytest.raises(ConfigError, match=match):
        bench.run_task_bench(["lstm"], [32], ["copy"], budget="tiny", budget_overrides=overrides,
                             lrs=lrs, out_dir=tmp_path)
    assert not (tmp_path / "results.csv").exists()


@pytest.mark.parametrize("overrides, match", [
    ({"stepz": 3}, "unknown budget field 'stepz'"),
    ({"steps": 0}, "steps must be positive"),
])
def test_bad_budget_overrides_are_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        bench.resolve_budget("tiny", overrides)


def test_counting_parameters_leaves_the_config_alone():
    config = bench.run_config("lstm", "copy", 64, 32, bench.BUDGETS["tiny"])
    before = dataclasses.asdict(config.model)
    assert bench.count_params(config) > 0
    assert dataclasses.asdict(config.model) == before and config.model.vocab_size is None


def test_plot_draws_without_pyplot_or_a_backend_switch(tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # importing pyplot fails

    def no_switch(*args, **kwargs):
        raise AssertionError("library code switched the matplotlib backend")

    monkeypatch.setattr(matplotlib, "use", no_switch)
    row = {c: "" for c in bench.COLUMNS}
    row.update(task="copy", mixer="lstm", length=64, status="ok", accuracy=0.5, chance=0.1)
    task_results.plot_results([row], tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


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
