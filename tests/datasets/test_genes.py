"""Synthetic genes: the biology holds in every gene (reading frame, splice sites,
promoter boxes, codon usage), on both strands and in the written files, and promoter
expression rises with how close the boxes are to the consensus."""

import csv
import math
import random
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.data.bio_tokenizers import DNATokenizer
from seqlab.data.records import read_records
from seqlab.datasets import (CODON_USAGE, REGIONS, make_gene, make_promoter,
                             promoter_strength, reverse_complement, write_gene_tagging,
                             write_promoter_strength)
from seqlab.datasets.genes import (BRANCH_DISTANCE, CAAT_DISTANCE, PROMOTER_UPSTREAM, SENSE,
                                   STOPS, TATA_DISTANCE, UPSTREAM, background)

PYRIMIDINES = set("CT")


def mismatches(a, b):
    return sum(x != y for x, y in zip(a, b))


def joined_coding(seq, labels):
    return "".join(b for b, t in zip(seq, labels) if t == "E")


def check_coding(cds):
    codons = [cds[i:i + 3] for i in range(0, len(cds), 3)]
    assert len(cds) % 3 == 0 and codons[0] == "ATG" and codons[-1] in STOPS
    assert not set(codons[:-1]) & set(STOPS)  # no earlier in-frame stop


def check_gene(g):
    """Everything a gene promises, read from its sequence, labels and annotation."""
    assert len(g.seq) == len(g.labels) and set(g.labels) <= set(REGIONS)
    cds = "".join(g.seq[a:b] for a, b in g.coding)
    assert cds == joined_coding(g.seq, g.labels)
    check_coding(cds)
    # Promoter: TATA box (at most one change) 25-35 bases upstream, the initiator at the TSS.
    assert TATA_DISTANCE[0] <= g.tss - g.tata <= TATA_DISTANCE[1]
    assert mismatches(g.seq[g.tata:g.tata + 6], "TATAAA") <= 1
    if g.caat is not None:
        assert CAAT_DISTANCE[0] <= g.tss - g.caat <= CAAT_DISTANCE[1]
        assert g.seq[g.caat + 2:g.caat + 7] == "CCAAT"
    assert g.labels[g.tss - 1:g.tss + 1] == "OU" and g.seq[g.tss] == "A"
    assert set(g.seq[g.tss - 2:g.tss]) <= PYRIMIDINES
    # The start codon is the transcript's first ATG, with a purine three bases before it.
    start = g.coding[0][0]
    assert g.seq.find("ATG", g.tss) == start and g.seq[start - 3] in "AG"
    # Introns: GT...AG, a branch point YTNAY 20-50 bases before the end, no AG after it.
    for (a, b), branch in zip(g.introns, g.branch):
        assert set(g.labels[a:b]) == {"I"} and g.labels[a - 1] == g.labels[b] == "E"
        assert g.seq[a:a + 2] == "GT" and g.seq[b - 2:b] == "AG"
        assert BRANCH_DISTANCE[0] <= b - branch <= BRANCH_DISTANCE[1]
        assert g.seq[branch - 3] in PYRIMIDINES and g.seq[branch - 2:branch + 1] in \
            {"T" + n + "A" for n in "ACGT"} and g.seq[branch + 1] in PYRIMIDINES
        assert "AG" not in g.seq[branch:b - 2]
        tract = g.seq[b - 16:b - 3]
        assert sum(c in PYRIMIDINES for c in tract) >= 0.7 * len(tract)
    # 3' UTR: a polyadenylation signal 10-30 bases before the cleavage site after CA.
    utr3 = g.seq[g.coding[-1][1]:g.cleavage]
    assert set(g.labels[g.coding[-1][1]:g.cleavage]) == {"U"} and utr3.endswith("CA")
    assert any(s in utr3[-36:-10] for s in ("AATAAA", "ATTAAA"))
    assert set(g.labels[g.cleavage:]) == {"O"}


def genes(n, seed=0):
    rng = random.Random(seed)
    return [make_gene(rng) for _ in range(n)]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 32 - 1))
def test_any_seed_gives_a_valid_gene(seed):
    check_gene(make_gene(random.Random(seed)))


