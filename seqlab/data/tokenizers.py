"""Tokenizer kinds: UTF-8 bytes, characters of the corpus, and pre-tokenised ids.

The interface, the registry and file loading are in ``seqlab.data.tokenizer_base``;
everything is re-exported here.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from seqlab.data.tokenizer_base import (MASK, TOKENIZERS, IdsLike, Tokenizer, _code_points,
                                        _decode_input, _utf8, load_tokenizer)
from seqlab.errors import DataError, TokenizerError

__all__ = ["MASK", "TOKENIZERS", "ByteTokenizer", "CharTokenizer", "IdsTokenizer", "Tokenizer",
           "build_tokenizer", "load_tokenizer"]


@TOKENIZERS.register("byte")
class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as ids 0..255, then ``<pad>``, ``<bos>``, ``<eos>`` (and ``<mask>``
    when asked for).

    Lossless for every Python ``str``: lone surrogates are encoded with
    ``surrogatepass``. Generated ids need not be valid UTF-8, so decoding falls back to
    ``errors="replace"`` instead of failing. A tokenizer with the default specials is
    written as version 1 (``{"kind": "byte", "version": 1}``), exactly as before
    ``<mask>`` existed; one with ``<mask>`` as version 2, which lists its specials.
    """

    kind = "byte"
    unit = "byte"
    default_specials = ["<pad>", "<bos>", "<eos>"]
    _optional = {"special_tokens": list}

    def __init__(self, *, mask: bool = False, specials: list[str] | None = None):
        self._set_specials(specials or self.specials_for(mask), 256)

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.special_tokens)

    def encode_array(self, data: str | bytes) -> np.ndarray:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        return np.frombuffer(bytes(data), dtype=np.uint8).astype(np.int32)

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Each byte names the character it is part of: a non-ASCII character's 2-4
        bytes all give its span."""
        codes = _code_points(text)
        # UTF-8 bytes per code point (lone surrogates, written with surrogatepass: 3).
        widths = 1 + (codes >= 0x80) + (codes >= 0x800) + (codes >= 0x10000)
        chars = np.repeat(np.arange(len(codes)), widths)
        return list(zip(chars.tolist(), (chars + 1).tolist()))

    def decode(self, ids: IdsLike, *, skip_special: bool = True) -> str:
        arr = _decode_input(self, ids)
        if skip_special:
            return _utf8(arr[arr < 256])
        parts: list[str] = []
        start = 0
        for i in np.flatnonzero(arr >= 256).tolist():
            parts += [_utf8(arr[start:i]), self.special_tokens[arr[i] - 256]]
            start = i + 1
        parts.append(_utf8(arr[start:]))
        return "".join(parts)

    def _unit_mask(self, ids):
        return (ids >= 0) & (ids < 256)

    def to_dict(self) -> dict[str, Any]:
        if self.special_tokens == self.default_specials:
            return {"kind": self.kind, "version": 1}
        return {"kind": self.kind, "version": 2, "special_tokens": list(self.special_tokens)}

    @classmethod
    def _from_fields(cls, d: dict[str, Any], source: str) -> ByteTokenizer:
        if d["version"] == 1:
            if "special_tokens" in d:
                raise TokenizerError(f"{source}: a version 1 byte tokenizer has no "
                                     "'special_tokens' (version 2 lists them)")
            return cls()
        if "special_tokens" not in d:
            raise TokenizerError(f"{source}: key 'special_tokens' is missing (version 2)")
        return cls(specials=cls._check_specials(d["special_tokens"], source))


@TOKENIZERS.register("char")
class CharTokenizer(Tokenizer):
    """One id per character seen in the corpus; anything else becomes ``<unk>``.

    Ids are ``<pad>, <unk>, <bos>, <eos>`` (then ``<mask>`` when asked for), then the
    corpus characters in code point order; encoding is one table lookup per code point
    (fast on 10 MB of text).
    """

    kind = "char"
    unit = "char"
    learns_vocabulary = True
    default_specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    _fields = {"special_tokens": list, "chars": list}

    def __init__(self, chars: Iterable[str], *, mask: bool = False,
                 specials: list[str] | None = None):
        self._set_specials(specials or self.specials_for(mask), 0)
        chars = set(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"CharTokenizer takes single characters, got {c!r}")
        self.chars: list[str] = sorted(chars)
        n_special = len(self.special_tokens)
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        self._itos = self.special_tokens + self.chars
        # Code point of every id for fast decoding; <unk> shows as U+FFFD.
        self._decode_codes = np.concatenate(
            [np.full(n_special, 0xFFFD, dtype=np.uint32), self._codes])
        # Dense code point -> id table (at most 4.4 MB), ~10x faster than a searchsorted
        # over the sorted codes; its last entry is <unk> for code points above the vocab.
        top = int(self._codes[-1]) + 1 if self._codes.size else 0
        self._encode_table = np.full(top + 1, self.unk_id, dtype=np.int32)
        self._encode_table[self._codes] = np.arange(n_special, self.vocab_size, dtype=np.int32)

    @classmethod
    def build(cls, texts: Iterable[str] = (), *, mask: bool = False) -> CharTokenizer:
        """Collect the character set of ``texts``.

        Raises:
            DataError: when the texts hold no characters at all.
        """
        codes = np.zeros(0, dtype=np.uint32)
        for text in texts:
            codes = np.union1d(codes, np.unique(_code_points(text)))
        if codes.size == 0:
            raise DataError("the char tokenizer builds its vocabulary from the corpus, "
                            "but the corpus texts hold no characters")
        return cls((chr(int(c)) for c in codes), mask=mask)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def encode_array(self, data: str | bytes) -> np.ndarray:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data).decode("utf-8", "replace")
        codes = _code_points(data)
        return self._encode_table[np.minimum(codes, len(self._encode_table) - 1)]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """One id per character."""
        return [(i, i + 1) for i in range(len(text))]

    def decode(self, ids: IdsLike, *, skip_special: bool = True) -> str:
        """Decode ids; with ``skip_special`` pad/bos/eos/mask vanish and ``<unk>`` shows as
        U+FFFD, since it stands for a real (unknown) character of the text."""
        arr = _decode_input(self, ids)
        if not skip_special:
            return "".join(self._itos[i] for i in arr.tolist())
        arr = arr[~np.isin(arr, self.special_ids)]
        return self._decode_codes[arr].astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")

    def _unit_mask(self, ids):
        # <unk> replaced one character of the source text, so it counts as one.
        return (ids == self.unk_id) | (ids >= len(self.special_tokens))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": 1,
                "special_tokens": list(self.special_tokens), "chars": list(self.chars)}

    @classmethod
    def _from_fields(cls, d: dict[str, Any], source: str) -> CharTokenizer:
        specials = cls._check_specials(d["special_tokens"], source)
        chars = d["chars"]
        for i, c in enumerate(chars):
            if not isinstance(c, str) or len(c) != 1:
                raise TokenizerError(f"{source}: 'chars' must hold single characters, "
                                     f"item {i} is {c!r}")
        if any(a >= b for a, b in zip(chars, chars[1:])):
            raise TokenizerError(f"{source}: 'chars' must be sorted and without duplicates, "
                                 "since ids follow their order")
        return cls(chars, specials=specials)


@TOKENIZERS.register("ids")
class IdsTokenizer(Tokenizer):
    """Pre-tokenised data: ids ``0 .. size - 1`` come as given, then ``<pad>``, ``<bos>``,
    ``<eos>`` (and ``<mask>``). Text is ids written as decimal numbers separated by spaces.

    ``size`` is taken from the training data (largest id + 1) when the tokenizer is built.
    ``special_ids`` instead names ids inside the vocabulary as ``<pad>``, ``<bos>``,
    ``<eos>`` and optionally ``<mask>`` (an imported model's own, e.g. GPT-2's 50256 or
    BERT's [MASK]), and nothing is appended.
    """

    kind = "ids"
    unit = "token"
    learns_vocabulary = True
    default_specials = ["<pad>", "<bos>", "<eos>"]
    _fields = {"size": int, "special_tokens": list}
    _optional = {"special_ids": dict}

    def __init__(self, size: int, *, mask: bool = False, specials: list[str] | None = None,
                 special_ids: dict[str, int] | None = None):
        if size <= 0:
            raise ValueError(f"an ids tokenizer needs size >= 1, got {size}")
        self.size = size
        self.special_ids_inside = dict(special_ids) if special_ids else None
        if self.special_ids_inside is None:
            self._set_specials(specials or self.specials_for(mask), size)
            return
        if set(special_ids) - {MASK} != set(self.default_specials) or not all(
                isinstance(i, int) and 0 <= i < size for i in special_ids.values()):
            raise TokenizerError(f"special_ids must give {', '.join(self.default_specials)} (and "
                                 f"optionally {MASK}) ids in 0..{size - 1}, got {special_ids}")
        self.special_tokens = list(special_ids)
        self.pad_id, self.bos_id, self.eos_id = (special_ids[n] for n in self.default_specials)
        self.mask_id = special_ids.get(MASK)

    @classmethod
    def build(cls, texts: Iterable[str] = (), *, mask: bool = False) -> IdsTokenizer:
        top = -1
        for text in texts:
            ids = cls._parse(text)
            if ids.size:
                top = max(top, int(ids.max()))
        if top < 0:
            raise DataError("the ids tokenizer takes its size from the data, but the data "
                            "holds no ids")
        return cls(top + 1, mask=mask)

    @staticmethod
    def _parse(text: str) -> np.ndarray:
        try:
            ids = np.array(text.split(), dtype=np.int64)
        except ValueError:
            raise DataError(f"pre-tokenised text must be integers separated by spaces, got "
                            f"{text[:40]!r}") from None
        if ids.size and int(ids.min()) < 0:
            raise DataError(f"token ids must be >= 0, got {int(ids.min())}")
        return ids

    @property
    def vocab_size(self) -> int:
        return self.size + (0 if self.special_ids_inside else len(self.special_tokens))

    def encode_array(self, data: str | bytes) -> np.ndarray:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data).decode("utf-8", "replace")
        ids = self._parse(data)
        if ids.size and int(ids.max()) >= self.size:
            raise TokenizerError(f"token id {int(ids.max())} is out of range for this ids "
                                 f"tokenizer (data ids 0..{self.size - 1})")
        return ids.astype(np.int32)

    def decode(self, ids: IdsLike, *, skip_special: bool = True) -> str:
        arr = _decode_input(self, ids)
        if self.special_ids_inside:
            names = {i: n for n, i in self.special_ids_inside.items()}
            return " ".join(str(i) if i not in names else names[i] for i in arr.tolist()
                            if not (skip_special and i in names))
        if skip_special:
            return " ".join(str(i) for i in arr[arr < self.size].tolist())
        return " ".join(str(i) if i < self.size else self.special_tokens[i - self.size]
                        for i in arr.tolist())

    def _unit_mask(self, ids):
        mask = (ids >= 0) & (ids < self.size)
        for i in (self.special_ids_inside or {}).values():
            mask = mask & (ids != i)
        return mask

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind, "version": 2, "size": self.size,
             "special_tokens": list(self.special_tokens)}
        if self.special_ids_inside:
            d["special_ids"] = dict(self.special_ids_inside)
        return d

    @classmethod
    def _from_fields(cls, d: dict[str, Any], source: str) -> IdsTokenizer:
        if d["size"] <= 0:
            raise TokenizerError(f"{source}: 'size' must be >= 1, got {d['size']}")
        if d.get("special_ids"):
            return cls(d["size"], special_ids=d["special_ids"])
        return cls(d["size"], specials=cls._check_specials(d["special_tokens"], source))


def build_tokenizer(kind: str, texts: Iterable[str] = (), *, mask: bool = False,
                    **options) -> Tokenizer:
    """Build a tokenizer by registry key; ``char``, ``ids`` and ``bpe`` read ``texts`` for
    their vocabulary; ``mask`` adds the ``<mask>`` special token; ``options``: the kind's
    own (``vocab_size`` for bpe, ``k`` and ``overlap`` for kmer, ``soft_mask`` for dna).

    Raises:
        ConfigError: for an unknown kind, naming the closest valid one.
    """
    return TOKENIZERS.get(kind).build(texts, mask=mask, **options)
