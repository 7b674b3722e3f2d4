"""Byte- and character-level tokenizers.

Both are tiny, exact and need no training beyond collecting a character set, so a run
can always be reproduced from its ``tokenizer.json``. Everything that touches a whole
corpus (``encode_array``, ``count_units``, ``check_ids``) is vectorised with NumPy or
torch, because it runs over tens of millions of ids.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from seqlab.errors import ConfigError, DataError, TokenizerError
from seqlab.io import atomic_write
from seqlab.registry import Registry, closest

FORMAT_VERSION = 1
TOKENIZER_FILE = "tokenizer.json"

TOKENIZERS: Registry[type["Tokenizer"]] = Registry("tokenizer")

IdsLike = Sequence[int] | Tensor | np.ndarray


class Tokenizer(ABC):
    """Maps text to integer ids and back.

    Subclasses set ``kind`` (their registry key), ``unit`` (what bits-per-unit is
    reported in) and the special ids, and declare the keys of their ``to_dict`` in
    ``_fields`` so that ``from_dict`` can validate a file before trusting it.
    """

    kind: ClassVar[str]
    unit: ClassVar[str]
    _fields: ClassVar[dict[str, type]] = {}

    pad_id: int
    bos_id: int
    eos_id: int
    unk_id: int | None
    special_tokens: list[str]

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, specials included (ids are ``0 .. vocab_size - 1``)."""

    @abstractmethod
    def encode_array(self, data: str | bytes) -> np.ndarray:
        """Encode a whole corpus file at once: int32 ids, no specials added."""

    @abstractmethod
    def decode(self, ids: IdsLike, *, skip_special: bool = True) -> str:
        """Turn ids back into text; specials are dropped unless ``skip_special=False``."""

    @abstractmethod
    def _unit_mask(self, ids: Tensor | np.ndarray) -> Tensor | np.ndarray:
        """Boolean mask of the ids that stand for one byte/char of source text."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-able description, with ``kind`` and ``version``."""

    @classmethod
    @abstractmethod
    def _from_fields(cls, d: dict[str, Any], source: str) -> Tokenizer:
        """Build from an already key-checked dict."""

    @classmethod
    def build(cls, texts: Iterable[str] = ()) -> Tokenizer:
        """Build a tokenizer for a corpus (only tokenizers with a learned vocab read it)."""
        return cls()

    def encode(self, text: str) -> list[int]:
        """Encode ``text`` to ids (no specials added)."""
        return self.encode_array(text).tolist()

    def count_units(self, ids: IdsLike) -> int:
        """Number of bytes (byte tokenizer) or characters (char tokenizer) ``ids`` stand for.

        This is the denominator of bits per byte/char. Padding, bos and eos stand for no
        text and count 0. Tensors stay on their device; only the final count is read back.
        """
        return int(self._unit_mask(_index_array(ids)).sum())

    def check_ids(self, ids: IdsLike) -> None:
        """Raise TokenizerError naming the first id outside ``0 .. vocab_size - 1``.

        Raises:
            TokenizerError: for ids out of range, or ids that are not integers.
        """
        arr = _index_array(ids)
        if not _is_integer(arr):
            raise TokenizerError(f"token ids must be integers, got dtype {arr.dtype}")
        bad = (arr < 0) | (arr >= self.vocab_size)
        if not bool(bad.any()):
            return
        if isinstance(bad, Tensor):
            bad, arr = bad.cpu().numpy(), arr.cpu().numpy()
        flat = int(np.argmax(bad.reshape(-1)))
        where = np.unravel_index(flat, bad.shape)
        position = int(where[0]) if len(where) == 1 else tuple(int(i) for i in where)
        raise TokenizerError(
            f"token id {int(arr.reshape(-1)[flat])} at position {position} is out of range "
            f"for this tokenizer (vocabulary size {self.vocab_size}: ids 0..{self.vocab_size - 1})"
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write ``to_dict`` as JSON, atomically (pure ASCII: odd characters are escaped)."""
        atomic_write(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "<dict>") -> Tokenizer:
        """Validate ``d`` and build the tokenizer it describes.

        Called on the base class it dispatches on ``d["kind"]``; called on a subclass it
        also insists on that kind.

        Raises:
            TokenizerError: naming ``source`` and the key at fault.
        """
        if not isinstance(d, dict):
            raise TokenizerError(f"{source}: expected a JSON object, got {type(d).__name__}")
        if "kind" not in d:
            raise TokenizerError(f"{source}: key 'kind' is missing (valid: {', '.join(TOKENIZERS)})")
        kind = d["kind"]
        if not isinstance(kind, str):
            raise TokenizerError(f"{source}: 'kind' must be a string, got {type(kind).__name__}")
        try:
            target = TOKENIZERS.get(kind)
        except ConfigError as e:
            raise TokenizerError(f"{source}: 'kind': {e}") from None
        if not issubclass(target, cls):
            raise TokenizerError(f"{source}: 'kind' is {kind!r}, expected {cls.kind!r}")
        fields = {"kind": str, "version": int, **target._fields}
        for key in d:
            if key not in fields:
                raise TokenizerError(f"{source}: unknown key {key!r}{closest(key, fields)}; "
                                     f"a {kind} tokenizer has: {', '.join(fields)}")
        missing = [key for key in fields if key not in d]
        if missing:
            raise TokenizerError(f"{source}: key {missing[0]!r} is missing")
        for key, tp in fields.items():
            value = d[key]
            if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
                raise TokenizerError(f"{source}: {key!r} must be of type {tp.__name__}, "
                                     f"got {type(value).__name__}")
        if d["version"] != FORMAT_VERSION:
            raise TokenizerError(f"{source}: 'version' {d['version']} is not supported "
                                 f"(this seqlab reads version {FORMAT_VERSION})")
        return target._from_fields(d, source)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


@TOKENIZERS.register("byte")
class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as ids 0..255, then ``<pad>``, ``<bos>``, ``<eos>``.

    Lossless for every Python ``str``: lone surrogates are encoded with
    ``surrogatepass``. Generated ids need not be valid UTF-8, so decoding falls back to
    ``errors="replace"`` instead of failing.
    """

    kind = "byte"
    unit = "byte"
    special_tokens = ["<pad>", "<bos>", "<eos>"]
    pad_id, bos_id, eos_id = 256, 257, 258
    unk_id = None

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.special_tokens)

    def encode_array(self, data: str | bytes) -> np.ndarray:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        return np.frombuffer(bytes(data), dtype=np.uint8).astype(np.int32)

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
        return {"kind": self.kind, "version": FORMAT_VERSION}

    @classmethod
    def _from_fields(cls, d: dict[str, Any], source: str) -> ByteTokenizer:
        return cls()