def test_genes_are_valid_and_varied():
    made = genes(300)
    for g in made:
        check_gene(g)
    n_introns = Counter(len(g.introns) for g in made)
    assert set(n_introns) == {0, 1, 2, 3}
    phases = Counter((a - g.coding[0][0] - sum(x - y for x, y in g.introns if x < a)) % 3
                     for g in made for a, _ in g.introns)
    assert min(phases.values()) > 0.15 * sum(phases.values())  # introns inside codons too
    assert sum(g.caat is not None for g in made) > 150


def test_splice_sites_follow_the_consensus():
    made = genes(400, seed=1)
    exon_ends = [g.seq[a - 3:a] for g in made for a, _ in g.introns]
    next_exon = [g.seq[b] for g in made for _, b in g.introns]
    donors = [g.seq[a:a + 6] for g in made for a, _ in g.introns]
    n = len(exon_ends)
    assert n > 300
    assert sum(e.endswith("AG") for e in exon_ends) > 0.6 * n  # MAG|GT
    assert sum(e[0] in "AC" for e in exon_ends) > 0.6 * n
    assert sum(b == "G" for b in next_exon) > 0.6 * n  # AG|G
    assert all(d[2] in "AG" for d in donors)  # GTR
    assert sum(d[3:5] == "AG" for d in donors) > 0.5 * n  # GTRAG


def chi_square(counts, expected):
    return sum((counts.get(k, 0) - e) ** 2 / e for k, e in expected.items())


def test_codon_usage_follows_the_table():
    made = genes(400, seed=2)
    codons = Counter()
    for g in made:
        cds = joined_coding(g.seq, g.labels)
        codons.update(cds[i:i + 3] for i in range(3, len(cds) - 3, 3))
    n = sum(codons.values())
    total = sum(CODON_USAGE[c] for c in SENSE)
    expected = {c: n * CODON_USAGE[c] / total for c in SENSE}
    assert set(codons) <= set(SENSE)
    # 60 degrees of freedom: the 0.999 quantile is 99.6.
    assert chi_square(codons, expected) < 100
    assert chi_square(codons, {c: n / len(SENSE) for c in SENSE}) > 1000  # biased, not uniform
    assert codons["CTG"] > 4 * codons["CTA"] and codons["GAG"] > codons["GAA"]


def test_intergenic_dna_is_about_40_percent_gc_and_poor_in_cpg():
    seq = background(random.Random(0), 200_000)
    c, g = seq.count("C") / len(seq), seq.count("G") / len(seq)
    assert 0.38 < c + g < 0.42
    cpg = len(re.findall("(?=CG)", seq)) / (len(seq) - 1)
    assert cpg / (c * g) < 0.4


def test_reverse_complement_matches_the_tokenizer():
    seq = background(random.Random(3), 500)
    assert reverse_complement(seq) == DNATokenizer().reverse_complement(seq)
    assert reverse_complement(reverse_complement(seq)) == seq


def read(path):
    return {r.fields["id"]: (r.fields["text"], r.fields.get("description", ""))
            for r in read_records(path)}


def oriented(seq, labels, strand, first, last):
    """The gene with its promoter flank, read on its own strand; the TSS at UPSTREAM."""
    if strand == "+":
        return seq[first - 1 - UPSTREAM:last], labels[first - 1 - UPSTREAM:last]
    return reverse_complement(seq[first - 1:last + UPSTREAM]), labels[first - 1:last + UPSTREAM][::-1]


def test_written_genes_read_correctly_on_both_strands(tmp_path):
    counts = write_gene_tagging(tmp_path, n_train=24, n_val=6, length=1500, seed=4)
    seqs = {**read(tmp_path / "train.fasta"), **read(tmp_path / "val.fasta")}
    regions = read(tmp_path / "regions.fasta")
    assert counts["train"] == 24 and counts["val"] == 6 and seqs.keys() == regions.keys()
    strands = Counter()
    for name, (seq, description) in seqs.items():
        labels = regions[name][0]
        assert len(seq) == len(labels) == 1500 and set(labels) <= set(REGIONS)
        inside = np.zeros(len(seq), bool)
        for strand, first, last in re.findall(r"([+-]):(\d+)-(\d+)", description):
            first, last = int(first), int(last)
            strands[strand] += 1
            inside[first - 1:last] = True
            gene, tags = oriented(seq, labels, strand, first, last)
            assert tags[UPSTREAM] == tags[-1] == "U" and tags[UPSTREAM - 1] == "O"
            check_coding(joined_coding(gene, tags))
            assert any(mismatches(gene[UPSTREAM - d:UPSTREAM - d + 6], "TATAAA") <= 1
                       for d in range(TATA_DISTANCE[0], TATA_DISTANCE[1] + 1))
            if strand == "-":  # read as written, the coding bases run stop ... start, complemented
                raw = joined_coding(seq[first - 1:last], labels[first - 1:last])
                assert raw.endswith("CAT") and raw[:3] in {reverse_complement(s) for s in STOPS}
        assert set(labels[i] for i in np.flatnonzero(~inside)) <= {"O"}
    assert sum(strands.values()) == counts["genes"] and min(strands.values()) >= 5


