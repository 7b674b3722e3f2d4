"""Transcribing: streamed audio gives the transcript of the whole file, runs that cannot
stream say why, and the CLI and the server take audio files and refuse bad ones."""

import base64
import json
import subprocess
import sys

import numpy as np
import pytest

import seqlab
from seqlab.config import RunConfig
from seqlab.datasets.speech_corpus import write_tone_corpus
from seqlab.errors import ConfigError, DataError


def config(folder, *, causal=True, **data) -> RunConfig:
    return RunConfig.from_dict({
        "task": "ctc", "seed": 0, "tokenizer": {"kind": "char"},
        "model": {"mixer": ["attention", "lstm"], "d_model": 24, "n_layers": 2, "n_heads": 2,
                  "causal": causal, "context_length": 48, "position": "rope"},
        "data": {"source": "speech", "path": str(folder / "train.jsonl"),
                 "val_path": str(folder / "val.jsonl"), "n_mels": 24, "normalize": "global",
                 "top_db": None, **data},
        "train": {"steps": 40, "batch_size": 8, "lr": 5e-3, "warmup_steps": 2, "eval_every": 40,
                  "progress": False, "num_threads": 1}})


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tones")
    write_tone_corpus(folder, n_utterances=40, max_letters=4)
    return folder


@pytest.fixture(scope="module")
def run(tones, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "ctc"
    seqlab.fit(config(tones), out)
    return out


def audio_files(tones, n=6):
    return [tones / "wav" / f"{i:04d}.wav" for i in range(n)]


@pytest.mark.parametrize("beam", [1, 3])
def test_streamed_audio_gives_the_transcript_of_the_whole_file(run, tones, beam):
    pipeline = seqlab.load(run)
    files = audio_files(tones)
    whole = pipeline.transcribe(files, beam=beam, n_best=beam)
    for chunk in (0.013, 0.1, 0.37):
        streamed = pipeline.transcribe(files, beam=beam, n_best=beam, stream=True,
                                       chunk_seconds=chunk)
        assert [[t.text for t in ts] for ts in streamed] == [[t.text for t in ts] for ts in whole]
        assert [t.logprob for ts in streamed for t in ts] == pytest.approx(
            [t.logprob for ts in whole for t in ts], abs=1e-4)


def test_stream_yields_a_growing_transcript(run, tones):
    pipeline = seqlab.load(run)
    samples = np.asarray(__import__("soundfile").read(str(audio_files(tones)[0]))[0], np.float32)
    partial = list(pipeline.stream(samples[i:i + 800] for i in range(0, len(samples), 800)))
    assert partial[-1] == pipeline.transcribe(samples)[0][0].text
    assert all(b.startswith(a) for a, b in zip(partial, partial[1:]))  # greedy only grows


def test_runs_that_cannot_stream_say_why(tones, tmp_path):
    for changes, why in (({"causal": False}, "causal encoder"),
                         ({"normalize": "utterance"}, "data.normalize: global"),
                         ({"top_db": 80.0}, "data.top_db: null")):
        causal = changes.pop("causal", True)
        cfg = config(tones, causal=causal, **changes).replace(["train.steps=1"])
        out = tmp_path / why.replace(" ", "_").replace(":", "")
        seqlab.fit(cfg, out)
        with pytest.raises(ConfigError, match=why):
            seqlab.load(out).transcribe(audio_files(tones, 1), stream=True)


def test_bad_audio_is_named(run, tmp_path):
    pipeline = seqlab.load(run)
    (tmp_path / "noise.wav").write_bytes(b"RIFF....WAVEfmt not audio")
    with pytest.raises(DataError, match="noise.wav: cannot decode audio"):
        pipeline.transcribe([tmp_path / "noise.wav"])
    with pytest.raises(DataError, match=r"input 0: samples must be a non-empty 1-D array"):
        pipeline.transcribe(np.zeros((2, 3), np.float32))


def test_the_cli_transcribes_files(run, tones, tmp_path):
    files = [str(f) for f in audio_files(tones, 2)]
    out = tmp_path / "out.jsonl"
    done = subprocess.run([sys.executable, "-m", "seqlab", "transcribe", str(run), *files,
                           "--beam", "2", "--n-best", "2", "--stream", "--chunk-ms", "120",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    want = seqlab.load(run).transcribe(files, beam=2, n_best=2)
    assert [r["audio"] for r in rows] == files
    assert [[t["text"] for t in r["transcripts"]] for r in rows] == [[t.text for t in w] for w in want]
    done = subprocess.run([sys.executable, "-m", "seqlab", "transcribe", str(run), "missing.wav"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "missing.wav: no such audio file" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_server_refuses_bad_audio_naming_it(run, tones):
    from starlette.testclient import TestClient

    from seqlab.serve.app import Service, create_app

    good = base64.b64encode(audio_files(tones, 1)[0].read_bytes()).decode()
    with TestClient(create_app(Service(run))) as client:
        for body, status, text in (
                ({"audio": ["not base64!"]}, 422, "audio[0] is not base64"),
                ({"audio": [good, base64.b64encode(b"plain words").decode()]}, 422,
                 "audio[1]: cannot decode audio"),
                ({"audio": [good], "n_best": 3}, 422, "n_best 3 is more than the beam"),
                ({"audio": []}, 422, "audio is empty")):
            response = client.post("/v1/transcribe", json=body)
            assert response.status_code == status and text in response.text, response.text
        response = client.post("/v1/transcribe", json={"audio": [good]})
        assert response.status_code == 200
        assert response.json()["transcripts"][0][0]["text"] == \
            seqlab.load(run).transcribe(audio_files(tones, 1))[0][0].text


def test_an_attention_recogniser_trains_transcribes_and_exports(tones, tmp_path):
    """The seq2seq objective over the speech source: frames into the encoder through the
    front end, letters out; transcribe decodes, export's start graph reads frames."""
    import torch

    from seqlab.export import ExportedModel, export_run

    cfg = RunConfig.from_dict({
        "task": "seq2seq", "seed": 0, "tokenizer": {"kind": "char"},
        "task_options": {"eval_decode": 8, "bleu_tokenize": "char", "max_output_length": 8},
        "model": {"mixer": "attention", "d_model": 24, "n_layers": 1, "n_heads": 2,
                  "context_length": 16, "position": "rope", "input": "conv_subsample", "patch": 4,
                  "encoder": {"n_layers": 1, "context_length": 40}},
        "data": {"source": "speech", "path": str(tones / "train.jsonl"),
                 "val_path": str(tones / "val.jsonl"), "n_mels": 16},
        "train": {"steps": 4, "batch_size": 8, "eval_every": 4, "progress": False}})
    result = seqlab.fit(cfg, tmp_path / "run")
    assert {"wer", "cer", "exact"} <= set(result.metrics)
    pipeline = seqlab.load(tmp_path / "run")
    files = audio_files(tones, 3)
    found = pipeline.transcribe(files, beam=2, n_best=2)
    assert [len(f) for f in found] == [2, 2, 2]
    with pytest.raises(ConfigError, match="streaming needs a ctc run"):
        pipeline.transcribe(files, stream=True)
    export_run(tmp_path / "run", tmp_path / "onnx", fmt="onnx")
    feats = [pipeline.objective.source.features(f) for f in files]
    n = min(len(f) for f in feats) // 4 * 4  # one length (the graph reads unpadded rows)
    frames = torch.from_numpy(np.stack([f[:n] for f in feats]))
    with torch.no_grad():
        want = pipeline.objective.decode_batch(pipeline.model, seqlab.data.Batch(frames),
                                               max_length=6)
    eos = pipeline.tokenizer.eos_id
    assert ExportedModel(tmp_path / "onnx").translate(frames, 6) == \
        [[t for t in h[0].tokens if t != eos] for h in want]
