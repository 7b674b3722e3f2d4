"""Protein families for sequence classification, generated the way families arise: by
descent with mutation from a common ancestor.

- Families come in clans (superfamilies, ``clan_size`` families each). A clan ancestor
  is an eight-state protein (``proteins.protein8``): a fold of helices, strands and the
  loops between them.
- A family ancestor takes its clan's elements in an order of its own (domain
  shuffling: its own secondary-structure layout), optionally diverges from the clan's
  residues (``family_divergence``), and gains one or two functional motifs in loops.
  The motifs of a clan's families share their fixed residues (3-4 drawn from C, H, D,
  E, K, R, S, G, N, Y, W) but each family arranges them its own way, with one to three
  free positions (``x``) between each two: ``xCxxCxHx`` in one family, ``xHxCxxxCx``
  in its sibling.
- Members descend from the family ancestor: each residue of a helix or strand is
  substituted with probability ``divergence``, each loop residue 2.5 times as often
  (loops evolve faster), a conservative substitution (within I L V M, F Y W, K R H,
  D E, N Q, S T, A G) three times as likely as a radical one; insertions (1-3 loop
  residues) and deletions fall in loops ten times as often as in helices and strands.
  A motif's fixed residues never change, its free positions are drawn anew in every
  member, and nothing is inserted into or deleted from it.

Siblings so share their composition, residue pairs included: what tells them apart is
arrangement, the order of the elements and the spacing of the motif residues, which a
sequence model can read and a classifier of composition cannot. Headers carry the
label: ``>train00012 family=F03 clan=C1 synthetic protein, 131 residues``, read with
``data.header_label: 'family=(\\S+)'``.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from seqlab.datasets.proteins import BACKGROUND, LOOP, protein8

GROUPS = ("ILVM", "FYW", "KRH", "DE", "NQ", "ST", "AG")
GROUP_OF = {a: g for g in GROUPS for a in g}
LOOP_STATES = "TSC"
ELEMENTS = "HGIE"  # what a fold's order is made of (a bridge, B, sits in a loop)
MOTIF_RESIDUES = "CHDEKRSGNYW"
CORE_INDELS = 0.1  # the indel rate in helices and strands, relative to loops
LOOP_SUBSTITUTIONS = 2.5  # the substitution rate in loops, relative to helices and strands

FREE, MOTIF, FIXED = 0, 1, 2  # a position: anything may happen, any residue, kept


def substitute(rng: random.Random, residue: str, *, conservative: float = 0.75) -> str:
    """A different residue: from ``residue``'s group with probability ``conservative``
    (when it has one), otherwise from outside it."""
    group = GROUP_OF.get(residue, residue)
    if len(group) > 1 and rng.random() < conservative:
        return rng.choice(group.replace(residue, ""))
    return rng.choice([b for b in BACKGROUND if b not in group])


def mutate(rng: random.Random, seq: str, ss: str, keep: list[int], *, rate: float,
           indel_rate: float) -> tuple[str, str, list[int]]:
    """A descendant of ``(seq, ss)``: substitutions at ``rate`` (in loops 2.5 times
    that); a deletion, and an insertion after a residue, each at ``indel_rate / 2`` per
    loop residue and a tenth of that in helices and strands. ``keep`` says per position
    what may change (FREE; MOTIF: drawn anew; FIXED: nothing); returns the descendant's
    sequence, labels and ``keep``."""
    out: list[tuple[str, str, int]] = []
    for residue, label, k in zip(seq, ss, keep):
        loop = label in LOOP_STATES
        p = indel_rate / 2 * (1.0 if loop else CORE_INDELS)
        if k == FREE and rng.random() < p:
            continue
        if k == MOTIF:
            residue = rng.choice(BACKGROUND)
        elif k == FREE and rng.random() < min(1.0, rate * (LOOP_SUBSTITUTIONS if loop else 1)):
            residue = substitute(rng, residue)
        out.append((residue, label, k))
        if k == FREE and rng.random() < p:
            out += [(rng.choice(LOOP), "C", FREE) for _ in range(rng.randint(1, 3))]
    return "".join(r for r, _, _ in out), "".join(s for _, s, _ in out), [k for _, _, k in out]


def arrange(rng: random.Random, kit: str) -> str:
    """A motif of the residues ``kit`` in a random order, one to three free positions
    (``x``) between each two and one at either end: ``CCH`` may become ``xCxxCxHx`` or
    ``xHxCxxxCx``."""
    residues = rng.sample(kit, len(kit))
    return "x" + "".join(c + "x" * rng.randint(1, 3) for c in residues[:-1]) + residues[-1] + "x"


def add_motif(rng: random.Random, seq: str, ss: str, keep: list[int], pattern: str
              ) -> tuple[str, str, list[int]]:
    """Insert ``pattern`` into a loop of ``seq`` (labelled coil), clear of other motifs;
    returns the new sequence, labels and ``keep``."""
    sites = [i for i in range(1, len(seq)) if ss[i - 1] in LOOP_STATES and ss[i] in LOOP_STATES
             and keep[i - 1] == FREE and keep[i] == FREE]
    at = rng.choice(sites or range(len(seq) + 1))
    residues = "".join(rng.choice(BACKGROUND) if c == "x" else c for c in pattern)
    kept = [MOTIF if c == "x" else FIXED for c in pattern]
    return (seq[:at] + residues + seq[at:], ss[:at] + "C" * len(pattern) + ss[at:],
            keep[:at] + kept + keep[at:])


def units(seq: str, ss: str) -> list[tuple[str, str]]:
    """``(seq, ss)`` cut in the middle of each loop between two elements (helices and
    strands): the first piece runs to the middle of the first such loop, each other
    piece holds one element and half of the loop on either side."""
    spans, start = [], 0  # maximal runs of element or loop residues
    for i in range(1, len(ss) + 1):
        if i == len(ss) or (ss[i] in ELEMENTS) != (ss[start] in ELEMENTS):
            spans.append((start, i, ss[start] not in ELEMENTS))
            start = i
    cuts = [(a + b) // 2 for k, (a, b, loop) in enumerate(spans)
            if loop and 0 < k < len(spans) - 1]
    bounds = [0, *cuts, len(ss)]
    return [(seq[a:b], ss[a:b]) for a, b in zip(bounds, bounds[1:])]


def _distinct(draw, used: set, tries: int = 100):
    """A draw not in ``used`` (or, after ``tries``, any draw), added to ``used``."""
    for _ in range(tries):
        value = draw()
        if value not in used:
            break
    used.add(value)
    return value


def make_families(rng: random.Random, n_families: int, *, clan_size: int = 3,
                  family_divergence: float = 0.0, indel_rate: float = 0.04,
                  elements: tuple[int, int] = (4, 7)) -> list[dict]:
    """Family ancestors: ``name``, ``clan``, ``sequence``, ``ss`` (eight states),
    ``keep`` (per position: FREE, MOTIF or FIXED) and ``motifs`` (``x`` for a free
    position)."""
    families = []
    for f in range(n_families):
        if f % clan_size == 0:
            clan = f"C{f // clan_size}"
            lead, *parts = units(*protein8(rng, elements=elements))
            kits = ["".join(rng.choices(MOTIF_RESIDUES, k=rng.randint(3, 4)))
                    for _ in range(rng.randint(1, 2))]
            orders, patterns = set(), set()
        order = _distinct(lambda: tuple(rng.sample(range(len(parts)), len(parts))), orders)
        seq = lead[0] + "".join(parts[i][0] for i in order)
        ss = lead[1] + "".join(parts[i][1] for i in order)
        if family_divergence > 0:
            seq, ss, _ = mutate(rng, seq, ss, [FREE] * len(seq), rate=family_divergence,
                                indel_rate=indel_rate)
        keep = [FREE] * len(seq)
        motifs = [_distinct(lambda k=kit: arrange(rng, k), patterns) for kit in kits]
        for pattern in motifs:
            seq, ss, keep = add_motif(rng, seq, ss, keep, pattern)
        families.append({"name": f"F{f:02d}", "clan": clan, "sequence": seq, "ss": ss,
                         "keep": keep, "motifs": motifs})
    return families


def member(rng: random.Random, family: dict, *, divergence: float, indel_rate: float
           ) -> tuple[str, str]:
    """One member of ``family``: (sequence, eight-state labels)."""
    seq, ss, _ = mutate(rng, family["sequence"], family["ss"], family["keep"], rate=divergence,
                        indel_rate=indel_rate)
    return seq, ss


def write_protein_families(out_dir: str | os.PathLike, *, n_families: int, n_train: int,
                           n_val: int, seed: int = 0, clan_size: int = 3,
                           divergence: float = 0.3, family_divergence: float = 0.0,
                           indel_rate: float = 0.04) -> dict:
    """Write ``train.fasta`` and ``val.fasta`` (``n_train`` and ``n_val`` proteins, the
    families taking turns) with ``family=NAME`` in each header, and ``families.json``
    (each family's clan, motifs, ancestor and its eight-state labels) into ``out_dir``.

    Returns:
        ``{"train": n_train, "val": n_val, "families": {name: [motif, ...]}}``.
    """
    if n_families < 2:
        raise ValueError(f"n_families must be at least 2, got {n_families}")
    if clan_size < 1:
        raise ValueError(f"clan_size must be at least 1, got {clan_size}")
    for name, value in (("divergence", divergence), ("family_divergence", family_divergence),
                        ("indel_rate", indel_rate)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    families = make_families(rng, n_families, clan_size=clan_size,
                             family_divergence=family_divergence, indel_rate=indel_rate)
    for split, n in (("train", n_train), ("val", n_val)):
        order = [families[i % n_families] for i in range(n)]
        rng.shuffle(order)
        lines = []
        for i, family in enumerate(order):
            seq, _ = member(rng, family, divergence=divergence, indel_rate=indel_rate)
            lines.append(f">{split}{i:05d} family={family['name']} clan={family['clan']} "
                         f"synthetic protein, {len(seq)} residues\n{seq}\n")
        (out / f"{split}.fasta").write_text("".join(lines))
    summary = {f["name"]: {"clan": f["clan"], "motifs": f["motifs"], "ancestor": f["sequence"],
                           "ss": f["ss"]} for f in families}
    (out / "families.json").write_text(json.dumps(summary, indent=1) + "\n")
    return {"train": n_train, "val": n_val,
            "families": {f["name"]: list(f["motifs"]) for f in families}}
