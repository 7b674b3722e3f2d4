"""``train.best_metric``: which evaluation's weights a run keeps, by a metric the objective
declares with its direction; checked before anything is written, kept across resume."""

import json

import pytest

import seqlab
from seqlab.config import RunConfig
from seqlab.errors import ConfigError
from seqlab.train.trainer import Trainer
from seqlab.weights_file import load_weights

# Evaluations by step: the loss is lowest at step 3, the accuracy highest at step 2 (a
# classifier growing overconfident while it still gets more right).
SCRIPT = {1: {"val_loss": 1.0, "accuracy": 0.5}, 2: {"val_loss": 2.0, "accuracy": 0.8},
          3: {"val_loss": 0.5, "accuracy": 0.6}, 4: {"val_loss": 0.9, "accuracy": 0.7}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("best")
    rows = [{"text": ("ab" if i % 2 else "cd") * (1 + i % 5), "label": str(i % 2),
             "tags": ("B-X I-X " if i % 2 else "O O ") * (1 + i % 5), "y": float(i % 3)}
            for i in range(40)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "text.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    return folder


def config(data, task="classify", **train):
    source = ({"path": str(data / "text.txt")} if task == "causal_lm" else
              {"source": "examples", "path": str(data / "train.jsonl"),
               **({"label_field": {"tag": "tags", "regress": "y"}[task]}
                  if task in ("tag", "regress") else {})})
    return RunConfig.from_dict({
        "task": task, "seed": 0,
        "model": {"mixer": "gru", "position": "none", "d_model": 16, "n_layers": 1,
                  "context_length": 16, "causal": task != "masked_lm"},
        "data": source,
        "train": {"steps": 4, "batch_size": 8, "lr": 1e-2, "warmup_steps": 1, "eval_every": 1,
                  "progress": False, "num_threads": 1, **train}})


def scripted(trainer: Trainer) -> Trainer:
    trainer.objective.evaluators = lambda: {"val": lambda model: dict(SCRIPT[trainer.step])}
    return trainer


def kept_step(run) -> int:
    return int(load_weights(run / "model.safetensors")[1]["step"])


@pytest.mark.parametrize("metric, step, best", [("val_loss", 3, 0.5), ("accuracy", 2, 0.8)])
def test_the_weights_kept_are_those_of_the_best_evaluation(data, tmp_path, metric, step, best):
    result = scripted(Trainer(config(data, best_metric=metric), tmp_path / "run")).fit()
    assert kept_step(tmp_path / "run") == step
    assert result.best == best and result.best_metric == metric
    assert result.best_val_loss == (best if metric == "val_loss" else None)


def test_resume_keeps_the_best_value_of_the_chosen_metric(data, tmp_path):
    run = tmp_path / "run"
    scripted(Trainer(config(data, best_metric="accuracy"), run)).fit(until_step=2)
    assert kept_step(run) == 2
    result = scripted(Trainer(config(data, best_metric="accuracy"), run, resume=True)).fit()
    # 0.6 and 0.7 at steps 3 and 4 do not beat the 0.8 restored from the checkpoint.
    assert kept_step(run) == 2 and result.best == 0.8


def test_resume_that_changes_the_metric_ranks_afresh(data, tmp_path):
    run = tmp_path / "run"
    scripted(Trainer(config(data, best_metric="accuracy"), run)).fit(until_step=2)
    result = scripted(Trainer(config(data, best_metric="val_loss"), run, resume=True)).fit()
    assert kept_step(run) == 3 and result.best == 0.5  # not compared with accuracy's 0.8


def test_an_unknown_metric_is_refused_before_anything_is_written(data, tmp_path):
    with pytest.raises(ConfigError, match=r"'f1'.*valid: accuracy, macro_f1, val_loss"):
        seqlab.fit(config(data, best_metric="f1"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"valid: mae, r2, rmse, val_loss"):
        seqlab.fit(config(data, "regress", best_metric="accuracy"), tmp_path / "run")


@pytest.mark.parametrize("task", ["causal_lm", "masked_lm", "classify", "tag", "regress"])
def test_every_declared_metric_is_reported_and_selectable(data, tmp_path, task):
    objective = Trainer(config(data, task), tmp_path / "unused").objective
    objective.prepare(None)  # the metric knows its names once the data is read
    declared = objective.metric().directions
    for i, (name, direction) in enumerate(declared.items()):
        run = tmp_path / f"run{i}"
        result = seqlab.fit(config(data, task, steps=3, best_metric=name), run)
        logged = [json.loads(line)[name] for line in (run / "metrics.jsonl").read_text().splitlines()
                  if "val_loss" in json.loads(line)]
        assert len(logged) == 3  # reported at every evaluation
        assert result.best == (max if direction == "max" else min)(logged)
    if task == "tag":
        assert "span_f1" in declared  # B-/I- tags: span F1 is reported, so selectable
