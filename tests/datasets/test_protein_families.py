"""Synthetic protein families: members of a family are closer to each other than to any
other family, keep their family's motifs, carry the family in the header, and mutate as
families do (conservative substitutions, indels in loops); sibling families share their
composition, so composition alone classifies them poorly."""

import json
import random
import re
from collections import Counter
from itertools import combinations

import numpy as np
import pytest

from seqlab.data.records import read_records
from seqlab.datasets.protein_families import (FIXED, FREE, GROUP_OF, mutate, substitute,
                                              write_protein_families)

AMINO = "ACDEFGHIKLMNPQRSTVWY"


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    out = tmp_path_factory.mktemp("families")
    summary = write_protein_families(out, n_families=6, n_train=120, n_val=36, seed=0)
    members = {}
    for split in ("train", "val"):
        members[split] = [(r.fields["text"], re.search(r"family=(\S+)",
                                                         r.fields["description"]).group(1))
                          for r in read_records(out / f"{split}.fasta")]
    return summary, json.loads((out / "families.json").read_text()), members


def identity(a: str, b: str) -> float:
    """Residues matched by a longest common subsequence (a global alignment without gap
    costs), over the shorter length."""
    x, y = np.frombuffer(a.encode(), np.uint8), np.frombuffer(b.encode(), np.uint8)
    row = np.zeros(len(y) + 1, dtype=np.int32)
    for c in x:
        diag = np.where(y == c, row[:-1] + 1, 0)
        row = np.concatenate([[0], np.maximum.accumulate(np.maximum(row[1:], diag))])
    return float(row[-1]) / min(len(a), len(b))


def test_labels_in_headers_parse_and_families_take_turns(families):
    summary, described, members = families
    assert summary["train"] == 120 and summary["val"] == 36
    assert set(summary["families"]) == set(described) == {f"F{i:02d}" for i in range(6)}
    assert Counter(f for _, f in members["train"]) == {f"F{i:02d}": 20 for i in range(6)}
    assert {d["clan"] for d in described.values()} == {"C0", "C1"}
    assert all(set(s) <= set(AMINO) for s, _ in members["train"])


def test_members_keep_their_family_motifs(families):
    summary, _, members = families
    for seq, family in members["train"] + members["val"]:
        motifs = summary["families"][family]
        assert 1 <= len(motifs) <= 2
        assert all(re.search(m.replace("x", "."), seq) for m in motifs), (family, seq)


def test_a_family_is_closer_to_itself_than_to_its_siblings_and_other_clans(families):
    _, described, members = families
    by = {f: [s for s, g in members["train"] if g == f][:6] for f in described}
    within = [identity(a, b) for seqs in by.values() for a, b in combinations(seqs, 2)]
    sibling, other = [], []
    for f, g in combinations(described, 2):
        same_clan = described[f]["clan"] == described[g]["clan"]
        for a, b in zip(by[f], by[g]):
            (sibling if same_clan else other).append(identity(a, b))
    # Unrelated sequences match about a third of their residues by chance.
    assert np.mean(within) > np.mean(sibling) + 0.04 > np.mean(other) + 0.07
    # Held-out members are nearest their own family's ancestor.
    nearest = [max(described, key=lambda f: identity(seq, described[f]["ancestor"])) == family
               for seq, family in members["val"]]
    assert np.mean(nearest) > 0.9


def kmers(seq: str) -> np.ndarray:
    v = np.zeros(400)
    for a, b in zip(seq, seq[1:]):
        v[AMINO.index(a) * 20 + AMINO.index(b)] += 1
    return v / v.sum()


def test_residue_pair_composition_confuses_sibling_families(families):
    _, described, members = families
    names = sorted(described)
    train = np.array([kmers(s) for s, _ in members["train"]])
    labels = np.array([names.index(f) for _, f in members["train"]])
    centroids = np.stack([train[labels == i].mean(0) for i in range(len(names))])
    val = np.array([kmers(s) for s, _ in members["val"]])
    found = ((val[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    truth = np.array([names.index(f) for _, f in members["val"]])
    clan = np.array([int(described[n]["clan"][1:]) for n in names])
    assert (clan[found] == clan[truth]).mean() > 0.9  # the clan shows in composition
    assert (found == truth).mean() < 0.75  # the family much less


def test_substitutions_are_mostly_conservative():
    rng = random.Random(0)
    grouped = [a for a in AMINO if len(GROUP_OF.get(a, a)) > 1]
    out = [(a, substitute(rng, a)) for a in grouped * 200]
    assert all(a != b for a, b in out)
    share = sum(b in GROUP_OF[a] for a, b in out) / len(out)
    assert 0.7 < share < 0.8


def test_indels_fall_mostly_in_loops_and_spare_fixed_residues():
    rng = random.Random(0)
    seq, ss = "A" * 100 + "G" * 100, "H" * 100 + "C" * 100
    keep = [FREE] * 200
    keep[150:155] = [FIXED] * 5
    core = loop = 0
    for _ in range(50):
        new, labels, kept = mutate(rng, seq, ss, keep, rate=0.0, indel_rate=0.2)
        assert "GGGGG" in new and len(new) == len(labels) == len(kept)
        core += abs(labels.count("H") - 100)
        loop += abs(labels.count("C") - 100)
    assert loop > 5 * core
