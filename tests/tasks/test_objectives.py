"""The labelled objectives and masked LM end to end on tiny data: train, evaluate, load,
predict, for token and feature inputs and for causal and bidirectional mixers."""

import json
import random

import numpy as np
import pytest
import torch

import seqlab
from seqlab.config import RunConfig
from seqlab.errors import ConfigError, DataError
from seqlab.tasks import OBJECTIVES

MIXER_ARGS = {
    "lstm": {"position": "none"},
    "gru": {"position": "none"},
    "attention": {"position": "rope"},
    "mamba": {"position": "none"},
    "s4d": {"position": "none"},
    "window_attention": {"position": "rope", "mixer_options": {"window_attention": {"window": 4}}},
}


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """Examples whose class is the letter they repeat; tags mark that letter (B/I spans)."""
    rng = random.Random(0)
    folder = tmp_path_factory.mktemp("texts")
    rows = []
    for _ in range(120):
        label = rng.choice(["ab", "cd"])
        letter = label[0]
        text = "".join(rng.choice(letter + "xyz") for _ in range(rng.randint(4, 20)))
        tags = ["O"] * len(text)
        for i, c in enumerate(text):
            if c == letter:
                tags[i] = "I-L" if i and text[i - 1] == letter else "B-L"
        rows.append({"text": text, "label": label, "tags": tags, "share": text.count(letter) / len(text)})
    for name, part in (("train.jsonl", rows[:100]), ("val.jsonl", rows[100:])):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    return folder


