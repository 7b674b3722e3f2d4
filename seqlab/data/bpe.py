"""Byte-level BPE tokenizers, trained and run by Hugging Face ``tokenizers``.

A ``bpe`` tokenizer's file is the ``tokenizers`` library's own ``tokenizer.json``
(``tokenizers.Tokenizer.from_file`` loads it as is); seqlab recognises it by its BPE
model. Byte-level: every text (and every byte, read as UTF-8) has an encoding, and each
token stands for a known number of bytes, so bits per byte stay exact: ``count_units``
sums the bytes of the tokens, not their number.

Special tokens come first, with ids 0, 1, 2, 3: ``<pad>``, ``<bos>`` (the class slot:
classification pools it with ``pooling: first``), ``<eos>`` (the separator between
documents) and ``<mask>``.

Training streams its texts (``train_bpe``): files are read piece by piece (gzip
accepted; FASTA header lines skipped) and a line longer than ``chunk_chars`` is cut into
chunks. The trainer's memory follows the number of distinct words it counts. Text has a
bounded vocabulary of words, so training memory levels off as the corpus grows. One
unbroken DNA string has no words: every chunk is new, and memory grows with the corpus
(about 60 MB per MB of DNA). ``word_chars`` K cuts such text into words of K characters
instead. There are then at most alphabet^K distinct words, whatever the corpus size, and
merges never span two words (tokens of at most K characters). Measured on DNA with a
4,096-id vocabulary (peak memory above the process's baseline, on 8, 32 and 128 MB):

- K = 8: 75, 76 and 77 MB (the cap); 3.9 bases per token;
- K = 10: 426, 854 and 1,065 MB (the cap is about 1.1 GB); 4.4 bases per token;
- no K: 561 MB at 8 MB, growing with the corpus; 4.9 bases per token.

``max_bytes`` caps how much is read.
"""

from __future__ import annotations

import codecs
import gzip
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from seqlab.data.tokenizer_base import MASK, TOKENIZERS, IdsLike, Tokenizer, _index_array
from seqlab.errors import ConfigError, DataError, TokenizerError
from seqlab.io import atomic_write

SPECIALS = ["<pad>", "<bos>", "<eos>", MASK]
DEFAULT_VOCAB = 8000


def _library():
    try:
        import tokenizers
    except ImportError:
        raise ConfigError("bpe tokenizers need the tokenizers package: pip install tokenizers") from None
    return tokenizers


@TOKENIZERS.register("bpe")
class BPETokenizer(Tokenizer):
    """A byte-level BPE vocabulary (see the module docstring)."""

    kind = "bpe"
    unit = "byte"
    learns_vocabulary = True
    default_specials = SPECIALS[:3]

    def __init__(self, inner):
        self.inner = inner
        ids = [inner.token_to_id(t) for t in SPECIALS]
        if ids != list(range(len(SPECIALS))):
            raise TokenizerError(f"a bpe tokenizer needs {', '.join(SPECIALS)} as ids 0..3, got "
                                 f"{dict(zip(SPECIALS, ids))}")
        self._set_specials(SPECIALS, 0)
        # Bytes per id: a byte-level token is written in an alphabet of one character per
        # byte; specials stand for no text.
        self._bytes = np.array([0 if i < len(SPECIALS) else len(inner.id_to_token(i))
                                for i in range(inner.get_vocab_size())], dtype=np.int64)
        self._bytes_t = torch.from_numpy(self._bytes)

    @classmethod
    def build(cls, texts: Iterable[str] = (), *, mask: bool = False,
              vocab_size: int = DEFAULT_VOCAB, word_chars: int | None = None) -> BPETokenizer:
        """Train on ``texts`` (the run's training text when ``tokenizer.kind`` is bpe)."""
        return train_bpe(texts, vocab_size=vocab_size, word_chars=word_chars)

    @property
    def vocab_size(self) -> int:
        return self.inner.get_vocab_size()

    def encode_array(self, data: str | bytes) -> np.ndarray:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data).decode("utf-8", "replace")
        return np.asarray(self.inner.encode(data, add_special_tokens=False).ids, dtype=np.int32)

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """The ``tokenizers`` library's offsets: characters of ``text``, not bytes. A
        character whose UTF-8 bytes are split over several tokens is named by each of
        them (``"→"`` may read as two tokens, both ``(i, i + 1)``), and a token that
        starts inside a character starts at it."""
        return list(self.inner.encode(text, add_special_tokens=False).offsets)

    def decode(self, ids: IdsLike, *, skip_special: bool = True) -> str:
        self.check_ids(ids)
        arr = _index_array(ids)
        arr = arr.detach().cpu().numpy() if isinstance(arr, Tensor) else np.asarray(arr)
        return self.inner.decode(arr.reshape(-1).tolist(), skip_special_tokens=skip_special)

    def count_units(self, ids: IdsLike) -> int:
        """UTF-8 bytes the ids stand for (specials count 0)."""
        arr = _index_array(ids)
        if isinstance(arr, Tensor):
            return int(self._bytes_t.to(arr.device)[arr.long()].sum())
        return int(self._bytes[np.asarray(arr, dtype=np.int64)].sum())

    def _unit_mask(self, ids):
        table = self._bytes_t.to(ids.device) if isinstance(ids, Tensor) else self._bytes
        return table[ids] > 0

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.inner.to_str())

    def save(self, path: str | os.PathLike) -> None:
        """The ``tokenizers`` library's own JSON (``Tokenizer.from_file`` reads it)."""
        atomic_write(path, self.inner.to_str(pretty=True) + "\n")

    @classmethod
    def from_hf(cls, data: dict, *, source: str) -> BPETokenizer:
        try:
            inner = _library().Tokenizer.from_str(json.dumps(data))
        except Exception as e:  # noqa: BLE001 - the library's parse error, reworded
            raise TokenizerError(f"{source}: not a valid tokenizers JSON ({e})") from None
        try:
            return cls(inner)
        except TokenizerError as e:
            raise TokenizerError(f"{source}: {e}") from None

    @classmethod
    def _from_fields(cls, d: dict[str, Any], source: str) -> BPETokenizer:
        raise TokenizerError(f"{source}: a bpe tokenizer file is the tokenizers library's JSON, "
                             "without a 'kind' key")


