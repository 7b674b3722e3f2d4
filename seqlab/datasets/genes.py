"""Synthetic genomic DNA with the signals gene finders read, labelled base by base, and
promoters whose expression follows from how well their boxes match the consensus.

A gene is written 5' to 3' on its own strand, with the parts and signals of a spliced
eukaryotic (RNA polymerase II) gene:

- **promoter** (``UPSTREAM`` bases before the transcription start site, TSS): a TATA
  box (``TATAAA``, at most one substitution) whose first base lies 25-35 bases upstream
  of the TSS; in most genes a CAAT box (``GGCCAATCT``, the ``CCAAT`` core intact) 75-80
  bases upstream; the two bases before the TSS are pyrimidines and the TSS is an A, the
  initiator ``YYA(+1)NWYY``;
- **5' UTR** (GC-rich, 20-60 bases) holding no ATG, so the start codon is the first ATG
  of the transcript (ribosomes scan for it), with a purine three bases before it
  (Kozak, 1987);
- **coding sequence**: ``ATG``, codons drawn from ``CODON_USAGE`` (approximately the
  human nuclear codon usage, per thousand codons; never a stop), then a stop codon;
- **introns** cut into the coding sequence at proto-splice sites, preferring exon ends
  ``MAG`` and a following exon that starts with ``G``, so the codons, and so the codon
  usage, are untouched and the frame runs on across each intron, which may fall inside
  a codon. Each intron is ``GT`` + ``RAGT`` (variants sampled) ... a branch point
  ``YTNAY`` whose A lies 20-50 bases before the intron's end ... a polypyrimidine tract
  ... ``YAG``, with no AG between the branch point and the final AG (the spliceosome
  takes the first one);
- **3' UTR** (60-150 bases) with the polyadenylation signal ``AATAAA`` (sometimes
  ``ATTAAA``) 10-30 bases before the cleavage site after a ``CA``, and a GT-rich
  downstream element in the flank after it.

Intergenic DNA is about 40% GC and depleted of CpG, as methylated CpGs decay to TpG
and CpA in real genomes; some intergenic stretches hold simple repeats (microsatellites).
Introns are AT-rich, 5' UTRs GC-rich.

Labels, one letter per base (``REGIONS``):

- ``E`` coding exon: the A of the start codon through the last base of the stop codon;
- ``I`` intron: from its GT to its AG, both included;
- ``U`` untranslated region: 5' (TSS up to the base before ATG) and 3' (after the stop
  up to the cleavage site);
- ``O`` outside genes: intergenic DNA, repeats, and the promoter. The TATA and CAAT
  boxes lie in ``O``: a promoter has no sharp upstream edge, so a label of its own
  would mark an arbitrary span; the model finds the TSS where ``O`` turns into ``U``.

A gene on the reverse strand is written reverse-complemented with its labels reversed;
labels name regions, not strands, so a record read as its reverse complement
(``data.reverse_complement``) keeps correct labels.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from seqlab.io import atomic_write

# Approximately the human codon usage (codons per thousand; Kazusa/CUTG tables).
CODON_USAGE = {
    "TTT": 17.6, "TTC": 20.3, "TTA": 7.7, "TTG": 12.9, "CTT": 13.2, "CTC": 19.6, "CTA": 7.2,
    "CTG": 39.6, "ATT": 16.0, "ATC": 20.8, "ATA": 7.5, "ATG": 22.0, "GTT": 11.0, "GTC": 14.5,
    "GTA": 7.1, "GTG": 28.1, "TCT": 15.2, "TCC": 17.7, "TCA": 12.2, "TCG": 4.4, "AGT": 12.1,
    "AGC": 19.5, "CCT": 17.5, "CCC": 19.8, "CCA": 16.9, "CCG": 6.9, "ACT": 13.1, "ACC": 18.9,
    "ACA": 15.1, "ACG": 6.1, "GCT": 18.4, "GCC": 27.7, "GCA": 15.8, "GCG": 7.4, "TAT": 12.2,
    "TAC": 15.3, "CAT": 10.9, "CAC": 15.1, "CAA": 12.3, "CAG": 34.2, "AAT": 17.0, "AAC": 19.1,
    "AAA": 24.4, "AAG": 31.9, "GAT": 21.8, "GAC": 25.1, "GAA": 29.0, "GAG": 39.6, "TGT": 10.6,
    "TGC": 12.6, "TGG": 13.2, "CGT": 4.5, "CGC": 10.4, "CGA": 6.2, "CGG": 11.4, "AGA": 12.2,
    "AGG": 12.0, "GGT": 10.8, "GGC": 22.2, "GGA": 16.5, "GGG": 16.5,
    "TAA": 1.0, "TAG": 0.8, "TGA": 1.6,
}
STOPS = ("TAA", "TAG", "TGA")
SENSE = tuple(c for c in CODON_USAGE if c not in STOPS)
REGIONS = {"E": "coding exon", "I": "intron", "U": "untranslated region (5' or 3')",
           "O": "outside genes (intergenic, repeats, promoter)"}

TATA, CAAT = "TATAAA", "GGCCAATCT"
CAAT_CORE, CAAT_FLANK = (2, 3, 4, 5, 6), (0, 1, 7, 8)  # CCAAT, and the GG..CT around it
POLYA = "AATAAA"
TATA_DISTANCE = (25, 35)  # bases from the box's first base to the TSS
CAAT_DISTANCE = (75, 80)
BRANCH_DISTANCE = (20, 50)  # bases from the branch-point A to the intron's end
UPSTREAM, DOWNSTREAM = 100, 30  # flanks of a gene, in O
MIN_EXON = 40  # coding bases between two introns or an intron and a coding end
MIN_LENGTH = 1000  # a tagging record long enough for most genes with their flanks
REPEAT_UNITS = ("A", "CA", "TA", "GAA", "TTTA", "GGAA", "TTAGGG")
_PAIRS = str.maketrans("ACGTacgt", "TGCAtgca")


def reverse_complement(seq: str) -> str:
    """The other strand, read 5' to 3'."""
    return seq.translate(_PAIRS)[::-1]


def background(rng: random.Random, n: int, *, gc: float = 0.435, cpg: float = 0.25) -> str:
    """``n`` bases with GC share ``gc`` before CpG decay: each CpG survives with
    probability ``cpg``, else becomes TpG or CpA (either strand's deaminated C), which
    lowers the GC share a little (0.435 ends near 0.40)."""
    weights = ((1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2)
    bases = rng.choices("ACGT", weights=weights, k=n)
    for i in range(1, n):
        if bases[i] == "G" and bases[i - 1] == "C" and rng.random() >= cpg:
            if rng.random() < 0.5:
                bases[i - 1] = "T"
            else:
                bases[i] = "A"
    return "".join(bases)


def mutate(rng: random.Random, motif: str, n: int, *, spots: Sequence[int] | None = None) -> str:
    """``motif`` with ``n`` distinct positions (among ``spots``, default all) changed to
    another base."""
    out = list(motif)
    for i in rng.sample(spots or range(len(motif)), n):
        out[i] = rng.choice([b for b in "ACGT" if b != motif[i]])
    return "".join(out)


def _maybe(rng: random.Random, base: str, p: float) -> str:
    return base if rng.random() < p else rng.choice("ACGT")


def _pyrimidines(rng: random.Random, n: int) -> str:
    return "".join(rng.choices("TC", weights=(0.6, 0.4), k=n))


@dataclass
class Gene:
    """One gene with its flanks, read 5' to 3' on its own strand. Positions are 0-based
    indices into ``seq``; spans are half-open ``(start, end)``.

    Attributes:
        seq, labels: the bases and their ``REGIONS`` letters, equally long.
        tss: the first transcribed base; ``cleavage``: one past the last.
        tata, caat: the first base of each box (``caat`` None without one).
        coding: the coding pieces, one per exon; joined they read ATG ... stop.
        introns: the introns' spans; ``branch``: each one's branch-point A.
    """

    seq: str
    labels: str
    tss: int
    cleavage: int
    tata: int
    caat: int | None
    coding: list[tuple[int, int]] = field(default_factory=list)
    introns: list[tuple[int, int]] = field(default_factory=list)
    branch: list[int] = field(default_factory=list)


def coding_sequence(rng: random.Random, n_codons: int) -> str:
    """ATG, ``n_codons`` sense codons drawn by ``CODON_USAGE``, and a stop codon."""
    body = rng.choices(SENSE, weights=[CODON_USAGE[c] for c in SENSE], k=n_codons)
    stop = rng.choices(STOPS, weights=[CODON_USAGE[c] for c in STOPS])[0]
    return "ATG" + "".join(body) + stop


def _splice_score(cds: str, p: int) -> int:
    """How well cutting before ``cds[p]`` matches exon ``MAG|G`` exon (0..4)."""
    return (cds[p - 3] in "AC") + (cds[p - 2] == "A") + (cds[p - 1] == "G") + (cds[p] == "G")


def splice_points(rng: random.Random, cds: str, n: int) -> list[int]:
    """Up to ``n`` cut points at least ``MIN_EXON`` apart and from either end, each drawn
    with weight 16 ** (its MAG|G score), so most sites follow the consensus."""
    cuts: list[int] = []
    for _ in range(n):
        spots = [p for p in range(MIN_EXON, len(cds) - MIN_EXON + 1)
                 if all(abs(p - q) >= MIN_EXON for q in cuts)]
        if not spots:
            break
        cuts.append(rng.choices(spots, weights=[16 ** _splice_score(cds, p) for p in spots])[0])
    return sorted(cuts)


def intron(rng: random.Random, length: int) -> tuple[str, int]:
    """An intron of ``length`` bases (at least 80) and the index of its branch-point A."""
    donor = "GT" + rng.choices("AG", weights=(0.6, 0.4))[0] + _maybe(rng, "A", 0.7) \
        + _maybe(rng, "G", 0.8) + _maybe(rng, "T", 0.5)
    dist = rng.randint(*BRANCH_DISTANCE)
    tract = rng.randint(10, min(16, dist - 6))
    while True:  # no AG between the branch point and the 3' splice site
        tail = (rng.choice("CT") + background(rng, dist - tract - 6, gc=0.35)
                + _pyrimidines(rng, tract) + rng.choice("ACGT") + rng.choice("CT") + "AG")
        if "AG" not in tail[:-2]:
            break
    branch = rng.choice("CT") + "T" + rng.choice("ACGT") + "A"
    body = background(rng, length - len(donor) - len(branch) - len(tail), gc=0.35)
    seq = donor + body + branch + tail
    return seq, len(donor) + len(body) + len(branch) - 1


def five_prime_utr(rng: random.Random, n: int) -> str:
    """``n`` GC-rich bases starting with the initiator's ``A NWYY`` and free of ATG, a
    purine three bases before the start codon."""
    utr = list("A" + rng.choice("ACGT") + rng.choice("AT") + _pyrimidines(rng, 2)
               + background(rng, n - 5, gc=0.58))
    utr[-3] = rng.choices("AG", weights=(0.7, 0.3))[0]
    text = "".join(utr)
    while "ATG" in text:  # ACG can start no new ATG
        i = text.index("ATG")
        text = text[:i + 1] + "C" + text[i + 2:]
    return text


def three_prime_utr(rng: random.Random, n: int) -> str:
    """``n`` bases ending at the cleavage site after ``CA``, the polyadenylation signal
    ending 10-30 bases before it."""
    utr = list(background(rng, n))
    end = n - rng.randint(10, 30)
    signal = POLYA if rng.random() < 0.85 else "ATTAAA"
    utr[end - 6:end] = signal
    utr[-2:] = "CA"
    return "".join(utr)


def caat_box(rng: random.Random, core: int, flank: int) -> str:
    """The CAAT box with ``core`` substitutions in its CCAAT and ``flank`` around it."""
    box = mutate(rng, CAAT, flank, spots=CAAT_FLANK)
    return mutate(rng, box, core, spots=CAAT_CORE)


def promoter(rng: random.Random, n: int, boxes: list[tuple[str, int]]) -> str:
    """``n`` background bases before a TSS with each ``(box, distance)`` written at its
    distance upstream, and the two pyrimidines of the initiator at the end."""
    bases = list(background(rng, n))
    for box, dist in boxes:
        bases[n - dist:n - dist + len(box)] = box
    bases[-2:] = _pyrimidines(rng, 2)
    return "".join(bases)


def make_gene(rng: random.Random, *, codons: tuple[int, int] = (50, 150),
              introns: tuple[int, int] = (0, 3), caat: float = 0.7) -> Gene:
    """One gene with ``UPSTREAM`` and ``DOWNSTREAM`` flanks (see the module docstring):
    ``codons`` sense codons and ``introns`` introns (ranges, inclusive), a CAAT box with
    probability ``caat``."""
    tata_dist = rng.randint(*TATA_DISTANCE)
    caat_dist = rng.randint(*CAAT_DISTANCE)
    boxes = [(mutate(rng, TATA, rng.choice((0, 0, 1))), tata_dist)]
    if rng.random() < caat:
        boxes.append((caat_box(rng, 0, rng.randint(0, 2)), caat_dist))
    up = promoter(rng, UPSTREAM, boxes)
    parts = [(up, "O"), (five_prime_utr(rng, rng.randint(20, 60)), "U")]
    cds = coding_sequence(rng, rng.randint(*codons))
    cuts = splice_points(rng, cds, rng.randint(*introns))
    gene = Gene("", "", UPSTREAM, 0, UPSTREAM - tata_dist,
                UPSTREAM - caat_dist if len(boxes) > 1 else None)
    pos = len(up) + len(parts[1][0])
    for a, b in zip([0, *cuts], [*cuts, len(cds)]):
        if a:
            seq, branch = intron(rng, rng.randint(80, 200))
            parts.append((seq, "I"))
            gene.introns.append((pos, pos + len(seq)))
            gene.branch.append(pos + branch)
            pos += len(seq)
        parts.append((cds[a:b], "E"))
        gene.coding.append((pos, pos + b - a))
        pos += b - a
    utr3 = three_prime_utr(rng, rng.randint(60, 150))
    gene.cleavage = pos + len(utr3)
    down = list(background(rng, DOWNSTREAM))
    start = rng.randint(5, 12)
    down[start:start + 12] = rng.choices("TG", weights=(0.65, 0.35), k=12)
    parts += [(utr3, "U"), ("".join(down), "O")]
    gene.seq = "".join(text for text, _ in parts)
    gene.labels = "".join(label * len(text) for text, label in parts)
    return gene


def intergenic(rng: random.Random, n: int, *, repeats: float = 0.3) -> str:
    """``n`` background bases, holding one simple repeat with probability ``repeats``."""
    seq = background(rng, n)
    if n >= 30 and rng.random() < repeats:
        unit = rng.choice(REPEAT_UNITS)
        copies = rng.randint(12, 40) // len(unit) + 2
        repeat = "".join(_maybe(rng, b, 0.95) for b in unit * copies)[:n - 10]
        if rng.random() < 0.5:
            repeat = reverse_complement(repeat)
        at = rng.randint(0, n - len(repeat))
        seq = seq[:at] + repeat + seq[at + len(repeat):]
    return seq


def genomic_record(rng: random.Random, length: int, *, reverse: float = 0.5
                   ) -> tuple[str, str, list[tuple[str, int, int]]]:
    """``length`` bases of intergenic DNA holding whole genes, each on the reverse strand
    with probability ``reverse``: (sequence, labels, genes as ``(strand, first, last)``
    1-based transcript coordinates on the record)."""
    seqs, labels, genes, pos = [], [], [], 0
    while True:
        gap = rng.randint(20, 300)
        gene = make_gene(rng)
        if pos + gap + len(gene.seq) + 20 > length:
            break
        seqs.append(intergenic(rng, gap))
        labels.append("O" * gap)
        pos += gap
        seq, tags, first, last = gene.seq, gene.labels, gene.tss, gene.cleavage
        strand = "-" if rng.random() < reverse else "+"
        if strand == "-":
            seq, tags = reverse_complement(seq), tags[::-1]
            first, last = len(seq) - last, len(seq) - first
        seqs.append(seq)
        labels.append(tags)
        genes.append((strand, pos + first + 1, pos + last))
        pos += len(seq)
    seqs.append(intergenic(rng, length - pos))
    labels.append("O" * (length - pos))
    return "".join(seqs), "".join(labels), genes


def write_gene_tagging(out_dir: str | os.PathLike, *, n_train: int = 1000, n_val: int = 200,
                       length: int = 1500, seed: int = 0) -> dict:
    """Write ``train.fasta`` and ``val.fasta`` (records of ``length`` bases whose headers
    list their genes as ``+:first-last``, 1-based transcript spans) and ``regions.fasta``
    (each record's labels, by id) into ``out_dir``; returns counts of records and genes."""
    if length < MIN_LENGTH:
        raise ValueError(f"length must be at least {MIN_LENGTH} bases (a gene with its "
                         f"flanks), got {length}")
    if n_train < 1 or n_val < 0:
        raise ValueError(f"n_train must be at least 1 and n_val at least 0, got {n_train} "
                         f"and {n_val}")
    out, rng = Path(out_dir), random.Random(seed)
    regions, counts = [], {"genes": 0}
    for split, n in (("train", n_train), ("val", n_val)):
        lines = []
        for i in range(n):
            name = f"{split}{i:05d}"
            seq, tags, genes = genomic_record(rng, length)
            spans = " ".join(f"{s}:{a}-{b}" for s, a, b in genes) or "none"
            lines.append(f">{name} synthetic genomic DNA, {length} bp, genes {spans}\n{seq}\n")
            regions.append(f">{name}\n{tags}\n")
            counts["genes"] += len(genes)
        atomic_write(out / f"{split}.fasta", "".join(lines))
        counts[split] = n
    atomic_write(out / "regions.fasta", "".join(regions))
    return counts


# Promoter strength: sequences aligned at the TSS, their expression set by the boxes.
PROMOTER_UPSTREAM, PROMOTER_DOWNSTREAM = 120, 80
TATA_BEST, TATA_WIDTH = 30, 6  # the distance expression peaks at, and its falloff
CAAT_BEST, CAAT_WIDTH = 78, 10


def promoter_strength(tata_mismatches: int | None, tata_distance: int,
                      caat_mismatches: int | None, caat_distance: int) -> float:
    """Noise-free log2 expression of a promoter: ``1 + 3 * tata + 1.5 * caat``, where
    ``tata = (1 - m / 6) ** 2 * exp(-((d - 30) / 6) ** 2)`` for a TATA box with ``m``
    substitutions from TATAAA whose first base is ``d`` bases upstream of the TSS, and
    ``caat = (1 - m / 5) ** 2 * exp(-((d - 78) / 10) ** 2)`` for a CAAT box with ``m``
    substitutions in its CCAAT core; a missing box (``None``) adds nothing."""
    tata = 0.0 if tata_mismatches is None else (1 - tata_mismatches / 6) ** 2 * math.exp(
        -((tata_distance - TATA_BEST) / TATA_WIDTH) ** 2)
    caat = 0.0 if caat_mismatches is None else (1 - caat_mismatches / 5) ** 2 * math.exp(
        -((caat_distance - CAAT_BEST) / CAAT_WIDTH) ** 2)
    return 1.0 + 3.0 * tata + 1.5 * caat


@dataclass
class Promoter:
    """A promoter and the start of its gene: ``PROMOTER_UPSTREAM`` bases, then the TSS.
    ``*_mismatches`` is None for a missing box; distances count from a box's first base
    to the TSS. ``strength`` is ``promoter_strength``; ``expression`` adds the noise."""

    seq: str
    tata_mismatches: int | None
    tata_distance: int
    caat_mismatches: int | None
    caat_distance: int
    strength: float
    expression: float


def make_promoter(rng: random.Random, *, noise: float = 0.25) -> Promoter:
    """A promoter of sampled quality (TATA box in 85%, 0-3 substitutions, 22-38 bases
    upstream; CAAT box in 70%, 0-2 substitutions in its core, 62-94 bases upstream),
    followed by a 5' UTR and the first codons, ``PROMOTER_DOWNSTREAM`` bases in all."""
    tata_m = rng.randint(0, 3) if rng.random() < 0.85 else None
    tata_d = rng.randint(22, 38)
    caat_m = rng.randint(0, 2) if rng.random() < 0.7 else None
    caat_d = rng.randint(62, 94)
    boxes = [] if tata_m is None else [(mutate(rng, TATA, tata_m), tata_d)]
    if caat_m is not None:
        boxes.append((caat_box(rng, caat_m, rng.randint(0, 2)), caat_d))
    up = promoter(rng, PROMOTER_UPSTREAM, boxes)
    utr = five_prime_utr(rng, rng.randint(20, 40))
    down = (utr + coding_sequence(rng, PROMOTER_DOWNSTREAM // 3))[:PROMOTER_DOWNSTREAM]
    strength = promoter_strength(tata_m, tata_d, caat_m, caat_d)
    return Promoter(up + down, tata_m, tata_d, caat_m, caat_d, strength,
                    strength + rng.gauss(0.0, noise))


def write_promoter_strength(out_dir: str | os.PathLike, *, n_train: int = 4000,
                            n_val: int = 500, noise: float = 0.25, seed: int = 0) -> dict:
    """Write ``train.fasta`` and ``val.fasta`` (promoters aligned at the TSS, their boxes
    named in the headers) and ``expression.csv`` (columns ``id``, ``expression``: log2
    expression of every record) into ``out_dir``; returns counts."""
    if n_train < 1 or n_val < 0:
        raise ValueError(f"n_train must be at least 1 and n_val at least 0, got {n_train} "
                         f"and {n_val}")
    if noise < 0:
        raise ValueError(f"noise must not be negative, got {noise}")
    out, rng = Path(out_dir), random.Random(seed)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["id", "expression"])
    counts = {}
    for split, n in (("train", n_train), ("val", n_val)):
        lines = []
        for i in range(n):
            name, p = f"{split}{i:05d}", make_promoter(rng, noise=noise)
            tata = "none" if p.tata_mismatches is None else \
                f"-{p.tata_distance} ({p.tata_mismatches} mismatches)"
            caat = "none" if p.caat_mismatches is None else \
                f"-{p.caat_distance} ({p.caat_mismatches} mismatches)"
            lines.append(f">{name} promoter, TSS at {PROMOTER_UPSTREAM + 1}, TATA {tata}, "
                         f"CAAT {caat}\n{p.seq}\n")
            writer.writerow([name, f"{p.expression:.4f}"])
        atomic_write(out / f"{split}.fasta", "".join(lines))
        counts[split] = n
    atomic_write(out / "expression.csv", table.getvalue())
    return counts
