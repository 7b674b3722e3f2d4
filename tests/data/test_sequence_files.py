"""FASTA and FASTQ examples through Biopython (gzip too): labels from the header, from a
CSV keyed by record id, and per-residue tags from a companion FASTA; training on them;
malformed files and missing labels named."""

import gzip
import random

import pytest

import seqlab
from seqlab.config import RunConfig
from seqlab.data.records import read_records
from seqlab.errors import ConfigError, DataError

pytest.importorskip("Bio")


def proteins(n=40, seed=0):
    """Sequences whose family is the residue they are rich in; 'helix' marks runs of it."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        family = rng.choice(["kinase", "globin"])
        rich = "K" if family == "kinase" else "G"
        seq = "".join(rng.choice(rich * 3 + "ACDEL") for _ in range(rng.randint(8, 20)))
        tags = "".join("H" if c == rich else "C" for c in seq)
        out.append((f"P{i:03d}", family, seq, tags))
    return out


def fasta(records, *, header=True) -> str:
    return "".join(f">{pid} {'family=' + fam if header else 'protein'}\n{seq[:10]}\n{seq[10:]}\n"
                   for pid, fam, seq, _ in records)


def test_fasta_fastq_and_gzip_read_as_records(tmp_path):
    (tmp_path / "a.fasta").write_text(">s1 first one\nACGT\nAC\n>s2\nGG\n")
    with gzip.open(tmp_path / "b.fa.gz", "wt") as f:
        f.write(">s3 zipped\nTTTT\n")
    (tmp_path / "c.fastq").write_text("@r1\nACGT\n+\nII#I\n")
    a, b, c = (read_records(tmp_path / n) for n in ("a.fasta", "b.fa.gz", "c.fastq"))
    assert [r.fields["text"] for r in a] == ["ACGTAC", "GG"]
    assert a[0].fields["id"] == "s1" and a[0].fields["description"] == "s1 first one"
    assert b[0].fields["text"] == "TTTT" and "record 1 (s3)" in b[0].where
    assert c[0].fields["quality"] == [40, 40, 2, 40]


def test_malformed_sequence_files_are_named(tmp_path):
    (tmp_path / "bad.fastq").write_text("@r1\nACGT\n+\nII\n")  # quality shorter than the read
    with pytest.raises(DataError, match=r"bad.fastq: not valid FASTQ at record 1"):
        read_records(tmp_path / "bad.fastq")
    (tmp_path / "text.fasta").write_text("no header here\n>s1\nAC\n")
    with pytest.raises(DataError, match=r"text.fasta: not valid FASTA at the start: This FASTA "
                                        r"file contains comments at the beginning"):
        read_records(tmp_path / "text.fasta")
    (tmp_path / "empty.fasta").write_text("")
    with pytest.raises(DataError, match="empty.fasta holds no FASTA records"):
        read_records(tmp_path / "empty.fasta")


def config(data: dict, task="classify", **extra) -> RunConfig:
    return RunConfig.from_dict({
        "task": task, "seed": 0, "tokenizer": {"kind": "protein"},
        "model": {"mixer": "lstm", "d_model": 16, "n_layers": 1, "causal": False,
                  "context_length": 32, "position": "none"},
        "data": {"source": "examples", **data}, **extra,
        "train": {"steps": 30, "batch_size": 8, "lr": 1e-2, "warmup_steps": 1, "eval_every": 30,
                  "progress": False, "num_threads": 1}})


def test_protein_families_from_the_header(tmp_path):
    train, val = proteins(60), proteins(20, seed=1)
    (tmp_path / "train.fasta").write_text(fasta(train))
    (tmp_path / "val.fasta").write_text(fasta(val))
    result = seqlab.fit(config({"path": str(tmp_path / "train.fasta"),
                                "val_path": str(tmp_path / "val.fasta"),
                                "header_label": r"family=(\w+)"}), tmp_path / "run")
    assert result.metrics["accuracy"] >= 0.9
    assert seqlab.load(tmp_path / "run").labels.names == ["globin", "kinase"]


def test_labels_from_a_csv_keyed_by_record_id(tmp_path):
    train = proteins(30)
    (tmp_path / "train.fasta").write_text(fasta(train, header=False))
    (tmp_path / "labels.csv").write_text("id,family\n" + "".join(f"{p},{f}\n" for p, f, _, _ in train))
    data = {"path": str(tmp_path / "train.fasta"), "labels": str(tmp_path / "labels.csv"),
            "label_field": "family"}
    result = seqlab.fit(config(data), tmp_path / "run")
    assert "accuracy" in result.metrics
    (tmp_path / "labels.csv").write_text("id,family\nP000,kinase\n")
    with pytest.raises(DataError, match=r"record 2 \(P001\): .*labels.csv has no entry for 'P001'"):
        seqlab.fit(config(data), tmp_path / "run2")


def test_per_residue_tags_from_a_companion_fasta(tmp_path):
    train = proteins(60)
    (tmp_path / "train.fasta").write_text(fasta(train))
    (tmp_path / "ss.fasta").write_text("".join(f">{p}\n{t}\n" for p, _, _, t in train))
    data = {"path": str(tmp_path / "train.fasta"), "tags_path": str(tmp_path / "ss.fasta")}
    result = seqlab.fit(config(data, task="tag"), tmp_path / "run")
    assert result.metrics["accuracy"] > 0.9  # a residue's tag is its letter
    tags = seqlab.load(tmp_path / "run").predict("KKAG")["tags"]
    assert len(tags) == 4
    (tmp_path / "ss.fasta").write_text("".join(f">{p}\n{t}C\n" for p, _, _, t in train))
    with pytest.raises(DataError, match=r"record 1 \(P000\): its tags in .*ss.fasta are \d+ long"):
        seqlab.fit(config(data, task="tag"), tmp_path / "run2")


def test_one_label_source_at_a_time(tmp_path):
    (tmp_path / "t.fasta").write_text(fasta(proteins(10)))
    with pytest.raises(ConfigError, match="give one label source"):
        seqlab.fit(config({"path": str(tmp_path / "t.fasta"), "header_label": "(x)",
                           "labels": str(tmp_path / "l.csv")}), tmp_path / "run")
    with pytest.raises(DataError, match=r"header_label '\(kinase9\)' finds no label"):
        seqlab.fit(config({"path": str(tmp_path / "t.fasta"), "header_label": "(kinase9)"}),
                   tmp_path / "run")
