"""Synthetic proteins: labels align with residues, helices repeat their hydrophobic face
every 3.6 residues, strands alternate, and no single letter gives its label away."""

import random
from collections import Counter, defaultdict

import numpy as np

from seqlab.data.records import read_records
from seqlab.datasets.proteins import protein, write_secondary_structure

HYDROPHOBIC = set("LAIMVFYWC")


def segments(n=400, seed=0):
    rng = random.Random(seed)
    return [protein(rng) for _ in range(n)]


def lag_correlation(runs, lag):
    pairs = [(a, b) for run in runs for a, b in zip(run, run[lag:])]
    x, y = np.array(pairs, dtype=float).T
    return float(np.corrcoef(x, y)[0, 1])


def runs_of(kind, proteins):
    out = []
    for seq, ss in proteins:
        start = 0
        for i in range(1, len(ss) + 1):
            if i == len(ss) or ss[i] != ss[start]:
                if ss[start] == kind:
                    out.append([c in HYDROPHOBIC for c in seq[start:i]])
                start = i
    return out


def test_labels_align_and_structure_shows_in_the_residues():
    proteins = segments()
    assert all(len(s) == len(ss) and set(ss) <= set("HEC") for s, ss in proteins)
    helices, strands = runs_of("H", proteins), runs_of("E", proteins)
    # Helix: hydrophobic faces every 3.6 residues, opposite sides about 2 apart.
    assert lag_correlation(helices, 4) > 0.1 > lag_correlation(helices, 2)
    # Strand: hydrophobic and polar alternate.
    assert lag_correlation(strands, 2) > 0.3 and lag_correlation(strands, 1) < -0.3


def test_a_letter_alone_does_not_give_the_label_away():
    proteins = segments(600)
    train, val = proteins[:400], proteins[400:]
    by = defaultdict(Counter)
    for seq, ss in train:
        for a, label in zip(seq, ss):
            by[a][label] += 1
    best = {a: c.most_common(1)[0][0] for a, c in by.items()}
    hits = [best.get(a) == label for seq, ss in val for a, label in zip(seq, ss)]
    assert 0.5 < sum(hits) / len(hits) < 0.9  # context must do the rest


def test_written_as_fasta_with_companion_labels(tmp_path):
    counts = write_secondary_structure(tmp_path, n_train=5, n_val=3)
    assert counts == {"train": 5, "val": 3}
    seqs = {r.fields["id"]: r.fields["text"] for n in ("train", "val")
            for r in read_records(tmp_path / f"{n}.fasta")}
    labels = {r.fields["id"]: r.fields["text"] for r in read_records(tmp_path / "ss.fasta")}
    assert seqs.keys() == labels.keys() and all(len(seqs[k]) == len(labels[k]) for k in seqs)