@pytest.fixture(scope="module")
def signals(tmp_path_factory):
    """Two-channel sine waves whose frequency is the class; varying lengths."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("signals")
    for split, n in (("train", 90), ("val", 30)):
        lengths = rng.integers(8, 24, n)
        labels = rng.integers(0, 2, n)
        rows = [np.stack([np.sin(np.arange(t) * (0.3 + 1.2 * y)), np.cos(np.arange(t) * 0.5)], 1)
                for t, y in zip(lengths, labels)]
        np.savez(folder / f"{split}.npz", features=np.concatenate(rows).astype(np.float32),
                 lengths=lengths, labels=labels)
    return folder


def config(task, data, mixer="lstm", causal=True, steps=4, **task_options):
    return RunConfig.from_dict({
        "task": task, "seed": 0, "task_options": task_options,
        "model": {"mixer": mixer, "d_model": 16, "n_layers": 1, "n_heads": 2, "causal": causal,
                  "context_length": 32, **MIXER_ARGS[mixer]},
        "data": data,
        "train": {"steps": steps, "batch_size": 8, "lr": 1e-2, "warmup_steps": 1,
                  "eval_every": steps, "log_every": 1, "progress": False, "num_threads": 1},
    })


def token_data(texts, **extra):
    return {"source": "examples", "path": str(texts / "train.jsonl"),
            "val_path": str(texts / "val.jsonl"), **extra}


@pytest.mark.parametrize("mixer, causal", [("lstm", True), ("attention", False), ("mamba", True),
                                           ("gru", False), ("window_attention", True)])
def test_classify_tokens_every_mode(texts, tmp_path, mixer, causal):
    run = tmp_path / "run"
    result = seqlab.fit(config("classify", token_data(texts), mixer, causal), run)
    assert {"val_loss", "accuracy", "macro_f1"} <= set(result.metrics)
    assert (run / "plots" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    pipeline = seqlab.load(run)
    assert pipeline.labels.names == ["ab", "cd"]
    assert pipeline.model.head.pooling == ("last" if causal else "mean")
    out = pipeline.predict(["aaxa", "cdcdxz"])
    assert [set(o["probabilities"]) for o in out] == [{"ab", "cd"}] * 2
    assert all(abs(sum(o["probabilities"].values()) - 1) < 1e-4 for o in out)
    assert pipeline.evaluate(texts / "val.jsonl")["accuracy"] == pytest.approx(result.metrics["accuracy"])


def test_classify_learns_above_chance(texts, tmp_path):
    result = seqlab.fit(config("classify", token_data(texts), "lstm", steps=40), tmp_path / "run")
    assert result.metrics["accuracy"] >= 0.9


@pytest.mark.parametrize("mixer", ["gru", "attention", "s4d"])
def test_classify_features(signals, tmp_path, mixer):
    data = {"source": "features", "path": str(signals / "train.npz"),
            "val_path": str(signals / "val.npz"), "bucket": True}
    result = seqlab.fit(config("classify", data, mixer, causal=mixer != "attention", steps=30),
                        tmp_path / "run")
    assert result.metrics["accuracy"] >= 0.8
    saved = RunConfig.from_yaml(tmp_path / "run" / "config.yaml").model
    assert (saved.input, saved.input_dim, saved.vocab_size) == ("features", 2, None)
    pipeline = seqlab.load(tmp_path / "run")
    wave = np.stack([np.sin(np.arange(20) * 1.5), np.cos(np.arange(20) * 0.5)], 1)
    assert pipeline.predict(wave)["label"] in (0, 1)


def test_tag_reports_per_tag_and_span_f1(texts, tmp_path):
    result = seqlab.fit(config("tag", token_data(texts, label_field="tags"), steps=40), tmp_path / "run")
    m = result.metrics
    assert {"accuracy", "macro_f1", "span_f1", "span_precision", "span_recall",
            "f1/B-L", "f1/I-L", "f1/O"} <= set(m)
    assert m["accuracy"] > 0.9 and m["span_f1"] > 0.7
    tags = seqlab.load(tmp_path / "run").predict("aaxaa")["tags"]
    assert len(tags) == 5  # one per byte


def test_regress_one_and_several_targets(texts, tmp_path):
    one = seqlab.fit(config("regress", token_data(texts, label_field="share"), steps=30),
                     tmp_path / "one")
    assert {"mae", "rmse", "r2"} <= set(one.metrics) and one.metrics["r2"] > 0.0
    assert isinstance(seqlab.load(tmp_path / "one").predict("aax")["value"], float)
    two = seqlab.fit(config("regress", token_data(texts, label_field=["share", "share"]),
                            loss="mae"), tmp_path / "two")
    assert {"mae/share", "r2/share"} <= set(two.metrics)


@pytest.mark.parametrize("mixer", ["attention", "lstm", "s4d"])
def test_masked_lm_on_examples_and_fill_mask(texts, tmp_path, mixer):
    data = token_data(texts)
    result = seqlab.fit(config("masked_lm", data, mixer, causal=False), tmp_path / "run")
    assert {"val_loss", "masked_accuracy", "perplexity"} <= set(result.metrics)
    pipeline = seqlab.load(tmp_path / "run")
    assert pipeline.tokenizer.mask_id is not None
    (first, second) = pipeline.fill_mask("a<mask>x<mask>", top_k=3)
    assert len(first) == 3 and all(o["token"] not in ("<mask>", "<pad>") for o in first)
    assert sum(o["probability"] for o in second) <= 1.0


def test_masked_lm_masks_are_a_pure_function_of_the_step(texts):
    cfg = config("masked_lm", token_data(texts), "attention", causal=False)
    a, b = (OBJECTIVES.get("masked_lm").cls(cfg.copy()) for _ in range(2))
    for objective in (a, b):
        objective.prepare(None)
    x, y = a.train_batch(3, 0), b.train_batch(3, 0)
    assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)
    assert not torch.equal(x.targets, a.train_batch(4, 0).targets)
    chosen = x.targets != -100
    real = x.padding_mask if x.padding_mask is not None else torch.ones_like(chosen)
    assert bool((chosen <= real).all())  # padding is never chosen
    assert bool(chosen.any(1).all())  # every sequence has at least one


def test_masked_lm_split_is_80_10_10():
    from seqlab.tasks.masked_lm import MaskedLMOptions, mask_tokens

    ids = torch.randint(0, 200, (64, 256))
    rng = np.random.default_rng(0)
    inputs, targets = mask_tokens(ids, None, rng, options=MaskedLMOptions(), mask_id=300,
                                  special_ids=[256, 257, 258, 300], content_ids=torch.arange(256))
    chosen = targets != -100
    assert chosen.float().mean().item() == pytest.approx(0.15, abs=0.005)
    assert torch.equal(targets[chosen], ids[chosen]) and torch.equal(inputs[~chosen], ids[~chosen])
    masked = (inputs[chosen] == 300).float().mean().item()
    kept = (inputs[chosen] == ids[chosen]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.03) and kept == pytest.approx(0.1 + 0.1 / 256, abs=0.03)


def test_span_masking_chooses_runs():
    from seqlab.tasks.masked_lm import MaskedLMOptions, mask_tokens

    ids = torch.randint(0, 200, (16, 400))
    options = MaskedLMOptions(span_length=4.0)
    _, targets = mask_tokens(ids, None, np.random.default_rng(1), options=options, mask_id=300,
                             special_ids=[300], content_ids=torch.arange(256))
    chosen = (targets != -100).int()
    runs = (chosen[:, 1:] > chosen[:, :-1]).sum().item() + chosen[:, 0].sum().item()
    assert chosen.sum().item() / runs > 2.0  # single-token masking gives about 1.2


def test_masked_lm_refuses_causal_only_mixers():
    with pytest.raises(ConfigError, match="'mamba' runs only causal; mixers that can run "
                                          "bidirectional: attention, gru"):
        RunConfig.from_dict({"task": "masked_lm", "model": {"mixer": "mamba", "position": "none"},
                             "data": {"path": "x"}})


def test_predict_file_writes_every_example_in_order(texts, tmp_path):
    seqlab.fit(config("classify", token_data(texts)), tmp_path / "run")
    unlabelled = tmp_path / "new.csv"
    unlabelled.write_text("text\naaa\nccxd\nzz\n")
    assert seqlab.predict(tmp_path / "run", unlabelled, tmp_path / "out.csv") == 3
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "id,label,p_ab,p_cd"
    assert [line.split(",")[0] for line in lines[1:]] == [f"{unlabelled}:{n}" for n in (2, 3, 4)]
    seqlab.predict(tmp_path / "run", unlabelled, tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == [line.split(",")[1] for line in lines[1:]]


def test_unseen_class_in_evaluation_is_a_miss_not_a_crash(texts, tmp_path, caplog_seqlab):
    val = tmp_path / "val.jsonl"
    val.write_text(json.dumps({"text": "aaa", "label": "ab"}) + "\n"
                   + json.dumps({"text": "eee", "label": "ef"}) + "\n")
    data = {"source": "examples", "path": str(texts / "train.jsonl"), "val_path": str(val)}
    result = seqlab.fit(config("classify", data), tmp_path / "run")
    assert result.metrics["unseen"] == 1.0 and result.metrics["accuracy"] <= 0.5
    assert any("never seen in training" in r.getMessage() and "'ef'" in r.getMessage()
               for r in caplog_seqlab.records)


def test_predict_on_a_run_without_prediction_is_one_clear_error(tmp_path):
    (tmp_path / "corpus.txt").write_text("some text for a tiny model. " * 40)
    cfg = RunConfig.from_dict({"model": {"mixer": "lstm", "position": "none", "d_model": 16,
                                         "n_layers": 1, "context_length": 16},
                               "data": {"path": str(tmp_path / "corpus.txt")},
                               "train": {"steps": 1, "batch_size": 2, "progress": False}})
    seqlab.fit(cfg, tmp_path / "run")
    with pytest.raises(ConfigError, match="'causal_lm' run has no prediction.*use generate"):
        seqlab.predict(tmp_path / "run", tmp_path / "corpus.txt", tmp_path / "out.csv")


def test_tag_length_mismatch_names_the_record(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "abc", "tags": "AB"}) + "\n")
    cfg = config("tag", {"source": "examples", "path": str(bad), "val_path": str(bad),
                         "label_field": "tags"})
    with pytest.raises(DataError, match=r"bad.jsonl:1: 2 per-position labels for a sequence of 3"):
        seqlab.fit(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # bad data leaves no empty run behind
