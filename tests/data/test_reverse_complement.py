"""DNA strands: complements are involutions, training examples read reverse-complemented
by a seeded choice (tags reversed with them), strand-averaged predictions are the same
for a sequence and its reverse complement, and strand-averaged scores (classify, tag,
regress; padded batches) equal the mean of both strands' outputs run one at a time."""

import json
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import seqlab
from seqlab.config import RunConfig
from seqlab.data.tokenizers import build_tokenizer
from seqlab.errors import ConfigError
from seqlab.cli import main
from seqlab.tasks import OBJECTIVES
from seqlab.tasks.strand import strand_flip_index


@settings(max_examples=50, deadline=None)
@given(seq=st.text("ACGTRYSWKMBDHVNacgtn", max_size=40))
def test_reverse_complement_twice_is_the_sequence(seq):
    dna = build_tokenizer("dna", soft_mask=True)
    assert dna.reverse_complement(dna.reverse_complement(seq)) == seq
    table = dna.complement_ids()
    assert np.array_equal(table[table], np.arange(dna.vocab_size))
    ids = np.asarray(dna.encode(seq), dtype=np.int64)
    assert dna.decode(table[ids][::-1]) == dna.reverse_complement(seq)


def genes(folder, n=48, seed=0):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        seq = "".join(rng.choice("ACGT") for _ in range(rng.randint(6, 20)))
        label = "gc" if seq.count("G") + seq.count("C") > len(seq) / 2 else "at"
        rows.append({"text": seq, "label": label, "tags": "".join("S" if c in "GC" else "W" for c in seq)})
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "train.jsonl"


def config(path, task="classify", **data):
    return RunConfig.from_dict({
        "task": task, "seed": 0, "tokenizer": {"kind": "dna"},
        "model": {"mixer": "gru", "d_model": 16, "n_layers": 1, "causal": False,
                  "context_length": 32, "position": "none"},
        "data": {"source": "examples", "path": str(path), "reverse_complement": True, **data},
        "train": {"steps": 6, "batch_size": 8, "lr": 1e-2, "eval_every": 3, "progress": False,
                  "num_threads": 1}})


def test_training_examples_read_reverse_complemented_by_a_seeded_choice(tmp_path):
    path = genes(tmp_path)
    plain_cfg = config(path, task="tag", label_field="tags").replace(["data.reverse_complement=false"])
    augmented, plain = (OBJECTIVES.get("tag").cls(c) for c in (config(path, task="tag", label_field="tags"), plain_cfg))
    for objective in (augmented, plain):
        objective.prepare(None)
    a, b = augmented.train_batch(2, 0), plain.train_batch(2, 0)
    table = torch.from_numpy(augmented.tokenizer.complement_ids())
    flipped = 0
    for row in range(a.size):
        n = int((b.inputs[row] != plain.tokenizer.pad_id).sum())
        if torch.equal(a.inputs[row, :n], b.inputs[row, :n]):
            assert torch.equal(a.targets[row, :n], b.targets[row, :n])
            continue
        flipped += 1
        assert torch.equal(a.inputs[row, :n], table[b.inputs[row, :n]].flip(0))
        assert torch.equal(a.targets[row, :n], b.targets[row, :n].flip(0))
    assert 0 < flipped < a.size
    assert torch.equal(augmented.train_batch(2, 0).inputs, a.inputs)  # a pure function of the step


def test_strand_averaged_predictions_agree_on_both_strands(tmp_path):
    seqlab.fit(config(genes(tmp_path)), tmp_path / "run")
    pipeline = seqlab.load(tmp_path / "run")
    seq = "GGCATTACGGA"
    rc = pipeline.tokenizer.reverse_complement(seq)
    one, other = (pipeline.predict(s, reverse_complement=True) for s in (seq, rc))
    assert one["probabilities"] == pytest.approx(other["probabilities"], abs=2e-6)
    assert one["label"] == other["label"]


