"""Run configs: presets merge deeply, every options section is typed and checked when
read, unused entries are errors, old run directories still load, and training leaves the
caller's config and process as they were."""

import json
import subprocess
import sys

import pytest
import torch

import seqlab
from seqlab.config import RunConfig
from seqlab.data.tokenizers import load_tokenizer
from seqlab.errors import ConfigError

TEXT = {"data": {"path": "corpus.txt"}}


def test_a_nested_override_keeps_the_presets_other_nested_keys():
    config = RunConfig.from_dict({"model": {"preset": "llama-small"}, **TEXT},
                                 ["model.mixer_options.attention.kernel=naive"])
    assert config.model.mixer_options["attention"] == {"bias": False, "kernel": "naive"}


def test_preset_options_of_mixers_not_used_are_dropped_but_the_users_are_refused():
    config = RunConfig.from_dict({"model": {"preset": "llama-tiny", "mixer": "lstm",
                                            "position": "none"}, **TEXT})
    assert config.model.mixer_options == {}
    with pytest.raises(ConfigError, match="mixer_options.gru is unused: the model's mixers are "
                                          "lstm; valid keys: lstm"):
        RunConfig.from_dict({"model": {"mixer": "lstm", "position": "none",
                                       "mixer_options": {"gru": {"num_layers": 2}}}, **TEXT})


