"""Every example in ``examples/`` stays valid: its prepare.py writes data (small), its
configs train for a few steps through the CLI, and ``eval`` and the objective's own
command (``predict``, ``generate``, ``fill-mask``) work on the run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seqlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# prepare arguments for a small build, and per config: the data it reads (relative to
# the prepared folder) and what to run after training.
CASES = {
    "causal_lm": (["--max-files", "12"], {
        "config.yaml": ("train", "val", ["generate", "--prompt", "def ", "--max-new-tokens", "8"])}),
    "masked_lm": (["--max-files", "12"], {
        "config.yaml": ("train", "val", ["fill-mask", "--text", "import <mask>s"])}),
    "classify": (["--small"], {
        "config.yaml": ("packages/train.jsonl", "packages/val.jsonl", ["predict"]),
        "features.yaml": ("dynamics/train.npz", "dynamics/val.npz", ["predict"])}),
    "tag": (["--max-files", "6"], {
        "config.yaml": ("train.jsonl", "val.jsonl", ["predict"])}),
    "regress": (["--small"], {
        "config.yaml": ("code/train.jsonl", "code/val.jsonl", ["predict"]),
        "features.yaml": ("oscillators/train.npz", "oscillators/val.npz", ["predict"])}),
    "protein": (["--small"], {
        "config.yaml": ("train.fasta", "val.fasta", ["predict"], {"data.tags_path": "ss8.fasta"}),
        "family.yaml": ("families/train.fasta", "families/val.fasta", ["predict"])}),
    "dna": (["--small"], {
        "config.yaml": ("genes/train.fasta", "genes/val.fasta", ["predict"],
                        {"data.tags_path": "genes/regions.fasta"}),
        "regress.yaml": ("promoters/train.fasta", "promoters/val.fasta", ["predict"],
                         {"data.labels": "promoters/expression.csv"})}),
    # a forecast run splits its one table by time: no validation file
    "forecast": (["--small"], {"config.yaml": ("elnino.csv", None, ["backtest", "--windows", "2"])}),
    "anomaly": (["--small"], {"config.yaml": ("series.csv", None, ["predict"])}),
    "seq2seq": (["--small"], {"config.yaml": ("train.tsv", "val.tsv",
                                              ["translate", "--input", "seqlab", "--beam", "2"])}),
    "ctc": (["--small"], {"config.yaml": ("train.jsonl", "val.jsonl", ["transcribe", "--beam", "4"]),
                          "stream.yaml": ("train.jsonl", "val.jsonl", ["transcribe", "--stream"])}),
    "tts": (["--small"], {"config.yaml": ("train.jsonl", "val.jsonl", ["speak"])}),
}


def test_every_example_folder_is_covered():
    assert {p.name for p in EXAMPLES.iterdir() if p.is_dir()} == set(CASES)
    for name, (_, configs) in CASES.items():
        assert {p.name for p in (EXAMPLES / name).glob("*.yaml")} == set(configs)
        assert (EXAMPLES / name / "prepare.py").is_file()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = {}
    for name, (args, _) in CASES.items():
        folder = tmp_path_factory.mktemp(name)
        proc = subprocess.run([sys.executable, str(EXAMPLES / name / "prepare.py"), *args,
                               "--out", str(folder)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[name] = folder
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name, config", [(n, c) for n, (_, cs) in CASES.items() for c in cs])
def test_example_trains_evaluates_and_predicts(name, config, prepared, tmp_path, capsys):
    train, val, after, *more = CASES[name][1][config]
    data = prepared[name]
    path = EXAMPLES / name / config
    text = path.read_text()
    assert f"seqlab train examples/{name}/{config}" in text  # the commands it documents
    assert yaml.safe_load(text)["data"]["path"].startswith(f"examples/{name}/data/")
    run = tmp_path / "run"
    sets = {"data.path": data / train, "train.steps": 2,
            "train.eval_every": 2, "train.batch_size": 4, "train.eval_batches": 2,
            "train.progress": "false", **{k: data / v for k, v in (more[0] if more else {}).items()}}
    if val is not None:
        sets["data.val_path"] = data / val
    args = ["train", str(path), "--out", str(run), "-q"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0, capsys.readouterr().err
    assert main(["eval", str(run), "-q"]) == 0, capsys.readouterr().err
    command = [after[0], str(run), *after[1:]]
    if after[0] == "predict":
        command += ["--data", str(data / (val or train)), "--out", str(tmp_path / "predictions.csv")]
    elif after[0] == "transcribe":
        command.insert(2, str(data / json.loads((data / val).read_text().splitlines()[0])["audio"]))
    elif after[0] == "speak":  # a validation text: its letters are the voice's
        text = json.loads((data / val).read_text().splitlines()[0])["text"]
        command += [text, "--out", str(tmp_path / "speech.wav")]
    elif after[0] == "backtest":
        command += ["--data", str(data / train), "--out", str(tmp_path / "scores.json")]
    assert main(command + ["-q"]) == 0, capsys.readouterr().err
    if after[0] == "predict":
        assert len((tmp_path / "predictions.csv").read_text().splitlines()) > 1
