"""Long-range DNA classification: is the gene on? Two signals tens of kilobases apart decide.

Each record is ``length`` bases (32,768 by default) of background DNA carrying two
signals: a cluster of enhancer-like binding sites in the first ``enhancer_span`` bases and
a cluster of core-promoter-like sites in the last ``promoter_span`` bases. Enhancers and
core promoters come in two classes, ``dev`` (developmental) and ``hk`` (housekeeping),
and an enhancer activates only a promoter of its own class (enhancer-promoter
specificity, Zabidi et al. 2015, Nature 518:556). The label is ``active`` when the two
classes match and ``inactive`` otherwise: an XOR of two bits set tens of thousands of
bases apart, so neither region alone says anything about the label, and a model must
carry what it read at the start of the record to its end.

Every enhancer site lies in ``[0, enhancer_span)`` and every promoter site in
``[length - promoter_span, length)``, so the gap between the last enhancer base and the
first promoter base is at least ``length - enhancer_span - promoter_span`` bases
(``LongDNASpec.min_distance``: 28,672 by default).

Background is a first-order Markov chain with approximately the dinucleotide frequencies
of the human genome: 41% GC and CpG depleted to about a fifth of what the base
composition predicts. Decoys, halves of the four motifs, are scattered between the two
regions; a full motif occurs only where it was planted (records where the background or
a decoy happens to spell one are drawn again).

Class pairs are dealt in shuffled blocks of four (each of dev/hk x dev/hk once), so any
multiple of four records has balanced labels and the label is exactly independent of
either class alone. Record ``i`` depends only on ``(seed, i)`` and the spec.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqlab.io import atomic_write

__all__ = ["CLASSES", "ENHANCERS", "HEADER_LABEL", "LABELS", "PAIR_LABEL", "PROMOTERS", "LongDNARecord",
           "LongDNASpec", "make_long_dna", "write_long_dna"]

BASES = "ACGT"
CLASSES = ("dev", "hk")
LABELS = ("active", "inactive")  # classes match / differ
#: ``data.header_label`` for the FASTA files ``write_long_dna`` writes: active/inactive.
HEADER_LABEL = r"label=(\w+)"
#: The same files read as four classes, the enhancer's and the promoter's together
#: (``enhancer=dev promoter=hk``). Each half has its own first-order signal, so a model
#: learns to read both without the plateau an XOR label puts in front of it; knowing the
#: class at the end alone is worth at most 0.5 accuracy, and the gene is on exactly when
#: the two classes named agree.
PAIR_LABEL = r"(enhancer=\w+ promoter=\w+)"

# 16-base sites loosely modelled on known elements; what matters is that they are long
# enough never to occur in the background by chance (4^-16 per position).
ENHANCERS = {
    "dev": "TGATAAGATTAATTAG",  # GATA (TGATAA) then a homeodomain site (TAATTA)
    "hk": "ACCGGAAGTGCCGGAA",   # Ets sites (CCGGAAGT), common in housekeeping enhancers
}
PROMOTERS = {
    "dev": "TATAAAAGGCTCAGTT",  # TATA box then an initiator (TCAGT)
    "hk": "GGGGCGGGGCTATCGA",   # Sp1 GC box then a DRE-like element (TATCGA)
}
MOTIF_LENGTH = 16

# Dinucleotide frequencies (percent, row = first base, columns A C G T), rounded from
# the human genome: GC about 41%, CpG about 1% against about 4% expected.
DINUCLEOTIDES = np.array([
    [9.7, 5.0, 7.0, 7.6],
    [7.3, 5.2, 1.0, 7.0],
    [6.0, 4.3, 5.2, 5.0],
    [6.5, 6.0, 7.3, 9.7],
])
TRANSITIONS = DINUCLEOTIDES / DINUCLEOTIDES.sum(1, keepdims=True)  # P(next | current)
STATIONARY = DINUCLEOTIDES.sum(1) / DINUCLEOTIDES.sum()


@dataclass(frozen=True)
class LongDNASpec:
    """Where the signals go and how strong they are.

    Args:
        length: bases per record.
        enhancer_span: the enhancer sites lie in the first ``enhancer_span`` bases.
        promoter_span: the promoter sites lie in the last ``promoter_span`` bases.
        sites: copies of the class motif in each region (a homotypic cluster); each sits
            at a random offset inside its own of ``sites`` equal slots, so none overlap.
        decoys: half motifs (8 bases of any of the four motifs) between the regions.
    """

    length: int = 32768
    enhancer_span: int = 2048
    promoter_span: int = 2048
    sites: int = 8
    decoys: int = 16

    def __post_init__(self):
        for name in ("length", "enhancer_span", "promoter_span", "sites"):
            if getattr(self, name) < 1:
                raise ValueError(f"LongDNASpec.{name} must be positive, got {getattr(self, name)}")
        if self.decoys < 0:
            raise ValueError(f"LongDNASpec.decoys must be >= 0, got {self.decoys}")
        for name in ("enhancer_span", "promoter_span"):
            if getattr(self, name) // self.sites < MOTIF_LENGTH:
                raise ValueError(f"LongDNASpec.{name}={getattr(self, name)} cannot hold "
                                 f"{self.sites} sites of {MOTIF_LENGTH} bases")
        if self.min_distance < 0:
            raise ValueError(f"LongDNASpec: enhancer_span {self.enhancer_span} + promoter_span "
                             f"{self.promoter_span} exceed length {self.length}")
        if self.decoys and self.min_distance // self.decoys < MOTIF_LENGTH:
            raise ValueError(f"LongDNASpec: {self.decoys} decoys of {MOTIF_LENGTH} bases do not "
                             f"fit in the {self.min_distance} bases between the regions")

    @property
    def min_distance(self) -> int:
        """Fewest bases between the last enhancer base and the first promoter base."""
        return self.length - self.enhancer_span - self.promoter_span


@dataclass(frozen=True)
class LongDNARecord:
    """One record: the sequence, its label and where its signals were planted (0-based
    start of each 16-base site)."""

    id: str
    sequence: str
    label: str
    enhancer: str
    promoter: str
    enhancer_sites: tuple[int, ...]
    promoter_sites: tuple[int, ...]
    decoy_sites: tuple[int, ...]

    @property
    def header(self) -> str:
        return f"{self.id} label={self.label} enhancer={self.enhancer} promoter={self.promoter}"


def _markov_background(uniforms: np.ndarray) -> np.ndarray:
    """Background base indices (n, L) from uniforms (n, L): the first base from the
    stationary distribution, each next one from ``TRANSITIONS`` by inverse CDF. The loop
    runs over positions, every record at once."""
    n, L = uniforms.shape
    cumulative = np.cumsum(TRANSITIONS, 1)  # (4, 4)
    out = np.empty((n, L), dtype=np.uint8)
    out[:, 0] = np.searchsorted(np.cumsum(STATIONARY), uniforms[:, 0], side="right").clip(max=3)
    for t in range(1, L):
        out[:, t] = (uniforms[:, t, None] > cumulative[out[:, t - 1]]).sum(1).clip(max=3)
    return out


def _slots(rng: np.random.Generator, start: int, span: int, count: int) -> list[int]:
    """``count`` non-overlapping site starts in ``[start, start + span)``: one random
    offset inside each of ``count`` equal slots."""
    width = span // count
    return [start + k * width + int(rng.integers(0, width - MOTIF_LENGTH + 1))
            for k in range(count)]


def _pair(seed: int, index: int) -> tuple[str, str]:
    """(enhancer class, promoter class) of record ``index``: blocks of four records hold
    each pair once, in an order seeded by the block."""
    order = np.random.default_rng([seed, index // 4, 1]).permutation(4)
    k = int(order[index % 4])
    return CLASSES[k // 2], CLASSES[k % 2]


def _plan(spec: LongDNASpec, rng: np.random.Generator, enhancer: str, promoter: str):
    """Sites and decoys of one record: (enhancer starts, promoter starts, [(start, text)])."""
    e_sites = _slots(rng, 0, spec.enhancer_span, spec.sites)
    p_sites = _slots(rng, spec.length - spec.promoter_span, spec.promoter_span, spec.sites)
    planted = [(s, ENHANCERS[enhancer]) for s in e_sites] + [(s, PROMOTERS[promoter]) for s in p_sites]
    if spec.decoys:
        half = MOTIF_LENGTH // 2
        motifs = [*ENHANCERS.values(), *PROMOTERS.values()]
        for s in _slots(rng, spec.enhancer_span, spec.min_distance, spec.decoys):
            motif = motifs[int(rng.integers(len(motifs)))]
            piece = motif[:half] if rng.integers(2) == 0 else motif[half:]
            offset = int(rng.integers(0, MOTIF_LENGTH - half + 1))
            planted.append((s + offset, piece))
    return e_sites, p_sites, planted


def _only_planted(sequence: str, planted: list[tuple[int, str]]) -> bool:
    """True when every full motif in ``sequence`` is one that was planted."""
    expected = {(s, text) for s, text in planted if len(text) == MOTIF_LENGTH}
    for motif in (*ENHANCERS.values(), *PROMOTERS.values()):
        at = sequence.find(motif)
        while at >= 0:
            if (at, motif) not in expected:
                return False
            at = sequence.find(motif, at + 1)
    return True


def make_long_dna(n: int, *, seed: int = 0, start: int = 0,
                  spec: LongDNASpec | None = None) -> list[LongDNARecord]:
    """Records ``start .. start + n - 1`` of the data set ``seed``.

    Disjoint index ranges give disjoint splits of one data set (``write_long_dna`` takes
    validation records after the training ones).
    """
    spec = spec or LongDNASpec()
    out = []
    batch = 64  # records whose backgrounds are drawn in one pass over positions
    for first in range(start, start + n, batch):
        indices = list(range(first, min(first + batch, start + n)))
        attempts = dict.fromkeys(indices, 0)
        done: dict[int, LongDNARecord] = {}
        while len(done) < len(indices):
            todo = [i for i in indices if i not in done]
            uniforms = np.stack([np.random.default_rng([seed, i, attempts[i], 1]).random(spec.length)
                                 for i in todo])
            backgrounds = _markov_background(uniforms)  # (n, L)
            for row, i in enumerate(todo):
                record = _record_from(spec, seed, i, attempts[i], backgrounds[row])
                if record is None:
                    attempts[i] += 1
                else:
                    done[i] = record
        out.extend(done[i] for i in indices)
    return out


def _record_from(spec: LongDNASpec, seed: int, index: int, attempt: int,
                 background: np.ndarray) -> LongDNARecord | None:
    """Plant the signals of record ``index`` in its background (L,) of base indices, or
    None when a full motif turns up where none was planted."""
    enhancer, promoter = _pair(seed, index)
    rng = np.random.default_rng([seed, index, attempt, 2])
    e_sites, p_sites, planted = _plan(spec, rng, enhancer, promoter)
    letters = np.frombuffer(BASES.encode(), dtype=np.uint8)[background]
    for s, text in planted:
        letters[s:s + len(text)] = np.frombuffer(text.encode(), dtype=np.uint8)
    sequence = letters.tobytes().decode()
    if not _only_planted(sequence, planted):
        return None
    label = LABELS[0] if enhancer == promoter else LABELS[1]
    decoys = tuple(s for s, _ in planted[2 * spec.sites:])
    return LongDNARecord(f"r{index:06d}", sequence, label, enhancer, promoter,
                         tuple(e_sites), tuple(p_sites), decoys)


def write_long_dna(out_dir: str | os.PathLike, *, n_train: int = 1024, n_val: int = 128,
                   seed: int = 0, spec: LongDNASpec | None = None, line_width: int = 80) -> dict:
    """Write ``train.fasta`` and ``val.fasta`` into ``out_dir``, the label in each header
    (read it with ``data.header_label: HEADER_LABEL``); returns counts and the spec.

    Validation records are records ``n_train ..`` of the same seed, so the splits share
    no record.
    """
    spec = spec or LongDNASpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, n, start in (("train", n_train, 0), ("val", n_val, n_train)):
        lines = []
        for r in make_long_dna(n, seed=seed, start=start, spec=spec):
            lines.append(f">{r.header}\n")
            lines.extend(r.sequence[i:i + line_width] + "\n"
                         for i in range(0, len(r.sequence), line_width))
        atomic_write(out / f"{split}.fasta", "".join(lines))
    return {"train": n_train, "val": n_val, "length": spec.length,
            "min_distance": spec.min_distance}