def test_same_seed_same_files(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        write_gene_tagging(tmp_path / name, n_train=3, n_val=2, seed=seed)
        write_promoter_strength(tmp_path / name / "p", n_train=5, n_val=2, seed=seed)
    files = ["train.fasta", "val.fasta", "regions.fasta", "p/train.fasta", "p/expression.csv"]
    same = [(tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files]
    other = [(tmp_path / "a" / f).read_bytes() == (tmp_path / "c" / f).read_bytes() for f in files]
    assert all(same) and not any(other)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="length must be at least 1000 .* got 400"):
        write_gene_tagging("unused", n_train=2, n_val=1, length=400)
    with pytest.raises(ValueError, match="n_train"):
        write_promoter_strength("unused", n_train=0)
    with pytest.raises(ValueError, match="noise must not be negative, got -1"):
        write_promoter_strength("unused", n_train=2, noise=-1)


def ranks(values):
    values = np.asarray(values, float)
    r = np.empty(len(values))
    r[np.argsort(values, kind="stable")] = np.arange(len(values))
    for v in np.unique(values):  # ties share their mean rank
        r[values == v] = r[values == v].mean()
    return r


def spearman(x, y):
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def test_promoter_boxes_are_where_the_record_says():
    rng = random.Random(5)
    tss = PROMOTER_UPSTREAM
    for p in (make_promoter(rng) for _ in range(300)):
        assert len(p.seq) == 200 and p.seq[tss] == "A"
        if p.tata_mismatches is not None:
            box = p.seq[tss - p.tata_distance:tss - p.tata_distance + 6]
            assert mismatches(box, "TATAAA") == p.tata_mismatches
        if p.caat_mismatches is not None:
            core = p.seq[tss - p.caat_distance + 2:tss - p.caat_distance + 7]
            assert mismatches(core, "CCAAT") == p.caat_mismatches
        assert p.strength == promoter_strength(p.tata_mismatches, p.tata_distance,
                                               p.caat_mismatches, p.caat_distance)


def test_expression_rises_with_promoter_quality():
    rng = random.Random(6)
    made = [make_promoter(rng) for _ in range(1500)]
    expression = [p.expression for p in made]
    assert spearman(expression, [p.strength for p in made]) > 0.9
    # A TATA box at the best spacing: fewer substitutions, more expression.
    near = [p for p in made if p.tata_mismatches is not None and abs(p.tata_distance - 30) <= 2]
    assert spearman([p.expression for p in near], [-p.tata_mismatches for p in near]) > 0.6
    # A perfect TATA box expresses more the closer it sits to 30 bases upstream.
    perfect = [p for p in made if p.tata_mismatches == 0]
    assert spearman([p.expression for p in perfect],
                    [-abs(p.tata_distance - 30) for p in perfect]) > 0.5
    with_caat = [p.expression for p in made if p.caat_mismatches == 0 and
                 abs(p.caat_distance - 78) <= 5]
    without = [p.expression for p in made if p.caat_mismatches is None]
    assert np.mean(with_caat) > np.mean(without) + 1.0
    assert math.isclose(promoter_strength(None, 30, None, 78), 1.0)
    assert math.isclose(promoter_strength(0, 30, 0, 78), 5.5)


def test_promoter_files_pair_every_record_with_its_expression(tmp_path):
    counts = write_promoter_strength(tmp_path, n_train=30, n_val=10, seed=1)
    assert counts == {"train": 30, "val": 10}
    seqs = {**read(tmp_path / "train.fasta"), **read(tmp_path / "val.fasta")}
    with open(tmp_path / "expression.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == list(seqs)
    assert all(math.isfinite(float(r["expression"])) for r in rows)
    assert all(len(s) == 200 and "TSS at 121" in d for s, d in seqs.values())
