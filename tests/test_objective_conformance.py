"""The conformance suite over objectives: every registered objective trains on 2 ranks
as on 1, resumes exactly, loads through ``seqlab.load`` (its evaluation repeating the
run's own), is served by ``seqlab serve``, and exports to ONNX with equal outputs. A new objective joins by adding one entry
to ``CASES``; ``test_every_objective_is_in_the_suite`` fails until it does."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from starlette.testclient import TestClient

import seqlab
from seqlab.config import RunConfig
from seqlab.datasets.speech_corpus import write_tone_corpus
from seqlab.export import ExportedModel, export_run
from seqlab.serve.app import Service, create_app
from seqlab.tasks import OBJECTIVES
from seqlab.train.checkpoint import CheckpointManager
from seqlab.train.trainer import Trainer
from tests.helpers.two_ranks import train_all

TRAIN = {"steps": 6, "batch_size": 4, "lr": 5e-3, "warmup_steps": 1, "eval_every": 3,
         "eval_batches": 2, "log_every": 1, "progress": False, "num_threads": 1}


@dataclass
class Case:
    """One objective in the suite: its config over the shared data folder, and a request
    to its served endpoint with the Python call the response must equal."""

    config: Callable[[Path], dict]
    request: tuple[str, dict] | None  # (endpoint, body); None: nothing to infer
    expected: Callable[[object], object] | None = None  # pipeline -> the response's payload
    received: Callable[[dict], object] = lambda response: response
    # dropout draws differ across ranks: what turns each off for the 2-rank check
    no_dropout: tuple[str, ...] = ("model.dropout=0.0",)


def text_config(folder: Path, task: str, causal: bool) -> dict:
    return {"task": task, "seed": 2,
            "model": {"mixer": ["attention", "lstm" if causal else "gru"], "d_model": 16,
                      "n_layers": 2, "n_heads": 2, "causal": causal, "context_length": 24,
                      "position": "rope", "dropout": 0.1},
            "data": {"path": str(folder / "corpus.txt")}, "train": TRAIN}


def examples_config(folder: Path, task: str, **data) -> dict:
    return {"task": task, "seed": 2,
            "model": {"mixer": ["lstm", "attention"], "d_model": 16, "n_layers": 2, "n_heads": 2,
                      "causal": False, "context_length": 24, "position": "rope", "dropout": 0.1},
            "data": {"source": "examples", "path": str(folder / "train.jsonl"),
                     "val_path": str(folder / "val.jsonl"), "bucket": True, **data},
            "train": TRAIN}


def synthetic_config(folder: Path) -> dict:
    return {"task": "synthetic", "seed": 2,
            "task_options": {"name": "copy", "length": 12, "n_copy": 3, "n_tokens": 4,
                             "eval_examples": 16},
            "model": {"mixer": "lstm", "d_model": 16, "n_layers": 1, "position": "none",
                      "dropout": 0.1},
            "train": TRAIN}


def forecast_config(folder: Path) -> dict:
    return {"task": "forecast", "seed": 2,
            "model": {"mixer": ["lstm", "attention"], "d_model": 16, "n_layers": 2, "n_heads": 2,
                      "context_length": 16, "position": "rope", "dropout": 0.1},
            "data": {"source": "series", "path": str(folder / "series.csv"), "id": "id",
                     "context": 12, "horizon": 4, "future_covariates": ["promo"],
                     "calendar": ["dayofweek"]},
            "train": TRAIN}


def anomaly_config(folder: Path) -> dict:
    config = forecast_config(folder)
    return {**config, "task": "anomaly", "task_options": {"paths": 8},
            "data": {**config["data"], "horizon": 1}}


def series_pretrain_config(folder: Path) -> dict:
    config = forecast_config(folder)
    return {**config, "task": "series_pretrain", "model": {**config["model"], "causal": False}}


def seq2seq_config(folder: Path) -> dict:
    return {"task": "seq2seq", "seed": 2, "tokenizer": {"kind": "char"},
            "task_options": {"eval_decode": 6, "max_output_length": 10},
            "model": {"mixer": ["attention", "lstm"], "d_model": 16, "n_layers": 2, "n_heads": 2,
                      "context_length": 16, "position": "rope", "dropout": 0.1,
                      "encoder": {"mixer": ["gru", "attention"]}},
            "data": {"source": "parallel", "path": str(folder / "pairs.tsv")},
            "train": TRAIN}


def ctc_config(folder: Path) -> dict:
    return {"task": "ctc", "seed": 2, "tokenizer": {"kind": "char"},
            "model": {"mixer": ["attention", "lstm"], "d_model": 16, "n_layers": 2, "n_heads": 2,
                      "causal": True, "context_length": 24, "position": "rope", "dropout": 0.1},
            "data": {"source": "speech", "path": str(folder / "tones" / "train.jsonl"),
                     "val_path": str(folder / "tones" / "val.jsonl"), "n_mels": 16,
                     "normalize": "global", "top_db": None, "spec_augment": True},
            "train": TRAIN}


def transcribe_case(folder: Path) -> Case:
    import base64

    files = [folder / "tones" / "wav" / f"000{i}.wav" for i in (1, 2)]
    body = {"audio": [base64.b64encode(f.read_bytes()).decode() for f in files], "beam": 2,
            "n_best": 2}
    return Case(ctc_config, ("/v1/transcribe", body),
                lambda p: [[t.__dict__ for t in ts] for ts in p.transcribe(files, beam=2, n_best=2)],
                lambda r: r["transcripts"])


def tts_config(folder: Path) -> dict:
    return {"task": "tts", "seed": 2, "tokenizer": {"kind": "char"},
            "task_options": {"frames_per_step": 2, "max_seconds": 0.4, "griffin_lim_iters": 4},
            "model": {"mixer": ["attention", "lstm"], "d_model": 16, "n_layers": 2, "n_heads": 2,
                      "context_length": 48, "position": "rope", "dropout": 0.1,
                      "encoder": {"mixer": ["gru", "attention"], "context_length": 16}},
            "data": {"source": "speech", "path": str(folder / "tones" / "train.jsonl"),
                     "val_path": str(folder / "tones" / "val.jsonl"), "n_mels": 16,
                     "normalize": "global"},
            "train": TRAIN}


def spoken(text: str, seed: int):
    import base64

    return lambda p: base64.b64encode(p.wav_bytes(p.speak(text, seed=seed))).decode()


def series_rows(folder: Path, which: str) -> list[dict]:
    import pandas as pd

    frame = pd.read_csv(folder / f"series-{which}.csv")
    return json.loads(frame.to_json(orient="records"))


def forecast_call(folder: Path):
    import pandas as pd

    def call(pipeline):
        frame = pipeline.forecast(pd.DataFrame(series_rows(folder, "history")),
                                  pd.DataFrame(series_rows(folder, "future")))
        return json.loads(frame.to_json(orient="records", date_format="iso"))
    return call


def anomaly_call(folder: Path):
    import pandas as pd

    def call(pipeline):
        frame = pipeline.score(pd.DataFrame(series_rows(folder, "history")))
        return json.loads(frame.to_json(orient="records", date_format="iso"))
    return call


def predicted(texts):
    return lambda pipeline: pipeline.predict(texts)


CASES: dict[str, Case] = {
    "causal_lm": Case(
        lambda d: text_config(d, "causal_lm", causal=True),
        ("/v1/generate", {"prompt": "the ", "max_new_tokens": 8, "seed": 3}),
        lambda p: p.generate("the ", max_new_tokens=8, seed=3), lambda r: r["text"]),
    "masked_lm": Case(
        lambda d: text_config(d, "masked_lm", causal=False),
        ("/v1/fill-mask", {"text": "the <mask>ox", "top_k": 3}),
        lambda p: p.fill_mask("the <mask>ox", top_k=3), lambda r: r["masks"]),
    "classify": Case(
        lambda d: examples_config(d, "classify"),
        ("/v1/predict", {"texts": ["axxa", "bbz"]}),
        predicted(["axxa", "bbz"]), lambda r: r["predictions"]),
    "tag": Case(
        lambda d: examples_config(d, "tag", label_field="tags"),
        ("/v1/predict", {"texts": ["axa"]}),
        predicted(["axa"]), lambda r: r["predictions"]),
    "regress": Case(
        lambda d: examples_config(d, "regress", label_field="share"),
        ("/v1/predict", {"texts": ["aaxy", "b"]}),
        predicted(["aaxy", "b"]), lambda r: r["predictions"]),
    "synthetic": Case(synthetic_config, None),
    "forecast": Case(forecast_config, None),  # its request needs the data folder: see below
    "anomaly": Case(anomaly_config, None),  # likewise
    "series_pretrain": Case(series_pretrain_config, None),  # pre-training serves nothing
    "ctc": Case(ctc_config, None),  # its request reads the data folder: see below
    "tts": Case(tts_config, ("/v1/speak", {"text": "abc", "seed": 3}), spoken("abc", 3),
                lambda r: r["audio"],
                no_dropout=("model.dropout=0.0", "task_options.prenet_dropout=0.0")),
    "seq2seq": Case(
        seq2seq_config, ("/v1/translate", {"texts": ["abc", "zyx"], "beam": 2, "n_best": 2}),
        lambda p: [[t.__dict__ for t in ts] for ts in p.translate(["abc", "zyx"], beam=2, n_best=2)],
        lambda r: r["translations"]),
}


def test_every_objective_is_in_the_suite():
    assert set(OBJECTIVES.names()) == set(CASES), \
        "add the new objective to CASES in tests/test_objective_conformance.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    (folder / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog. " * 30)
    words = ["".join(random.Random(i).choice("abcxyz") for _ in range(2 + i % 6)) for i in range(40)]
    (folder / "pairs.tsv").write_text("source\ttarget\n" + "".join(f"{w}\t{w[::-1].upper()}\n"
                                                                   for w in words))
    write_series(folder)
    write_tone_corpus(folder / "tones", n_utterances=30)
    rng = random.Random(0)
    for name, n in (("train.jsonl", 30), ("val.jsonl", 8)):
        rows = []
        for _ in range(n):
            label = rng.choice("ab")
            text = "".join(rng.choice(label + "xyz") for _ in range(rng.randint(2, 12)))
            rows.append({"text": text, "label": label, "share": text.count(label) / len(text),
                         "tags": ["L" if c == label else "O" for c in text]})
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def write_series(folder: Path) -> None:
    """Four daily series with a weekly cycle and a promotion covariate; the last 40 days
    of two of them as a request's history, and the 4 days after as its future."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    parts = []
    for s in range(4):
        t = np.arange(80)
        promo = (t % 6 == 0).astype(float)
        parts.append(pd.DataFrame({"ds": pd.date_range("2023-01-01", periods=80, freq="D"),
                                   "id": f"s{s}", "y": 3 * s + np.sin(t) + promo
                                   + rng.normal(0, 0.1, 80), "promo": promo}))
    frame = pd.concat(parts, ignore_index=True)
    frame.to_csv(folder / "series.csv", index=False)
    history = frame[frame["id"].isin(["s1", "s2"])].groupby("id").tail(40)
    history.to_csv(folder / "series-history.csv", index=False)
    future = pd.DataFrame({"ds": np.tile(pd.date_range("2023-03-22", periods=4).astype(str), 2),
                           "id": np.repeat(["s1", "s2"], 4), "promo": [1.0, 0, 0, 0] * 2})
    future.to_csv(folder / "series-future.csv", index=False)


