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
"""

from __future__ import annotations

import os
import random
from pathlib import Path

HELIX_FACE, HELIX_OUT = "LAIM", "EKQR"
STRAND_IN, STRAND_OUT = "VIFYW", "TSR"
COIL = "GPNDS"
BACKGROUND = "ACDEFGHIKLMNPQRSTVWY"


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


def write_secondary_structure(out_dir: str | os.PathLike, *, n_train: int = 2000,
                              n_val: int = 400, noise: float = 0.15, seed: int = 0) -> dict:
    """Write ``train.fasta``, ``val.fasta`` and ``ss.fasta`` (the labels of both, by id)
    into ``out_dir``; returns counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    labels = []
    counts = {}
    for split, n in (("train", n_train), ("val", n_val)):
        lines = []
        for i in range(n):
            name = f"{split}{i:05d}"
            seq, ss = protein(rng, noise=noise)
            lines.append(f">{name} synthetic protein, {len(seq)} residues\n{seq}\n")
            labels.append(f">{name}\n{ss}\n")
        (out / f"{split}.fasta").write_text("".join(lines))
        counts[split] = n
    (out / "ss.fasta").write_text("".join(labels))
    return counts
