"""Eight-state synthetic proteins: the DSSP classes where real structures put them (3-10
helices at helix ends, pi helices in or beside helices, single-residue bridges, turns
rich in G, N, D, P capping helices), their standard three-state reduction, and files
written beside the unchanged three-state default."""

import random
from collections import Counter, defaultdict

from seqlab.data.records import read_records
from seqlab.datasets.proteins import EIGHT_STATES, protein8, to_three, write_secondary_structure
from seqlab.tasks.metrics import runs

from .test_proteins import lag_correlation, runs_of

def proteins(n=500, seed=0):
    rng = random.Random(seed)
    return [protein8(rng) for _ in range(n)]


def segments(data, state):
    """(start, end, labels) of every run of ``state``."""
    return [(a, b, ss) for _, ss in data for s, a, b in runs(list(ss)) if s == state]


def test_every_state_occurs_and_labels_align():
    data = proteins()
    assert all(len(s) == len(ss) for s, ss in data)
    counts = Counter("".join(ss for _, ss in data))
    assert set(counts) == set(EIGHT_STATES)
    total = sum(counts.values())
    assert counts["H"] / total > 0.25 and counts["I"] / total < 0.04 and counts["B"] / total < 0.03


def test_states_have_their_lengths_and_places():
    data = proteins()
    three_ten, pi = segments(data, "G"), segments(data, "I")
    assert all(3 <= b - a <= 5 for a, b, _ in three_ten)
    assert sum("H" in ss[max(a - 1, 0):b + 1] for a, b, ss in three_ten) / len(three_ten) > 0.8
    assert all(b - a == 5 for a, b, _ in pi)
    assert all("H" in ss[max(a - 1, 0):b + 1] for a, b, ss in pi)
    assert {b - a for a, b, _ in segments(data, "B")} == {1}
    turns = segments(data, "T")
    assert all(2 <= b - a <= 4 for a, b, _ in turns)
    capping = sum("H" in ss[max(a - 1, 0):b + 1] for a, b, ss in turns)
    assert capping / len(turns) > 0.5


def test_turns_are_rich_in_g_n_d_p_and_helices_and_strands_keep_their_period():
    data = proteins()
    turn = Counter(c for s, ss in data for c, x in zip(s, ss) if x == "T")
    assert sum(turn[c] for c in "GNDP") / sum(turn.values()) > 0.6
    helices, strands = runs_of("H", data), runs_of("E", data)
    assert lag_correlation(helices, 4) > 0.1 > lag_correlation(helices, 2)
    assert lag_correlation(strands, 2) > 0.3 and lag_correlation(strands, 1) < -0.3


def test_a_letter_alone_gives_even_less_of_eight_states_away():
    data = proteins(800)
    by = defaultdict(Counter)
    for seq, ss in data[:600]:
        for a, label in zip(seq, ss):
            by[a][label] += 1
    best = {a: c.most_common(1)[0][0] for a, c in by.items()}
    hits = [best.get(a) == label for seq, ss in data[600:] for a, label in zip(seq, ss)]
    assert 0.35 < sum(hits) / len(hits) < 0.7


def test_three_states_are_the_standard_reduction():
    assert to_three("HGIEBTSC") == "HHHEECCC"


def test_eight_states_written_with_their_reduction(tmp_path):
    counts = write_secondary_structure(tmp_path, n_train=6, n_val=2, states=8)
    assert counts == {"train": 6, "val": 2}
    seqs = {r.fields["id"]: r.fields["text"] for n in ("train", "val")
            for r in read_records(tmp_path / f"{n}.fasta")}
    ss8 = {r.fields["id"]: r.fields["text"] for r in read_records(tmp_path / "ss8.fasta")}
    ss3 = {r.fields["id"]: r.fields["text"] for r in read_records(tmp_path / "ss.fasta")}
    assert seqs.keys() == ss8.keys() == ss3.keys()
    assert all(len(seqs[k]) == len(ss8[k]) and ss3[k] == to_three(ss8[k]) for k in seqs)


def test_three_states_stay_the_default(tmp_path):
    write_secondary_structure(tmp_path / "a", n_train=6, n_val=2)
    write_secondary_structure(tmp_path / "b", n_train=6, n_val=2, states=3)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["ss.fasta", "train.fasta",
                                                                 "val.fasta"]
    assert all((tmp_path / "a" / n).read_text() == (tmp_path / "b" / n).read_text()
               for n in ("ss.fasta", "train.fasta"))
    assert set("".join(r.fields["text"] for r in read_records(tmp_path / "a" / "ss.fasta"))) \
        <= set("HEC")
