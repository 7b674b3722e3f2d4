"""Errors a user can cause, through the real ``seqlab`` command: one line, no traceback.

Each case runs ``python -m seqlab`` in a subprocess and checks the README's promise:
exit status 2 and exactly one line on stderr, ``seqlab: error: ...``, naming what is
wrong. The damaged runs are copies of one tiny run trained once for the module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FULL_DISK_SITE = Path(__file__).with_name("full_disk_site")  # its sitecustomize fills the disk
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]  # a char tokenizer's, in tokenizer.json order


def seqlab_cli(*args, cwd: Path, env: dict | None = None,
               first_on_path: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m seqlab ARGS`` on this checkout (``first_on_path`` ahead of it)."""
    paths = [str(p) for p in (first_on_path, REPO) if p] + [
        p for p in [os.environ.get("PYTHONPATH")] if p]
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.run([sys.executable, "-m", "seqlab", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The message of a one-line ``seqlab: error:``, after checking the exit status."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqlab: error: "), proc.stderr
    return lines[0].removeprefix("seqlab: error: ")


def tiny_config(data: Path) -> dict:
    return {
        "model": {"preset": "gpt-tiny", "d_model": 32, "n_layers": 1, "context_length": 16},
        "data": {"path": str(data)},
        "train": {"steps": 4, "batch_size": 4, "eval_every": 2, "eval_batches": 1,
                  "progress": False},
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A byte-level run trained through the CLI, shared read-only by the module."""
    root = tmp_path_factory.mktemp("cli_errors")
    (root / "data.txt").write_text("hello world, hello seqlab. " * 60)
    (root / "c.yaml").write_text(yaml.safe_dump(tiny_config(root / "data.txt")))
    proc = seqlab_cli("train", root / "c.yaml", "--out", root / "run", "-q", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert (root / "run" / "model.safetensors").is_file()
    return root / "run"


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A private copy of the trained run, free to damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def test_missing_data(tmp_path):
    missing = tmp_path / "no-such-corpus.txt"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_config(missing)))
    proc = seqlab_cli("train", tmp_path / "c.yaml", "--out", tmp_path / "run", "-q", cwd=tmp_path)
    message = one_line_error(proc)
    assert str(missing) in message and "does not exist" in message
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.parametrize("command", [["eval"], ["generate", "--prompt", "hello"]])
def test_corrupt_weights(run, tmp_path, command):
    weights = run / "model.safetensors"
    data = bytearray(weights.read_bytes())
    for i in (-1, -200, len(data) // 2):  # in the tensor data, which the checksum covers
        data[i] ^= 0xA5
    weights.write_bytes(bytes(data))
    message = one_line_error(seqlab_cli(command[0], run, *command[1:], cwd=tmp_path))
    assert str(weights) in message and "corrupt" in message


def test_weights_narrower_than_config(run, tmp_path):
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["d_model"] = 64
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    message = one_line_error(seqlab_cli("eval", run, cwd=tmp_path))
    assert "model.safetensors" in message
    assert "backbone.embed.weight: checkpoint (259, 32) vs model (259, 64)" in message


def char_tokenizer_file(chars: list[str]) -> str:
    """A ``tokenizer.json`` for a char tokenizer, written as seqlab writes one."""
    return json.dumps({"kind": "char", "version": 1, "special_tokens": SPECIALS,
                       "chars": sorted(chars)})


def test_char_tokenizer_in_byte_run_of_another_size(run, tmp_path):
    (run / "tokenizer.json").write_text(char_tokenizer_file(list("abc")))
    message = one_line_error(seqlab_cli("eval", run, cwd=tmp_path))
    assert "259" in message and "char tokenizer has 7" in message


def test_char_tokenizer_in_byte_run_of_the_same_size(run, tmp_path):
    # 255 characters + 4 specials = 259 ids, the byte tokenizer's vocabulary size.
    (run / "tokenizer.json").write_text(char_tokenizer_file([chr(0x100 + i) for i in range(255)]))
    message = one_line_error(seqlab_cli("eval", run, cwd=tmp_path))
    assert "tokenizer" in message and "char" in message and "byte" in message


@pytest.mark.slow  # a whole training run of its own
def test_disk_full_during_training(tmp_path):
    """The disk fills up once the run holds 32 KB: after the first evaluation, at the
    first weights file (about 90 KB), so training has started."""
    (tmp_path / "data.txt").write_text("hello world, hello seqlab. " * 60)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_config(tmp_path / "data.txt")))
    out = tmp_path / "run"
    proc = seqlab_cli("train", tmp_path / "c.yaml", "--out", out, "-q", cwd=tmp_path,
                      env={"SEQLAB_TEST_FULL_DISK": f"{out}:{32 * 1024}"},
                      first_on_path=FULL_DISK_SITE)
    message = one_line_error(proc)
    assert "no space left on device" in message.lower()
    assert str(out / "model.safetensors") in message  # the file it could not write
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("step", 0) >= 1 for r in records), records  # training had started
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []  # the failed write removed its temporary file
    assert not (out / "model.safetensors").exists()
