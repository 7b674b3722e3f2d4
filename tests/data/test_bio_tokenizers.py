"""Protein, DNA/RNA and k-mer tokenizers: lossless round trips over their alphabets,
unknown letters, soft-masking, residue counts for bits per residue, files, config."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqlab
from seqlab.config import RunConfig
from seqlab.data.bio_tokenizers import IUPAC, PROTEIN, PROTEIN_AMBIGUOUS
from seqlab.data.tokenizer_base import load_tokenizer
from seqlab.data.tokenizers import build_tokenizer
from seqlab.errors import ConfigError, TokenizerError

protein = st.text(PROTEIN + PROTEIN_AMBIGUOUS, max_size=50)
dna = st.text("ACGT", max_size=50)


@settings(max_examples=50, deadline=None)
@given(seq=protein)
def test_protein_round_trip_and_counts(seq):
    tok = build_tokenizer("protein")
    ids = tok.encode(seq)
    assert tok.decode(ids) == seq and tok.count_units(ids) == len(seq)
    assert tok.encode(seq.lower()) == ids  # lowercase reads as uppercase
    assert tok.encode("\n".join(seq[i:i + 7] for i in range(0, len(seq), 7))) == ids


def test_unknown_letters_are_unk_and_count_as_residues():
    tok = build_tokenizer("protein")
    ids = tok.encode("MK*Vé")
    assert ids[2] == ids[4] == tok.unk_id and tok.decode(ids) == "MK?V?"
    assert tok.count_units(ids) == 5 and tok.vocab_size == 26 + 4


@settings(max_examples=50, deadline=None)
@given(seq=st.text("ACGTacgt" + IUPAC, max_size=40))
def test_dna_soft_masking_keeps_case_only_when_asked(seq):
    soft, plain = build_tokenizer("dna", soft_mask=True), build_tokenizer("dna")
    assert soft.decode(soft.encode(seq)) == seq
    assert plain.decode(plain.encode(seq)) == seq.upper()
    assert soft.vocab_size == plain.vocab_size + len("ACGT" + IUPAC)


def test_rna_reads_uracil():
    tok = build_tokenizer("rna")
    assert tok.decode(tok.encode("ACGUN")) == "ACGUN"
    assert tok.encode("T") == [tok.unk_id]


@settings(max_examples=60, deadline=None)
@given(seq=dna, k=st.integers(1, 5))
def test_kmers_round_trip_and_count_bases(seq, k):
    split = build_tokenizer("kmer", k=k)
    ids = split.encode(seq)
    assert split.decode(ids) == seq and split.count_units(ids) == len(seq)
    assert len(ids) == len(seq) // k + len(seq) % k
    sliding = build_tokenizer("kmer", k=k, overlap=True)
    ids = sliding.encode(seq)
    assert sliding.decode(ids) == seq
    if len(seq) >= k:
        assert len(ids) == len(seq) - k + 1
        assert sliding.count_units(ids[1:]) == len(seq) - k  # each later k-mer adds one base


def test_a_kmer_with_another_letter_is_unknown():
    tok = build_tokenizer("kmer", k=3)
    ids = tok.encode("ACGNAG")
    assert ids == [tok.encode("ACG")[0], tok.unk_id] and tok.decode(ids) == "ACGNNN"


@pytest.mark.parametrize("kind, options", [("protein", {}), ("dna", {"soft_mask": True}),
                                           ("rna", {}), ("kmer", {"k": 4, "overlap": True})])
def test_files_round_trip(kind, options, tmp_path):
    tok = build_tokenizer(kind, mask=True, **options)
    tok.save(tmp_path / "t.json")
    again = load_tokenizer(tmp_path / "t.json")
    assert again == tok and again.mask_id is not None
    assert again.encode("ACGTACGA") == tok.encode("ACGTACGA")


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer.k applies to kind kmer, not 'dna'"):
        RunConfig.from_dict({"tokenizer": {"kind": "dna", "k": 3}})
    with pytest.raises(ConfigError, match="tokenizer.soft_mask applies to kind dna or rna"):
        RunConfig.from_dict({"tokenizer": {"kind": "protein", "soft_mask": True}})
    with pytest.raises(ConfigError, match="tokenizer.k must be 1..8"):
        build_tokenizer("kmer", k=9)
    (tmp_path / "t.json").write_text('{"kind": "kmer", "version": 1, "k": 12, "overlap": false}')
    with pytest.raises(TokenizerError, match="'k' must be 1..8"):
        load_tokenizer(tmp_path / "t.json")


def test_a_dna_language_model_reports_bits_per_residue(tmp_path):
    import random

    rng = random.Random(0)
    (tmp_path / "genome.txt").write_text("".join(rng.choice("ACGT") for _ in range(6000)))
    config = RunConfig.from_dict({
        "seed": 0, "tokenizer": {"kind": "kmer", "k": 3},
        "model": {"mixer": "gru", "d_model": 16, "n_layers": 1, "context_length": 32,
                  "position": "none"},
        "data": {"path": str(tmp_path / "genome.txt")},
        "train": {"steps": 10, "batch_size": 8, "eval_every": 10, "eval_batches": 2,
                  "progress": False, "num_threads": 1}})
    result = seqlab.fit(config, tmp_path / "run")
    # Uniform random bases: no model beats 2 bits per base, and an untrained one is near it.
    assert 1.9 < result.metrics["bits_per_residue"] < 2.6
    assert seqlab.load(tmp_path / "run").tokenizer.k == 3