def is_hf_bpe(data: Any) -> bool:
    """Whether a parsed tokenizer file is the ``tokenizers`` library's BPE JSON."""
    return isinstance(data, dict) and isinstance(data.get("model"), dict) and \
        data["model"].get("type") == "BPE" and "kind" not in data


def train_bpe(texts: Iterable[str], *, vocab_size: int = DEFAULT_VOCAB, min_frequency: int = 2,
              chunk_chars: int = 4096, word_chars: int | None = None) -> BPETokenizer:
    """Train a byte-level BPE tokenizer of at most ``vocab_size`` ids on ``texts``,
    streamed (fewer when the text runs out of pairs seen ``min_frequency`` times).
    ``word_chars``: cut the text, whitespace removed, into words of that many characters
    (for DNA: the memory cap of the module docstring).

    Raises:
        ConfigError: ``vocab_size`` leaves no room beyond the 256 bytes and the specials,
            or ``word_chars`` is below 2.
    """
    floor = 256 + len(SPECIALS)
    if vocab_size < floor:
        raise ConfigError(f"a byte-level bpe vocabulary needs at least {floor} ids (256 bytes "
                          f"and {len(SPECIALS)} specials), got vocab_size {vocab_size}")
    if word_chars is not None and word_chars < 2:
        raise ConfigError(f"word_chars must be >= 2 (a word of one character has nothing to "
                          f"merge), got {word_chars}")
    lib = _library()
    inner = lib.Tokenizer(lib.models.BPE())
    inner.pre_tokenizer = lib.pre_tokenizers.ByteLevel(add_prefix_space=False)
    inner.decoder = lib.decoders.ByteLevel()
    trainer = lib.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=SPECIALS, show_progress=False,
                                      initial_alphabet=lib.pre_tokenizers.ByteLevel.alphabet())
    seen = {"any": False}

    def pieces() -> Iterator[str]:
        for text in texts:
            for start in range(0, len(text), chunk_chars):
                seen["any"] = True
                yield text[start:start + chunk_chars]

    def words() -> Iterator[list[str]]:
        carry = ""
        for text in texts:
            text = carry + "".join(text.split())
            cut = len(text) - len(text) % word_chars
            carry = text[cut:]
            if cut:
                seen["any"] = True
                yield [text[i:i + word_chars] for i in range(0, cut, word_chars)]
        if carry:
            seen["any"] = True
            yield [carry]

    inner.train_from_iterator(pieces() if word_chars is None else words(), trainer=trainer)
    if not seen["any"]:
        raise DataError("there is no text to train the bpe tokenizer on")
    return BPETokenizer(inner)


FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".faa", ".ffn", ".frn")


def is_fasta(path: Path) -> bool:
    """Whether a file name says FASTA (``.gz`` after the suffix allowed)."""
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(FASTA_SUFFIXES)


def _fasta_sequence_lines() -> Callable[[str], str]:
    """A filter for consecutive pieces of FASTA text that drops header (``>``) and
    comment (``;``) lines, also where a line straddles two pieces."""
    at_line_start, skipping = True, False

    def keep(text: str) -> str:
        nonlocal at_line_start, skipping
        out = []
        for line in re.findall(r"[^\n]*\n|[^\n]+", text):
            if at_line_start:
                skipping = line[:1] in (">", ";")
            if not skipping:
                out.append(line)
            at_line_start = line.endswith("\n")
        return "".join(out)

    return keep


def stream_texts(paths: list[Path], *, max_bytes: int | None = None,
                 block_bytes: int = 1 << 20) -> Iterator[str]:
    """The files' text in blocks of about ``block_bytes``, cut after a newline where a
    block has one (a line never straddles two blocks unless it is longer than a block),
    invalid UTF-8 read as U+FFFD, at most ``max_bytes`` read in all (uncompressed).
    ``.gz`` files are decompressed as they are read; of FASTA files (by suffix) only the
    sequence lines are kept."""
    budget = max_bytes
    for path in paths:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        carry = ""
        keep = _fasta_sequence_lines() if is_fasta(Path(path)) else (lambda text: text)
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rb") as f:
            while budget is None or budget > 0:
                block = f.read(block_bytes if budget is None else min(block_bytes, budget))
                if not block:
                    break
                if budget is not None:
                    budget -= len(block)
                text = carry + decoder.decode(block)
                cut = text.rfind("\n") + 1 or len(text)
                carry, text = text[cut:], keep(text[:cut])
                if text:
                    yield text
        tail = keep(carry + decoder.decode(b"", final=True))
        if tail:
            yield tail
        if budget is not None and budget <= 0:
            return
