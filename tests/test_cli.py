"""The CLI: a thin shell over the API, one-line errors, and the Python API it wraps."""

import subprocess
import sys

import pytest
import yaml

import seqlab
from seqlab.cli import main
from seqlab.errors import CheckpointError, ConfigError, DataError, TokenizerError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run shared by the read-only tests below."""
    root = tmp_path_factory.mktemp("cli")
    (root / "data.txt").write_text("hello world, hello seqlab. " * 60)
    config = {
        "model": {"preset": "gpt-tiny", "d_model": 32, "n_layers": 1, "context_length": 16},
        "data": {"path": str(root / "data.txt"), "val_fraction": 0.2},
        "train": {"steps": 4, "batch_size": 4, "eval_every": 4, "eval_batches": 2, "progress": False},
    }
    (root / "tiny.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(root / "tiny.yaml"), "--out", str(root / "run"), "-q"]) == 0
    return root


def test_train_writes_a_run_and_eval_generate_use_it(trained, capsys):
    run = str(trained / "run")
    assert main(["eval", run, "-q"]) == 0
    out = capsys.readouterr().out
    assert "val_loss:" in out and "perplexity:" in out and "bits_per_byte:" in out
    assert main(["eval", run, "--data", str(trained / "data.txt"), "--max-batches", "1", "-q"]) == 0
    assert "bits_per_byte:" in capsys.readouterr().out
    assert main(["generate", run, "--prompt", "hello", "--max-new-tokens", "5", "--seed", "1",
                 "--top-k", "5", "--top-p", "0.9", "--temperature", "0.7", "-q"]) == 0
    assert capsys.readouterr().out.startswith("hello")


def test_python_api_matches_the_cli(trained):
    run = seqlab.load(trained / "run")
    assert run.tokenizer.vocab_size == run.model.head.proj.out_features == 259
    a = run.generate("hello", max_new_tokens=8, seed=3)
    assert a == run.generate("hello", max_new_tokens=8, seed=3)
    assert run.generate("hello", max_new_tokens=8, greedy=True) == run.generate(
        "hello", max_new_tokens=8, temperature=0)
    metrics = run.evaluate()
    assert set(metrics) == {"val_loss", "perplexity", "bits_per_byte"}


def test_presets_lists_parameter_counts(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("gpt-tiny", "gpt-small", "lstm-lm-tiny", "gru-lm-small", "rnn-lm-tiny"):
        assert name in out
    assert "3,291,392" in out  # gpt-small with the byte vocabulary


def test_errors_are_one_line_without_traceback(tmp_path):
    cmd = [sys.executable, "-m", "seqlab", "generate", str(tmp_path / "missing"), "--prompt", "x"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "run directory" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    debug = subprocess.run(cmd + ["--debug"], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def write_config(tmp_path, data):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("config, match", [
    ({"train": {"stepz": 3}}, "unknown config key 'train.stepz' .did you mean 'train.steps'"),
    ({"train": {"steps": "many"}}, "train.steps must be int, got 'many'"),
    ({"data": {"path": "/nonexistent/corpus.txt"}}, "data path /nonexistent/corpus.txt does not exist"),
    ({"data": {"path": "/tmp/*.nothing-matches-this"}}, "matched no files"),
    ({"model": {"vocab_size": 100}, "data": {"path": "DATA"}}, "model.vocab_size is 100 but the byte tokenizer has 259"),
])
def test_config_and_data_errors(tmp_path, capsys, config, match):
    (tmp_path / "d.txt").write_text("some text " * 50)
    data = yaml.safe_load(yaml.safe_dump(config).replace("DATA", str(tmp_path / "d.txt")))
    code = main(["train", write_config(tmp_path, data), "--out", str(tmp_path / "run"), "-q"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("seqlab: error:") and err.count("\n") == 1
    assert __import__("re").search(match, err), err


def test_empty_data_file(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        seqlab.fit(seqlab.RunConfig.from_dict({"data": {"path": str(tmp_path / "empty.txt")}}),
                     tmp_path / "run")


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  steps: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml at line \d+, column \d+"):
        seqlab.RunConfig.from_yaml(path)


def copy_run(trained, tmp_path):
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(trained / "run", dst)
    return dst


def test_truncated_and_corrupt_weights(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    weights = run / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors.*truncated"):
        seqlab.load(run)
    corrupt = bytearray(data)
    corrupt[-3] ^= 0x55
    weights.write_bytes(bytes(corrupt))
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt"):
        seqlab.load(run)


def test_weights_not_matching_config_list_both_shapes(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["d_model"] = 64
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError, match=r"backbone.embed.weight: checkpoint \(259, 32\) vs model \(259, 64\)"):
        seqlab.load(run)


def test_tokenizer_and_model_vocab_disagree(trained, tmp_path):
    from seqlab.data.tokenizers import build_tokenizer

    run = copy_run(trained, tmp_path)
    build_tokenizer("char", ["abc"]).save(run / "tokenizer.json")
    with pytest.raises(ConfigError, match="model.vocab_size is 259 but the char tokenizer has 7"):
        seqlab.load(run)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a seqlab run directory"):
        seqlab.load(tmp_path)


def test_token_ids_out_of_range_for_the_tokenizer(trained):
    run = seqlab.load(trained / "run")
    with pytest.raises(TokenizerError, match="out of range"):
        run.tokenizer.decode([1000])


def test_resume_with_no_checkpoint_via_cli(tmp_path, capsys):
    (tmp_path / "d.txt").write_text("x" * 500)
    (tmp_path / "run").mkdir()
    config = write_config(tmp_path, {"data": {"path": str(tmp_path / "d.txt")}})
    assert main(["train", config, "--out", str(tmp_path / "run"), "--resume", "-q"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_objective_commands_refuse_other_objectives_and_eval_takes_every_run(tmp_path, capsys):
    config = seqlab.RunConfig.from_dict({
        "task": "synthetic", "task_options": {"name": "copy", "length": 32},
        "model": {"mixer": "gru", "position": "none", "d_model": 16, "n_layers": 1},
        "train": {"steps": 2, "batch_size": 2, "eval_every": 2, "eval_batches": 1,
                  "progress": False}})
    seqlab.fit(config, tmp_path / "run")
    run = str(tmp_path / "run")
    for command, wanted in ((["generate", run, "--prompt", "x"], "works on causal_lm runs"),
                            (["fill-mask", run, "--text", "a<mask>"], "works on masked_lm runs"),
                            (["predict", run, "--data", run, "--out", str(tmp_path / "p.csv")],
                             "has no prediction")):
        assert main(command + ["-q"]) == 2
        err = capsys.readouterr().err
        assert wanted in err and len(err.strip().splitlines()) == 1
    assert main(["eval", run, "-q"]) == 0
    assert "accuracy:" in capsys.readouterr().out


def test_default_quickstart_directory_never_hits_an_old_run(tmp_path):
    from pathlib import Path

    from seqlab.cli import _free_dir

    base = tmp_path / "runs" / "quickstart"
    assert _free_dir(base) == str(base)
    base.mkdir(parents=True)
    (base.parent / "quickstart-2").mkdir()
    assert Path(_free_dir(base)).name == "quickstart-3"