def test_strands_need_a_nucleotide_tokenizer(tmp_path):
    path = genes(tmp_path)
    cfg = config(path).replace(["tokenizer.kind=byte"])
    with pytest.raises(ConfigError, match="data.reverse_complement needs a dna or rna tokenizer"):
        seqlab.fit(cfg, tmp_path / "run")


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(0, 9), min_size=1, max_size=4), keep_first=st.integers(0, 1))
def test_the_strand_flip_reverses_real_tokens_only_and_undoes_itself(lengths, keep_first):
    T = max(lengths) + keep_first
    mask = torch.arange(T) < (torch.tensor(lengths) + keep_first).unsqueeze(1)  # (B, T)
    index = strand_flip_index(mask, mask.shape, keep_first=keep_first)
    values = torch.arange(len(lengths) * T).view(len(lengths), T)
    flipped = values.gather(1, index)
    assert torch.equal(flipped.gather(1, index), values)
    for row, n in enumerate(lengths):
        real = values[row, keep_first:keep_first + n]
        assert torch.equal(flipped[row, keep_first:keep_first + n], real.flip(0))
        assert torch.equal(flipped[row, :keep_first], values[row, :keep_first])
        assert torch.equal(flipped[row, keep_first + n:], values[row, keep_first + n:])


@pytest.mark.parametrize("task", ["classify", "tag", "regress"])
def test_strand_averaged_scores_equal_the_mean_of_both_strands_run_one_by_one(tmp_path, task):
    path = genes(tmp_path, n=24)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    if task == "regress":
        rows = [{**r, "gc": r["text"].count("G") + r["text"].count("C")} for r in rows]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    field = {"classify": "label", "tag": "tags", "regress": "gc"}[task]
    seqlab.fit(config(path, task=task, label_field=field), tmp_path / "run")
    pipeline = seqlab.load(tmp_path / "run")
    model, tok = pipeline.model, pipeline.tokenizer
    names = [str(n) for n in pipeline.labels.names] if task != "regress" else None
    total, count = 0.0, 0
    with torch.no_grad():
        for r in rows:
            given_, other = (torch.tensor([tok.encode(s)]) for s in (r["text"], tok.reverse_complement(r["text"])))
            a, b = model(given_).logits.float(), model(other).logits.float()
            if task == "tag":
                b = b.flip(1)
            mean = (a + b) / 2
            if task == "classify":
                target = torch.tensor([names.index(r["label"])])
                total += float(torch.nn.functional.cross_entropy(mean, target, reduction="sum"))
                count += 1
            elif task == "tag":
                target = torch.tensor([[names.index(t) for t in r["tags"]]])
                total += float(torch.nn.functional.cross_entropy(mean.flatten(0, 1), target.flatten(),
                                                                 reduction="sum"))
                count += len(r["tags"])
            else:
                std = model.head.target_std
                total += float((((mean - r["gc"]) / std) ** 2).sum())
                count += 1
    metrics = pipeline.evaluate(path, batch_size=5, reverse_complement=True)  # padded batches
    assert metrics["val_loss"] == pytest.approx(total / count, rel=1e-4)
    assert pipeline.evaluate(path, batch_size=5)["val_loss"] != pytest.approx(total / count, rel=1e-4)


def test_strand_averaged_tags_are_the_same_on_either_strand(tmp_path):
    seqlab.fit(config(genes(tmp_path), task="tag", label_field="tags"), tmp_path / "run")
    pipeline = seqlab.load(tmp_path / "run")
    seq = "GGCATTACGGATTTAC"
    rc = pipeline.tokenizer.reverse_complement(seq)
    one, other = pipeline.predict([seq, rc], reverse_complement=True)
    assert one["tags"] == other["tags"][::-1]
    assert one["confidence"] == pytest.approx(other["confidence"][::-1], abs=2e-4)
    out = tmp_path / "tags.jsonl"
    (tmp_path / "new.jsonl").write_text(json.dumps({"text": seq}) + "\n" + json.dumps({"text": rc}) + "\n")
    assert main(["predict", str(tmp_path / "run"), "--data", str(tmp_path / "new.jsonl"),
                 "--out", str(out), "--reverse-complement"]) == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["tags"] for w in written] == [one["tags"], other["tags"]]
    assert main(["eval", str(tmp_path / "run"), "--reverse-complement"]) == 0


def test_strand_averaging_needs_a_nucleotide_tokenizer(tmp_path):
    path = genes(tmp_path)
    seqlab.fit(config(path).replace(["tokenizer.kind=char", "data.reverse_complement=false"]),
               tmp_path / "run")
    pipeline = seqlab.load(tmp_path / "run")
    for call in (lambda: pipeline.predict("ACGT", reverse_complement=True),
                 lambda: pipeline.evaluate(path, reverse_complement=True)):
        with pytest.raises(ConfigError, match="reverse-complement averaging needs a run with a dna "
                                              "or rna tokenizer .* 'char'"):
            call()