def config_for(name: str, data: Path, *overrides: str) -> RunConfig:
    return RunConfig.from_dict(CASES[name].config(data)).replace(list(overrides))


def final(run: Path) -> dict[str, torch.Tensor]:
    return CheckpointManager(run / "trainer").load_latest().model


@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_resume(name, data, tmp_path):
    config = config_for(name, data)
    Trainer(config, tmp_path / "straight").fit()
    Trainer(config, tmp_path / "resumed").fit(until_step=2)
    Trainer(config, tmp_path / "resumed", resume=True).fit()
    a, b = final(tmp_path / "straight"), final(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def two_ranks(data, tmp_path_factory) -> dict:
    """Every case trained on 2 ranks, all in one torchrun launch."""
    return train_all({name: config_for(name, data, *case.no_dropout) for name, case in CASES.items()},
                     tmp_path_factory.mktemp("two-ranks"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_ranks_train_as_one(name, data, two_ranks, tmp_path):
    Trainer(config_for(name, data, *CASES[name].no_dropout), tmp_path / "one").fit()
    two, error = two_ranks[name]
    assert error is None, error
    a, b = final(tmp_path / "one"), final(two)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-4, worst


@pytest.mark.parametrize("name", sorted(CASES))
def test_exports_with_equal_outputs(name, data, tmp_path):
    """Exported to ONNX with attention layers (which export in both modes; which
    mixers export is tests/test_export.py's subject), outputs equal eager PyTorch's."""
    encoder = ["model.encoder.mixer=attention"] if name in ("seq2seq", "tts") else []
    config = config_for(name, data, "model.mixer=attention", "model.n_layers=1", "train.steps=2",
                        *encoder)
    seqlab.fit(config, tmp_path / "run")
    manifest = export_run(tmp_path / "run", tmp_path / "onnx", fmt="onnx")
    loaded = seqlab.load(tmp_path / "run")
    exported, model = ExportedModel(tmp_path / "onnx"), loaded.model
    if loaded.config.task == "seq2seq":  # start (encode, then <bos>) and step graphs
        source = torch.randint(3, loaded.config.model.vocab_size, (3, 6))
        with torch.no_grad():
            logits, state = exported.start(source)
            bos = torch.full((3, 1), loaded.tokenizer.bos_id)
            ref = model(bos, model.start(source))
            assert torch.allclose(logits, ref.logits, atol=1e-4)
            token = logits[:, -1:].argmax(-1)
            assert torch.allclose(exported.step(token, state)[0], model(token, ref.state).logits,
                                  atol=1e-4)
        want = loaded.objective.decode_batch(model, seqlab.data.Batch(source), max_length=8)
        assert exported.translate(source, 8) == [[t for t in h[0].tokens
                                                  if t != loaded.tokenizer.eos_id] for h in want]
        return
    if loaded.config.task == "tts":  # text in; a zero frame, then frames and a stop logit out
        model.decoder.embed.always = False  # the graphs have no pre-net dropout
        ids = torch.randint(4, loaded.config.model.vocab_size, (3, 6))
        with torch.no_grad():
            logits, state = exported.start(ids)
            ref = model(torch.zeros(3, 1, model.n_out), model.start(ids))
            assert torch.allclose(logits, ref.logits, atol=1e-4)
            frame = logits[:, -1:, :-1]
            assert torch.allclose(exported.step(frame, state)[0], model(frame, ref.state).logits,
                                  atol=1e-4)
        return
    if loaded.config.task == "ctc":  # frames, model.patch per position, streamed with the front end's state
        patch, dim = loaded.config.model.patch, loaded.config.model.input_dim
        x = torch.randn(3, 5 * patch, dim)
        with torch.no_grad():
            logits, state = exported.prefill(x)
            ref = model(x, model.init_state(3))
            assert torch.allclose(logits, ref.logits, atol=1e-4)
            step = torch.randn(3, patch, dim)
            assert torch.allclose(exported.step(step, state)[0], model(step, ref.state).logits,
                                  atol=1e-4)
        return
    if loaded.config.task == "anomaly":  # a next-step model streams features with its state
        x = torch.randn(3, 7, loaded.config.model.input_dim)
        with torch.no_grad():
            params, state = exported.prefill(x)
            ref = model(x, model.init_state(3))
            assert torch.allclose(params, ref.logits, atol=1e-4)
            step = torch.randn(3, 1, x.shape[-1])
            assert torch.allclose(exported.step(step, state)[0], model(step, ref.state).logits,
                                  atol=1e-4)
        return
    if loaded.config.model.input == "features":  # a forecast window: context + horizon positions
        inputs = torch.randn(3, config.data.context + config.data.horizon,
                             loaded.config.model.input_dim)
        assert [k for k, v in manifest["graphs"].items() if v] == ["forward"]
        with torch.no_grad():
            assert torch.allclose(exported.forward(inputs), model(inputs).logits, atol=1e-4)
        return
    vocab = model.backbone.embed.num_embeddings
    ids = torch.randint(0, vocab, (3, 7))
    with torch.no_grad():
        if model.causal:
            logits, state = exported.prefill(ids)
            ref = model(ids, model.init_state(3))
            assert torch.allclose(logits, ref.logits, atol=1e-4)
            token = ids[:, -1:]
            assert torch.allclose(exported.step(token, state)[0], model(token, ref.state).logits,
                                  atol=1e-4)
        else:
            assert list(k for k, v in manifest["graphs"].items() if v) == ["forward"]
            assert torch.allclose(exported.forward(ids), model(ids).logits, atol=1e-4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_load_evaluate_and_serve(name, data, tmp_path):
    result = seqlab.fit(config_for(name, data), tmp_path / "run")
    pipeline = seqlab.load(tmp_path / "run")
    if name != "synthetic":  # a synthetic run evaluates on fresh sequences it draws
        again = pipeline.evaluate(max_batches=TRAIN["eval_batches"])
        assert again["val_loss"] == pytest.approx(result.best, rel=1e-5)  # the weights kept
    case = CASES[name]
    if name == "forecast":
        case = Case(case.config, ("/v1/forecast", {"history": series_rows(data, "history"),
                                                   "future": series_rows(data, "future")}),
                    forecast_call(data), lambda r: r["forecasts"])
    if name == "ctc":
        case = transcribe_case(data)
    if name == "anomaly":
        case = Case(case.config, ("/v1/anomaly", {"rows": series_rows(data, "history")}),
                    anomaly_call(data), lambda r: r["scores"])
    service = Service(tmp_path / "run")
    with TestClient(create_app(service)) as client:
        assert client.get("/health").json()["objective"] == name
        info = client.get("/v1/info").json()
        if case.request is None:
            assert info["endpoint"] is None
            return
        endpoint, body = case.request
        assert info["endpoint"] == endpoint
        response = client.post(endpoint, json=body)
        assert response.status_code == 200, response.text
        got, expected = case.received(response.json()), case.expected(pipeline)
        assert json.loads(json.dumps(got)) == pytest.approx(json.loads(json.dumps(expected)), abs=1e-5) \
            if name in ("regress", "forecast", "anomaly") else got == json.loads(json.dumps(expected))
