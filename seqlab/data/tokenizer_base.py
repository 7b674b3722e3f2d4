"""The tokenizer interface, its registry, and reading ``tokenizer.json`` files.

Tokenizers are tiny and exact, so a run can always be reproduced from its
``tokenizer.json``. Everything that touches a whole corpus (``encode_array``,
``count_units``, ``check_ids``) is vectorised with NumPy or torch, because it runs over
tens of millions of ids. The kinds themselves live in ``seqlab.data.tokenizers``.

Special tokens are listed in each file. Objectives that need one more (``<mask>`` for
masked language modeling) ask for it when the tokenizer is built; files written before
``<mask>`` existed keep loading with the specials they were written with.
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

from seqlab.errors import ConfigError, TokenizerError
from seqlab.io import atomic_write
from seqlab.registry import Registry, closest
from seqlab.rundir import TOKENIZER_FILE

FORMAT_VERSIONS = (1, 2)  # 2: byte tokenizers that list their special tokens
MASK = "<mask>"

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
    _optional: ClassVar[dict[str, type]] = {}
    default_specials: ClassVar[list[str]]
    learns_vocabulary: ClassVar[bool] = False  # does ``build`` read the training texts?

    special_tokens: list[str]
    pad_id: int
    bos_id: int
    eos_id: int
    unk_id: int | None = None
    mask_id: int | None = None

    def _set_specials(self, specials: list[str], first_id: int) -> None:
        """Name the special ids: ``specials`` take ids ``first_id, first_id + 1, ...``."""
        self.special_tokens = list(specials)
        ids = {name: first_id + i for i, name in enumerate(specials)}
        self.pad_id, self.bos_id, self.eos_id = ids["<pad>"], ids["<bos>"], ids["<eos>"]
        self.unk_id, self.mask_id = ids.get("<unk>"), ids.get(MASK)

    @classmethod
    def specials_for(cls, mask: bool) -> list[str]:
        return cls.default_specials + ([MASK] if mask else [])

    @classmethod
    def _check_specials(cls, specials: Any, source: str) -> list[str]:
        allowed = (cls.specials_for(False), cls.specials_for(True))
        if specials not in allowed:
            raise TokenizerError(f"{source}: 'special_tokens' must be {allowed[0]} or "
                                 f"{allowed[1]}, got {specials}")
        return list(specials)

    @property
    def special_ids(self) -> list[int]:
        """Ids that stand for no text (never masked, never drawn as a random token)."""
        return [i for i in (self.pad_id, self.bos_id, self.eos_id, self.mask_id) if i is not None]

    def content_ids(self) -> Tensor:
        """Every id that is not special (random replacements in masked LM draw from these)."""
        keep = torch.ones(self.vocab_size, dtype=torch.bool)
        keep[self.special_ids] = False
        return keep.nonzero().squeeze(1)

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
    def build(cls, texts: Iterable[str] = (), *, mask: bool = False) -> Tokenizer:
        """Build a tokenizer for a corpus (only tokenizers with a learned vocab read it);
        ``mask`` adds the ``<mask>`` special token."""
        return cls(mask=mask)

    def encode(self, text: str) -> list[int]:
        """Encode ``text`` to ids (no specials added)."""
        return self.encode_array(text).tolist()

    def offsets(self, text: str) -> list[tuple[int, int]] | None:
        """Per id of ``encode(text)``, the characters of ``text`` it stands for, as
        ``(start, end)`` (end exclusive; ``start == end`` for an id that stands for no
        character). Ids that share a character (the bytes of one UTF-8 character split
        over several ids) each name it. None: this kind cannot say (pre-tokenised ids).
        Per-character tags are aligned to tokens with it
        (``seqlab.data.examples.align_tags``)."""
        return None

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
        if "kind" not in d and isinstance(d.get("model"), dict) and d["model"].get("type") == "BPE":
            # The tokenizers library's own file: a bpe tokenizer (seqlab.data.bpe).
            return TOKENIZERS.get("bpe").from_hf(d, source=source)
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
        required = {"kind": str, "version": int, **target._fields}
        fields = {**required, **target._optional}
        for key in d:
            if key not in fields:
                raise TokenizerError(f"{source}: unknown key {key!r}{closest(key, fields)}; "
                                     f"a {kind} tokenizer has: {', '.join(fields)}")
        missing = [key for key in required if key not in d]
        if missing:
            raise TokenizerError(f"{source}: key {missing[0]!r} is missing")
        for key, tp in fields.items():
            value = d.get(key)
            if key in d and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
                raise TokenizerError(f"{source}: {key!r} must be of type {tp.__name__}, "
                                     f"got {type(value).__name__}")
        if d["version"] not in FORMAT_VERSIONS:
            raise TokenizerError(f"{source}: 'version' {d['version']} is not supported "
                                 f"(this seqlab reads versions {', '.join(map(str, FORMAT_VERSIONS))})")
        return target._from_fields(d, source)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


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