@pytest.mark.parametrize("config, match", [
    ({"task": "classify", "task_options": {"poolng": "mean"}, "data": {"path": "x"}},
     "unknown config key 'task_options.poolng' \\(did you mean 'task_options.pooling'\\?\\); "
     "valid keys here: pooling, class_weights"),
    ({"task_options": {"pooling": "mean"}, **TEXT}, "task 'causal_lm' takes no task_options"),
    ({"task": "classify", "data": {"path": "x", "label_feild": "y"}},
     "did you mean 'data.label_field'"),
    ({"task": "classify", "data": {"source": "text", "path": "x"}},
     "data.source 'text' cannot feed task 'classify'; it reads: examples, features"),
    ({"task": "tag", "data": {"source": "features", "path": "x", "normalise": True}},
     "did you mean 'data.normalize'"),
    ({"task": "classify", "task_options": {"class_weights": "inverse"}, "data": {"path": "x"}},
     "the only named weighting is 'balanced'"),
    ({"task": "regress", "task_options": {"loss": "huber"}, "data": {"path": "x"}},
     "loss must be one of mse, mae"),
    ({"task": "masked_lm", "task_options": {"mask_prob": 1.5}, **TEXT}, "mask_prob must be in"),
    ({"tokenizer": {"kind": "wordpiece"}, **TEXT}, "tokenizer.kind: unknown tokenizer 'wordpiece'"),
    ({"train": {"param_groups": [{"params": ["head.*"], "lr": 1e-3, "lr_scale": 2.0}]}, **TEXT},
     "give lr or lr_scale, not both"),
    ({"task": "tag", "data": {"path": "x", "tokens_field": "ids"}}, "set tokenizer.kind: ids"),
])
def test_options_are_checked_when_the_config_is_read(config, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_dict(config)


def test_every_section_round_trips_through_yaml(tmp_path):
    config = RunConfig.from_dict({
        "task": "tag", "task_options": {"scheme": "bio"},
        "data": {"source": "features", "path": "x.npz", "bucket": True, "eval_sets": {"ood": "y"}},
        "train": {"freeze": ["backbone.embed.*"], "param_groups": [{"params": ["head.*"], "lr": 0.1}]},
        "init": {"run": "runs/pre", "exclude": ["head.*"], "penalty": 0.5}})
    (tmp_path / "c.yaml").write_text(config.to_yaml())
    assert RunConfig.from_yaml(tmp_path / "c.yaml").to_dict() == config.to_dict()


def test_a_config_written_before_data_sources_and_masks_still_loads(tmp_path):
    """What an older seqlab wrote for a synthetic run: the generator in task_options, the
    text defaults under data, and a version 1 byte tokenizer."""
    old = {"task": "synthetic", "task_options": {"name": "copy", "length": 32, "n_copy": 3},
           "seed": 0, "model": {"mixer": "lstm", "position": "none", "input": "tokens"},
           "data": {"path": None, "val_path": None, "val_fraction": 0.05, "extensions": None,
                    "exclude": None, "max_bytes": None, "shuffle_files": True},
           "train": {"eval_batches": 20}}
    config = RunConfig.from_dict(old)
    assert config.data.source == "synthetic" and config.task_options.generator.n_copy == 3
    with pytest.raises(ConfigError, match="unknown config key 'data.path'"):
        RunConfig.from_dict({**old, "data": {**old["data"], "path": "corpus.txt"}})
    (tmp_path / "tokenizer.json").write_text(json.dumps({"kind": "byte", "version": 1}))
    tokenizer = load_tokenizer(tmp_path / "tokenizer.json")
    assert tokenizer.vocab_size == 259 and tokenizer.mask_id is None


def test_fit_leaves_the_callers_config_alone(tmp_path):
    (tmp_path / "corpus.txt").write_text("hello world. " * 100)
    config = RunConfig.from_dict({"model": {"mixer": "gru", "position": "none", "d_model": 16,
                                            "n_layers": 1, "context_length": 16},
                                  "data": {"path": str(tmp_path / "corpus.txt")},
                                  "train": {"steps": 1, "batch_size": 2, "progress": False,
                                            "num_threads": 1}})
    before = config.to_dict()
    threads = torch.get_num_threads()
    seqlab.fit(config, tmp_path / "run")
    assert config.to_dict() == before and config.model.vocab_size is None
    assert torch.get_num_threads() == threads
    assert RunConfig.from_yaml(tmp_path / "run" / "config.yaml").model.vocab_size == 259


def test_training_changes_no_process_wide_state(tmp_path):
    """No pyplot, no backend switch, threads and denormal flushing put back."""
    (tmp_path / "corpus.txt").write_text("hello world. " * 100)
    code = f"""
import matplotlib, sys, torch, seqlab
from seqlab.train.runtime import flushing_denormals
backend = dict.__getitem__(matplotlib.rcParams, "backend")  # get_backend() imports pyplot
torch.set_num_threads(2)
cfg = seqlab.RunConfig.from_dict({{"model": {{"mixer": "gru", "position": "none", "d_model": 16,
      "n_layers": 1, "context_length": 16}}, "data": {{"path": {str(tmp_path / 'corpus.txt')!r}}},
      "train": {{"steps": 2, "eval_every": 1, "batch_size": 2, "progress": False, "num_threads": 1}}}})
seqlab.fit(cfg, {str(tmp_path / 'run')!r})
assert "matplotlib.pyplot" not in sys.modules
assert dict.__getitem__(matplotlib.rcParams, "backend") == backend
assert torch.get_num_threads() == 2
assert not flushing_denormals()
print("CLEAN")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "CLEAN" in proc.stdout, proc.stderr[-2000:]


def test_rerun_into_a_run_that_crashed_before_saving_takes_the_new_tokenizer(tmp_path):
    (tmp_path / "corpus.txt").write_text("hello world. " * 100)
    run = tmp_path / "run"
    run.mkdir()
    (run / "tokenizer.json").write_text(json.dumps({"kind": "byte", "version": 1}))
    (run / "config.yaml").write_text("task: causal_lm\n")
    config = RunConfig.from_dict({"model": {"mixer": "gru", "position": "none", "d_model": 16,
                                            "n_layers": 1, "context_length": 16},
                                  "tokenizer": {"kind": "char"},
                                  "data": {"path": str(tmp_path / "corpus.txt")},
                                  "train": {"steps": 1, "batch_size": 2, "progress": False}})
    seqlab.fit(config, run)
    assert load_tokenizer(run / "tokenizer.json").kind == "char"
