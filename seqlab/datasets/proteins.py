"""Protein sequences with secondary structure, generated with the patterns that make it
predictable from sequence.

Each protein is a chain of segments: alpha helices (8-20 residues), beta strands (4-10)
and coils (2-8) between them. Residues follow the structure's known preferences:

- a helix is amphipathic: with 100 degrees of turn per residue (3.6 residues per turn),
  the residues facing one side are hydrophobic (L, A, I, M) and the others polar or
  charged (E, K, Q, R), so hydrophobicity repeats with a period of 3.6;
- a strand alternates: one side hydrophobic (V, I, F, Y, W), the other polar (T, S, R),
  a period of 2;
- a coil is rich in the breakers and turn formers G, P, N, D, S.

A share of residues (``noise``) is drawn from the overall composition instead, so the
labels are not a lookup of single letters. Labels are the three DSSP classes
``H`` (helix), ``E`` (strand) and ``C`` (coil), one per residue: Q3 accuracy is the tag
accuracy. Written as FASTA (sequences) and a companion FASTA of label strings with the
same ids, the layout of secondary-structure data sets.

Eight states (``protein8``, ``write_secondary_structure(states=8)``) follow DSSP's
classes and where they occur in real structures:

- ``H`` alpha helix and ``E`` strand, amphipathic and alternating as above;
- ``G`` 3-10 helix: 3-5 residues, usually at a helix's end, its first residue often P
  or D;
- ``I`` pi helix: rare 5-residue stretches of large residues (F, Y, W, M, L) inside an
  alpha helix (a pi-bulge) or beside it;
- ``T`` turn: 2-4 residues rich in G, N, D and P, capping helices at either end, and the
  two-residue turn (NG, DG) of a hairpin between strands;
- ``S`` bend: 1-3 residues inside loops;
- ``B`` isolated bridge: one strand-like residue (V, I, Y, F, T) alone in a loop;
- ``C`` coil: the rest of the loops.

The three-state labels are the standard reduction of these (``to_three``: H, G, I to H;
E, B to E; T, S, C to C), so data written with eight states has both ``ss8.fasta`` and
its ``ss.fasta``. Q8 is the tag accuracy on ``ss8.fasta``; Q3 is accuracy after the
reduction (``task_options.reduce`` of the ``tag`` objective).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

HELIX_FACE, HELIX_OUT = "LAIM", "EKQR"
STRAND_IN, STRAND_OUT = "VIFYW", "TSR"
COIL = "GPNDS"
BACKGROUND = "ACDEFGHIKLMNPQRSTVWY"

# Eight states: pools repeat letters to weight them.
TURN = "GGGNNNDDDPPST"
BEND = "GGSSDNKPE"
LOOP = "PPGGSSTNDEKQA"
THREE_TEN_START, THREE_TEN = "PPDDA", "AELKSDNQ"
PI_HELIX = "FYWMLLI"
BRIDGE = "VIYFT"
HAIRPIN = ("NG", "DG", "GN", "GG", "PD")
EIGHT_STATES = "HGIEBTSC"
THREE_OF = {"H": "H", "G": "H", "I": "H", "E": "E", "B": "E", "T": "C", "S": "C", "C": "C"}


def protein(rng: random.Random, *, noise: float = 0.15, segments: tuple[int, int] = (4, 9)
            ) -> tuple[str, str]:
    """One protein: (sequence, labels)."""
    residues, labels = [], []
    for k in range(rng.randint(*segments)):
        kind = "C" if k % 2 == 0 else rng.choice("HE")
        n = {"H": rng.randint(8, 20), "E": rng.randint(4, 10), "C": rng.randint(2, 8)}[kind]
        phase = rng.random() * 360
        for i in range(n):
            if kind == "H":
                face = (phase + 100 * i) % 360 < 140
                pool = HELIX_FACE if face else HELIX_OUT
            elif kind == "E":
                pool = STRAND_IN if i % 2 == 0 else STRAND_OUT
            else:
                pool = COIL
            residues.append(rng.choice(BACKGROUND if rng.random() < noise else pool))
            labels.append(kind)
    return "".join(residues), "".join(labels)


def to_three(labels: str) -> str:
    """The standard three-state reduction of DSSP labels (H, G, I -> H; E, B -> E;
    T, S, C -> C)."""
    return labels.translate(str.maketrans(THREE_OF))


class _Chain:
    """A protein built segment by segment: residues and their eight-state labels."""

    def __init__(self, rng: random.Random, noise: float):
        self.rng, self.noise = rng, noise
        self.residues: list[str] = []
        self.labels: list[str] = []

    def add(self, label: str, pool: str, n: int = 1) -> None:
        for _ in range(n):
            noisy = self.rng.random() < self.noise
            self.residues.append(self.rng.choice(BACKGROUND if noisy else pool))
            self.labels.append(label)

    def three_ten(self) -> None:
        self.add("G", THREE_TEN_START)
        self.add("G", THREE_TEN, self.rng.randint(2, 4))

    def helix(self) -> None:
        rng = self.rng
        if rng.random() < 0.5:
            self.add("T", TURN, rng.randint(2, 3))  # N-cap
        elif rng.random() < 0.25:
            self.three_ten()
        n = rng.randint(8, 20)
        bulge = rng.randint(3, n - 3) if rng.random() < 0.1 else None
        phase = rng.random() * 360
        for i in range(n):
            if i == bulge:
                self.add("I", PI_HELIX, 5)
            self.add("H", HELIX_FACE if (phase + 100 * i) % 360 < 140 else HELIX_OUT)
        end = rng.random()
        if end < 0.3:
            self.three_ten()
        elif end < 0.35:
            self.add("I", PI_HELIX, 5)
        elif end < 0.75:
            self.add("T", TURN, rng.randint(2, 4))  # C-cap

    def strand(self) -> None:
        for i in range(self.rng.randint(4, 10)):
            self.add("E", STRAND_IN if i % 2 == 0 else STRAND_OUT)

    def hairpin(self) -> None:
        for residue in self.rng.choice(HAIRPIN):
            self.add("T", residue)

    def loop(self, n: int) -> None:
        """``n`` loop residues: coil, bends of 1-3 residues, and single bridges inside."""
        i = 0
        while i < n:
            r, last = self.rng.random(), self.labels[-1] if self.labels else ""
            if r < 0.25 and last != "S":
                k = min(self.rng.randint(1, 3), n - i)
                self.add("S", BEND, k)
            elif r < 0.35 and 0 < i < n - 1 and last != "B":
                k = 1
                self.add("B", BRIDGE)
            else:
                k = 1
                self.add("C", LOOP)
            i += k


def protein8(rng: random.Random, *, noise: float = 0.15, elements: tuple[int, int] = (2, 5)
             ) -> tuple[str, str]:
    """One protein with eight-state labels: (sequence, labels). ``elements``: the range of
    the number of helices and strands, each followed by a loop (or a hairpin turn
    between two strands)."""
    chain = _Chain(rng, noise)
    kinds = [rng.choice("HE") for _ in range(rng.randint(*elements))]
    chain.loop(rng.randint(2, 8))
    for kind, after in zip(kinds, [*kinds[1:], None]):
        chain.helix() if kind == "H" else chain.strand()
        if kind == after == "E" and rng.random() < 0.5:
            chain.hairpin()
        else:
            chain.loop(rng.randint(2, 8))
    return "".join(chain.residues), "".join(chain.labels)


def write_secondary_structure(out_dir: str | os.PathLike, *, n_train: int = 2000,
                              n_val: int = 400, noise: float = 0.15, seed: int = 0,
                              states: int = 3) -> dict:
    """Write ``train.fasta``, ``val.fasta`` and ``ss.fasta`` (the labels of both, by id)
    into ``out_dir``; returns counts. ``states=8`` draws eight-state proteins
    (``protein8``) and writes their labels to ``ss8.fasta`` as well, ``ss.fasta`` holding
    the three-state reduction of the same labels."""
    if states not in (3, 8):
        raise ValueError(f"states must be 3 or 8, got {states!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    labels, labels8 = [], []
    counts = {}
    for split, n in (("train", n_train), ("val", n_val)):
        lines = []
        for i in range(n):
            name = f"{split}{i:05d}"
            if states == 3:
                seq, ss = protein(rng, noise=noise)
            else:
                seq, ss8 = protein8(rng, noise=noise)
                ss = to_three(ss8)
                labels8.append(f">{name}\n{ss8}\n")
            lines.append(f">{name} synthetic protein, {len(seq)} residues\n{seq}\n")
            labels.append(f">{name}\n{ss}\n")
        (out / f"{split}.fasta").write_text("".join(lines))
        counts[split] = n
    (out / "ss.fasta").write_text("".join(labels))
    if states == 8:
        (out / "ss8.fasta").write_text("".join(labels8))
    return counts
