"""Tokenizers for biological sequences: protein residues, DNA and RNA nucleotides (IUPAC
codes, optional soft-masking), and DNA k-mers (overlapping or not).

Sequences are letters; whitespace between them (line breaks of a sequence file) is
dropped when encoding. Letters outside a tokenizer's alphabet become ``<unk>``. Ids are
the alphabet first, then ``<pad>``, ``<unk>``, ``<bos>``, ``<eos>`` (and ``<mask>``).
Bits are reported per residue (``bits_per_residue``): every id stands for the residues
it spells, k for a non-overlapping k-mer and one for an overlapping one (each predicts
one new base).
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any, ClassVar, Iterable

import numpy as np

from seqlab.data.tokenizer_base import TOKENIZERS, IdsLike, Tokenizer, _decode_input
from seqlab.errors import ConfigError, TokenizerError

PROTEIN = "ACDEFGHIKLMNPQRSTVWY"  # the 20 standard amino acids
PROTEIN_AMBIGUOUS = "BZXJUO"  # Asx, Glx, any, Xle, selenocysteine, pyrrolysine
IUPAC = "RYSWKMBDHVN"  # nucleotide ambiguity codes
# Each code's complement: the code for the complementary set of bases.
_COMPLEMENT = dict(zip("ACGTURYSWKMBDHVN", "TGCAAYRSWMKVHDBN"))


def _text(data: str | bytes) -> str:
    return bytes(data).decode("utf-8", "replace") if isinstance(data, (bytes, bytearray, memoryview)) else data


def _letters(text: str) -> np.ndarray:
    """Code points of ``text`` without whitespace."""
    return np.frombuffer("".join(text.split()).encode("utf-32-le"), dtype="<u4")


def _letter_positions(text: str) -> np.ndarray:
    """Where in ``text`` each letter of :func:`_letters` stands (whitespace skipped)."""
    return np.array([i for i, c in enumerate(text) if not c.isspace()], dtype=np.int64)


def _spans(positions: np.ndarray, first: np.ndarray, last: np.ndarray) -> list[tuple[int, int]]:
    """Character spans of ids spelling letters ``first[j]..last[j]`` (inclusive)."""
    return list(zip(positions[first].tolist(), (positions[last] + 1).tolist()))


class AlphabetTokenizer(Tokenizer):
    """One id per letter of ``alphabet`` (see the module docstring)."""

    alphabet: ClassVar[str]
    unit = "residue"
    default_specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    _optional = {"special_tokens": list}

    def __init__(self, *, mask: bool = False, specials: list[str] | None = None):
        self.letters = self._letters()
        self._set_specials(specials or self.specials_for(mask), len(self.letters))
        self._table = np.full(128, self.unk_id, dtype=np.int32)  # ASCII; the rest is <unk>
        for i, letter in enumerate(self.letters):
            self._table[ord(letter)] = i
        self._fold_case()

    def _letters(self) -> str:
        return self.alphabet

    def _fold_case(self) -> None:
        for letter in self.letters:
            if letter.lower() not in self.letters:
                self._table[ord(letter.lower())] = self._table[ord(letter)]

    @property
    def vocab_size(self) -> int:
        return len(self.letters) + len(self.special_tokens)

    def encode_array(self, data: str | bytes) -> np.ndarray:
        points = _letters(_text(data))
        ids = np.full(points.shape, self.unk_id, dtype=np.int32)
        ascii_ = points < 128
        ids[ascii_] = self._table[points[ascii_]]
        return ids

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """One id per letter; whitespace has none."""
        positions = _letter_positions(text)
        return list(zip(positions.tolist(), (positions + 1).tolist()))

    def unknown_letters(self, text: str) -> Counter:
        """The letters of ``text`` that encode as ``<unk>``, with their counts."""
        points = _letters(text)
        return Counter(map(chr, points[self.encode_array(text) == self.unk_id].tolist()))

    @property
    def valid_letters(self) -> str:
        """What a sequence may hold (lowercase too, unless soft-masking gives it ids)."""
        return self.letters

    def decode(self, ids: IdsLike, *, skip_special: bool = True) -> str:
        arr = _decode_input(self, ids)
        n = len(self.letters)
        return "".join(self.letters[i] if i < n else ("" if skip_special and i != self.unk_id else
                                                      "?" if i == self.unk_id else self.special_tokens[i - n])
                       for i in arr.tolist())

    def _unit_mask(self, ids):
        return ((ids >= 0) & (ids < len(self.letters))) | (ids == self.unk_id)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": 1, "special_tokens": list(self.special_tokens)}

    @classmethod
    def _from_fields(cls, d: dict[str, Any], source: str) -> Tokenizer:
        return cls(specials=cls._check_specials(d.get("special_tokens", cls.default_specials), source))


@TOKENIZERS.register("protein")
class ProteinTokenizer(AlphabetTokenizer):
    """Amino acids: the 20 standard ones and the ambiguity codes B Z X J U O; other
    letters (and ``*``) are ``<unk>``. Lowercase reads as uppercase."""

    kind = "protein"
    alphabet = PROTEIN + PROTEIN_AMBIGUOUS


class NucleotideTokenizer(AlphabetTokenizer):
    """Bases and the IUPAC ambiguity codes. With ``soft_mask`` lowercase letters (the
    repeats a soft-masked genome marks) keep ids of their own; otherwise they read as
    uppercase."""

    _optional = {"special_tokens": list, "soft_mask": bool}

    def __init__(self, *, mask: bool = False, specials: list[str] | None = None,
                 soft_mask: bool = False):
        self.soft_mask = soft_mask
        super().__init__(mask=mask, specials=specials)

    def _letters(self) -> str:
        return self.alphabet + (self.alphabet.lower() if self.soft_mask else "")

    @classmethod
    def build(cls, texts: Iterable[str] = (), *, mask: bool = False, soft_mask: bool = False):
        return cls(mask=mask, soft_mask=soft_mask)

    def complement_ids(self) -> np.ndarray:
        """id -> the id of its complementary base (A-T or A-U, C-G, IUPAC codes to theirs,
        case kept); specials and ``<unk>`` map to themselves."""
        table = np.arange(self.vocab_size, dtype=np.int64)
        uracil = "U" in self.alphabet
        for i, letter in enumerate(self.letters):
            other = _COMPLEMENT[letter.upper()]
            if other == "T" and uracil:
                other = "U"
            table[i] = self.letters.index(other if letter.isupper() else other.lower())
        return table

    def reverse_complement(self, text: str) -> str:
        """The reverse complement of a sequence (letters outside the alphabet kept)."""
        pairs = {**_COMPLEMENT, **({"A": "U"} if "U" in self.alphabet else {})}
        pairs.update({k.lower(): v.lower() for k, v in pairs.items()})
        return "".join(pairs.get(c, c) for c in reversed(text))

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "soft_mask": self.soft_mask}

    @classmethod
    def _from_fields(cls, d: dict[str, Any], source: str) -> Tokenizer:
        return cls(specials=cls._check_specials(d.get("special_tokens", cls.default_specials), source),
                   soft_mask=bool(d.get("soft_mask", False)))


@TOKENIZERS.register("dna")
class DNATokenizer(NucleotideTokenizer):
    kind = "dna"
    alphabet = "ACGT" + IUPAC


@TOKENIZERS.register("rna")
class RNATokenizer(NucleotideTokenizer):
    kind = "rna"
    alphabet = "ACGU" + IUPAC


@TOKENIZERS.register("kmer")
class KmerTokenizer(Tokenizer):
    """DNA k-mers over A, C, G, T: ids for the 4^k k-mers, then the four single bases
    (a non-overlapping split ends with the bases left over), then the specials; a k-mer
    holding another letter (N, an IUPAC code) is ``<unk>``.

    ``overlap``: one k-mer per position (stride 1), each sharing k - 1 bases with the
    previous one, as DNABERT reads DNA; otherwise consecutive k-mers (stride k).
    """

    kind = "kmer"
    unit = "residue"
    default_specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    _fields = {"k": int, "overlap": bool}
    _optional = {"special_tokens": list}

    def __init__(self, k: int = 3, *, overlap: bool = False, mask: bool = False,
                 specials: list[str] | None = None):
        if not 1 <= k <= 8:
            raise ConfigError(f"tokenizer.k must be 1..8 (4^k ids), got {k}")
        self.k, self.overlap = k, overlap
        self.kmers = ["".join(p) for p in itertools.product("ACGT", repeat=k)]
        self._set_specials(specials or self.specials_for(mask), len(self.kmers) + 4)
        self._base = np.full(128, 4, dtype=np.int64)  # 4: not a base
        for i, b in enumerate("ACGT"):
            self._base[ord(b)] = self._base[ord(b.lower())] = i

    @classmethod
    def build(cls, texts: Iterable[str] = (), *, mask: bool = False, k: int = 3,
              overlap: bool = False) -> KmerTokenizer:
        return cls(k, overlap=overlap, mask=mask)

    @property
    def vocab_size(self) -> int:
        return len(self.kmers) + 4 + len(self.special_tokens)

    def encode_array(self, data: str | bytes) -> np.ndarray:
        points = _letters(_text(data))
        bases = np.where(points < 128, self._base[np.minimum(points, 127)], 4)
        k, n = self.k, len(bases)
        step = 1 if self.overlap else k
        starts = np.arange(0, n - k + 1, step)
        windows = bases[starts[:, None] + np.arange(k)] if len(starts) else np.zeros((0, k), np.int64)
        codes = (windows * 4 ** np.arange(k - 1, -1, -1)).sum(1)
        ids = np.where((windows < 4).all(1), codes, self.unk_id)
        if not self.overlap and n % k:  # the bases left over, one by one
            tail = bases[len(starts) * k:]
            ids = np.concatenate([ids, np.where(tail < 4, len(self.kmers) + tail, self.unk_id)])
        elif self.overlap and 0 < n < k:
            ids = np.where(bases < 4, len(self.kmers) + bases, self.unk_id)
        return ids.astype(np.int32)

    def decode(self, ids: IdsLike, *, skip_special: bool = True) -> str:
        arr = _decode_input(self, ids)
        pieces, first = [], True
        for i in arr.tolist():
            if i < len(self.kmers):
                kmer = self.kmers[i]
                pieces.append(kmer if (first or not self.overlap) else kmer[-1])
                first = False
            elif i < len(self.kmers) + 4:
                pieces.append("ACGT"[i - len(self.kmers)])
            elif i == self.unk_id:
                pieces.append("N" * (self.k if (first or not self.overlap) else 1))
                first = False
            elif not skip_special:
                pieces.append(self.special_tokens[i - len(self.kmers) - 4])
        return "".join(pieces)

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Each k-mer spans its k letters (whitespace between them included), a single
        base its own; an overlapping k-mer starts at its first base."""
        positions = _letter_positions(text)
        k, n = self.k, len(positions)
        if n < k:
            first = np.arange(n) if self.overlap else np.zeros(0, np.int64)
            last = first
        else:
            first = np.arange(0, n - k + 1, 1 if self.overlap else k)
            last = first + k - 1
        if not self.overlap and n % k:  # the bases left over, one by one
            tail = np.arange((n // k) * k, n)
            first, last = np.concatenate([first, tail]), np.concatenate([last, tail])
        return _spans(positions, first, last)

    def unknown_letters(self, text: str) -> Counter:
        """The letters of ``text`` other than A, C, G, T (any case): each makes its k-mers
        ``<unk>``."""
        points = _letters(text)
        bases = np.where(points < 128, self._base[np.minimum(points, 127)], 4)
        return Counter(map(chr, points[bases == 4].tolist()))

    valid_letters = "ACGT"

    def count_units(self, ids: IdsLike) -> int:
        """Bases the ids stand for: k per non-overlapping k-mer, one per single base, and
        one per overlapping k-mer (the new base it adds)."""
        arr = np.asarray(ids.detach().cpu() if hasattr(ids, "detach") else ids, dtype=np.int64)
        kmer = (arr >= 0) & (arr < len(self.kmers))
        single = (arr >= len(self.kmers)) & (arr < len(self.kmers) + 4)
        per_kmer = 1 if self.overlap else self.k
        return int(kmer.sum() * per_kmer + single.sum() + (arr == self.unk_id).sum() * per_kmer)

    def _unit_mask(self, ids):
        return (ids >= 0) & (ids < len(self.kmers) + 4)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": 1, "k": self.k, "overlap": self.overlap,
                "special_tokens": list(self.special_tokens)}

    @classmethod
    def _from_fields(cls, d: dict[str, Any], source: str) -> KmerTokenizer:
        if not 1 <= d["k"] <= 8:
            raise TokenizerError(f"{source}: 'k' must be 1..8, got {d['k']}")
        return cls(d["k"], overlap=d["overlap"],
                   specials=cls._check_specials(d.get("special_tokens", cls.default_specials), source))
