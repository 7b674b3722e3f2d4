"""Long-range DNA records: the two signals sit where stated and far apart, labels are
balanced, neither signal alone says anything about the label, and a seed fixes it all."""

import re
from collections import Counter

import numpy as np
import pytest

from seqlab.data.example_sources import ExamplesOptions, attach_labels
from seqlab.data.records import read_records
from seqlab.datasets.long_dna import (ENHANCERS, HEADER_LABEL, LABELS, MOTIF_LENGTH, PAIR_LABEL,
                                      PROMOTERS, LongDNASpec, make_long_dna, write_long_dna)

SMALL = LongDNASpec(length=4096, enhancer_span=512, promoter_span=512, sites=4, decoys=8)


@pytest.fixture(scope="module")
def records():
    return make_long_dna(400, seed=1, spec=SMALL)


def occurrences(sequence, motif):
    return [m.start() for m in re.finditer(f"(?={motif})", sequence)]


def test_default_records_are_32k_with_signals_at_least_28672_bases_apart():
    spec = LongDNASpec()
    assert (spec.length, spec.min_distance) == (32768, 28672)
    for r in make_long_dna(4, seed=0, spec=spec):
        assert len(r.sequence) == 32768 and set(r.sequence) <= set("ACGT")
        gap = min(r.promoter_sites) - (max(r.enhancer_sites) + MOTIF_LENGTH)
        assert gap >= spec.min_distance


def test_signals_are_where_stated_and_nowhere_else(records):
    spec = SMALL
    for r in records:
        assert len(r.enhancer_sites) == len(r.promoter_sites) == spec.sites
        assert all(0 <= s and s + MOTIF_LENGTH <= spec.enhancer_span for s in r.enhancer_sites)
        assert all(spec.length - spec.promoter_span <= s and s + MOTIF_LENGTH <= spec.length
                   for s in r.promoter_sites)
        assert min(r.promoter_sites) - (max(r.enhancer_sites) + MOTIF_LENGTH) >= spec.min_distance
        assert all(spec.enhancer_span <= s < spec.length - spec.promoter_span for s in r.decoy_sites)
        # The class motif at its sites; no full motif of any class anywhere else.
        assert occurrences(r.sequence, ENHANCERS[r.enhancer]) == list(r.enhancer_sites)
        assert occurrences(r.sequence, PROMOTERS[r.promoter]) == list(r.promoter_sites)
        other = {"dev": "hk", "hk": "dev"}
        assert occurrences(r.sequence, ENHANCERS[other[r.enhancer]]) == []
        assert occurrences(r.sequence, PROMOTERS[other[r.promoter]]) == []


def test_labels_are_balanced_and_follow_the_classes(records):
    assert Counter(r.label for r in records) == {LABELS[0]: 200, LABELS[1]: 200}
    assert all((r.label == "active") == (r.enhancer == r.promoter) for r in records)
    uneven = Counter(r.label for r in make_long_dna(37, seed=5, spec=SMALL))
    assert abs(uneven["active"] - uneven["inactive"]) <= 2


def test_the_label_is_independent_of_each_signal_alone(records):
    for signal in ("enhancer", "promoter"):
        table = Counter((getattr(r, signal), r.label) for r in records)
        assert set(table.values()) == {100}, (signal, table)  # P(label | class) = 1/2 exactly
    # Nor does the make-up of either region alone tell the label: GC content of each
    # region, correlated with the label over 400 records (sd of r about 0.05).
    label = np.array([r.label == "active" for r in records], dtype=float)
    for region in (slice(0, SMALL.enhancer_span), slice(SMALL.length - SMALL.promoter_span, None)):
        gc = np.array([sum(c in "GC" for c in r.sequence[region]) for r in records], dtype=float)
        assert abs(np.corrcoef(gc, label)[0, 1]) < 0.2


def test_background_has_genome_like_composition(records):
    text = "".join(r.sequence[SMALL.enhancer_span:SMALL.length - SMALL.promoter_span]
                   for r in records[:50])
    gc = (text.count("G") + text.count("C")) / len(text)
    cpg_expected = (text.count("C") / len(text)) * (text.count("G") / len(text))
    assert 0.39 < gc < 0.43
    assert text.count("CG") / len(text) / cpg_expected < 0.35  # CpG depleted


def test_deterministic_by_seed_and_record_index():
    a, b = make_long_dna(6, seed=3, spec=SMALL), make_long_dna(6, seed=3, spec=SMALL)
    assert a == b
    assert make_long_dna(6, seed=4, spec=SMALL) != a
    assert make_long_dna(2, seed=3, start=4, spec=SMALL) == a[4:]


def test_fasta_labels_read_back_through_header_label(tmp_path):
    counts = write_long_dna(tmp_path, n_train=8, n_val=4, seed=2, spec=SMALL)
    assert counts == {"train": 8, "val": 4, "length": 4096, "min_distance": 3072}
    expected = make_long_dna(12, seed=2, spec=SMALL)
    rows = [read_records(tmp_path / f"{split}.fasta") for split in ("train", "val")]
    records = rows[0] + rows[1]
    attach_labels(records, ExamplesOptions(path=str(tmp_path / "train.fasta"),
                                           header_label=HEADER_LABEL))
    assert [r.fields["label"] for r in records] == [r.label for r in expected]
    assert [str(r.fields["text"]) for r in records] == [r.sequence for r in expected]
    attach_labels(records, ExamplesOptions(path=str(tmp_path / "train.fasta"),
                                           header_label=PAIR_LABEL))
    assert [r.fields["label"] for r in records] == [f"enhancer={r.enhancer} promoter={r.promoter}"
                                                    for r in expected]


@pytest.mark.parametrize("bad", [dict(sites=0), dict(decoys=-1), dict(enhancer_span=40, sites=4),
                                 dict(length=2048, enhancer_span=1024, promoter_span=1100),
                                 dict(length=4096, enhancer_span=1024, promoter_span=1024,
                                      decoys=200)])
def test_bad_specs_raise(bad):
    with pytest.raises(ValueError):
        LongDNASpec(**bad)
