"""DNA strands: complements are involutions, training examples read reverse-complemented
by a seeded choice (tags reversed with them), and strand-averaged predictions are the
same for a sequence and its reverse complement."""

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
from seqlab.tasks import OBJECTIVES


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
