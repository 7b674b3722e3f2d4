"""``seqlab runs``: listing the runs under a folder and comparing runs, from their files."""

import json
import shutil

import pytest

import seqlab
from seqlab.cli import main
from seqlab.config import RunConfig
from seqlab.runs import comparison, find_runs, listing, summarize
from seqlab.weights_file import load_weights


def config(data, task, **train):
    source = ({"path": str(data / "text.txt")} if task == "causal_lm" else
              {"source": "examples", "path": str(data / "train.jsonl")})
    return RunConfig.from_dict({
        "task": task, "seed": 0,
        "model": {"mixer": "gru", "position": "none", "d_model": 16, "n_layers": 1,
                  "context_length": 16},
        "data": source,
        "train": {"steps": 6, "batch_size": 8, "lr": 1e-2, "warmup_steps": 1, "eval_every": 2,
                  "log_every": 1, "progress": False, "num_threads": 1, **train}})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = tmp_path_factory.mktemp("data")
    rows = [{"text": ("ab" if i % 2 else "cd") * (1 + i % 5), "label": str(i % 2)} for i in range(40)]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "text.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    seqlab.fit(config(data, "classify", best_metric="accuracy"), root / "cls")
    seqlab.fit(config(data, "causal_lm"), root / "group" / "lm")
    seqlab.Trainer(config(data, "causal_lm"), root / "group" / "half").fit(until_step=3)
    (root / "example").mkdir()  # a config alone (an example folder) is not a run
    shutil.copy(root / "cls" / "config.yaml", root / "example" / "config.yaml")
    (root / "notes").mkdir()
    return root


def test_find_runs_lists_run_directories_at_any_depth(runs):
    assert find_runs(runs) == [runs / "cls", runs / "group" / "half", runs / "group" / "lm"]


def test_a_summary_reads_the_kept_evaluation_and_the_size_from_the_files(runs):
    s = summarize(runs / "cls")
    model = seqlab.load(runs / "cls").model
    assert s.task == "classify" and s.best_metric == "accuracy" and s.status == "done"
    assert s.params == sum(p.numel() for p in model.parameters())
    kept = int(load_weights(runs / "cls" / "model.safetensors")[1]["step"])
    evals = [json.loads(line) for line in (runs / "cls" / "metrics.jsonl").read_text().splitlines()
             if "val_loss" in line]
    assert s.best["step"] == kept and s.best["accuracy"] == max(e["accuracy"] for e in evals)
    assert s.last == evals[-1]
    assert summarize(runs / "group" / "half").status == "stopped at 3"


def test_listing_and_comparison_tables(runs):
    text = listing([summarize(r) for r in find_runs(runs)], runs)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["run", "task", "model"] and len(lines) == 2 + 3
    assert "group/half" in text and "stopped at 3" in text and "accuracy" in text
    table = comparison([summarize(runs / "cls"), summarize(runs / "group" / "lm")])
    header = table.splitlines()[0].split()
    assert {"val_loss", "accuracy", "macro_f1", "perplexity"} <= set(header)
    cls_row = table.splitlines()[2].split()
    assert cls_row[header.index("perplexity")] == "-"  # a metric the run does not report


def test_a_torn_metrics_line_does_not_stop_the_listing(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs / "cls", copy)
    with open(copy / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')  # a crash in the middle of a line
    assert summarize(copy).best == summarize(runs / "cls").best


def test_cli_lists_and_compares(runs, tmp_path, capsys):
    assert main(["runs", str(runs), "-q"]) == 0
    assert "group/lm" in capsys.readouterr().out
    plot = tmp_path / "curves.png"
    assert main(["runs", "compare", str(runs / "cls"), str(runs / "group" / "lm"),
                 "--plot", str(plot), "-q"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "perplexity" in out and str(plot) in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["runs", str(tmp_path / "empty_but_real"), "-q"]) == 2  # missing folder
    (tmp_path / "empty").mkdir()
    assert main(["runs", str(tmp_path / "empty"), "-q"]) == 0
    assert "no runs under" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["runs", "compare"], "needs one or more run directories"),
    (["runs", "a", "b"], "takes one folder"),
    (["runs", "compare", "{runs}/notes"], "has no config.yaml"),
    (["runs", "{runs}/missing"], "is not a directory"),
])
def test_cli_errors_are_one_line(runs, capsys, argv, message):
    assert main([a.format(runs=runs) for a in argv] + ["-q"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