@TOKENIZERS.register("char")
class CharTokenizer(Tokenizer):
    """One id per character seen in the corpus; anything else becomes ``<unk>``.

    Ids are ``<pad>, <unk>, <bos>, <eos>`` then the corpus characters in code point
    order; encoding is one table lookup per code point (fast on 10 MB of text).
    """

    kind = "char"
    unit = "char"
    special_tokens = ["<pad>", "<unk>", "<bos>", "<eos>"]
    pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3
    _fields = {"special_tokens": list, "chars": list}

    def __init__(self, chars: Iterable[str]):
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
    def build(cls, texts: Iterable[str] = ()) -> CharTokenizer:
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
        return cls(chr(int(c)) for c in codes)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def encode_array(self, data: str | bytes) -> np.ndarray:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data).decode("utf-8", "replace")
        codes = _code_points(data)
        return self._encode_table[np.minimum(codes, len(self._encode_table) - 1)]

    def decode(self, ids: IdsLike, *, skip_special: bool = True) -> str:
        """Decode ids; with ``skip_special`` pad/bos/eos vanish and ``<unk>`` shows as U+FFFD,
        since it stands for a real (unknown) character of the text."""
        arr = _decode_input(self, ids)
        if not skip_special:
            return "".join(self._itos[i] for i in arr.tolist())
        arr = arr[~np.isin(arr, (self.pad_id, self.bos_id, self.eos_id))]
        return self._decode_codes[arr].astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")

    def _unit_mask(self, ids):
        # <unk> replaced one character of the source text, so it counts as one.
        return (ids == self.unk_id) | (ids >= len(self.special_tokens))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": FORMAT_VERSION,
                "special_tokens": list(self.special_tokens), "chars": list(self.chars)}

    @classmethod
    def _from_fields(cls, d: dict[str, Any], source: str) -> CharTokenizer:
        if d["special_tokens"] != cls.special_tokens:
            raise TokenizerError(f"{source}: 'special_tokens' must be {cls.special_tokens}, "
                                 f"got {d['special_tokens']}")
        chars = d["chars"]
        for i, c in enumerate(chars):
            if not isinstance(c, str) or len(c) != 1:
                raise TokenizerError(f"{source}: 'chars' must hold single characters, "
                                     f"item {i} is {c!r}")
        if any(a >= b for a, b in zip(chars, chars[1:])):
            raise TokenizerError(f"{source}: 'chars' must be sorted and without duplicates, "
                                 "since ids follow their order")
        return cls(chars)


def build_tokenizer(kind: str, texts: Iterable[str] = ()) -> Tokenizer:
    """Build a tokenizer by registry key; ``char`` reads ``texts`` for its vocabulary.

    Raises:
        ConfigError: for an unknown kind, naming the closest valid one.
    """
    return TOKENIZERS.get(kind).build(texts)


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a ``tokenizer.json`` (or the one inside a run directory).

    Raises:
        TokenizerError: naming the file, for a missing file, invalid JSON (with line and
            column), an unknown kind, missing or unknown keys and values of the wrong type.
    """
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise TokenizerError(f"tokenizer file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{path}: not UTF-8 text (invalid byte at offset {e.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: "
                             f"{e.msg}") from None
    return Tokenizer.from_dict(data, source=str(path))


def _code_points(text: str) -> np.ndarray:
    """Unicode code points of ``text`` as uint32 (lone surrogates included)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _utf8(byte_ids: np.ndarray) -> str:
    data = byte_ids.astype(np.uint8).tobytes()
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace")


def _index_array(ids: IdsLike) -> Tensor | np.ndarray:
    """Ids as a tensor or array, without copying tensors off their device."""
    if isinstance(ids, (Tensor, np.ndarray)):
        return ids
    return np.asarray(ids, dtype=np.int64)


def _is_integer(arr: Tensor | np.ndarray) -> bool:
    if isinstance(arr, Tensor):
        return not (arr.is_floating_point() or arr.is_complex() or arr.dtype == torch.bool)
    return bool(np.issubdtype(arr.dtype, np.integer))


def _decode_input(tokenizer: Tokenizer, ids: IdsLike) -> np.ndarray:
    """Checked 1-D int64 NumPy ids for decoding."""
    tokenizer.check_ids(ids)
    arr = _index_array(ids)
    if isinstance(arr, Tensor):
        arr = arr.detach().cpu().numpy()
    arr = arr.astype(np.int64, copy=False)
    if arr.ndim > 1:
        raise TokenizerError(f"decode takes a 1-D sequence of ids, got shape {tuple(arr.shape)}")
    return arr.reshape(-1)
