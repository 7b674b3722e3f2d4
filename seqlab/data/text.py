"""Text corpora: finding files, reading them into one token stream, and cutting blocks.

Training batches are random contiguous blocks whose content is a pure function of
``(seed, step, micro)``, so resuming a run restores the data position directly instead
of replaying batches; evaluation walks the stream in fixed, non-overlapping blocks.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from seqlab.data.sampling import restored_seed
from seqlab.data.tokenizer_base import Tokenizer
from seqlab.errors import DataError
from seqlab.registry import closest

logger = logging.getLogger("seqlab")

_GLOB_CHARS = frozenset("*?[")


def resolve_paths(spec: str | os.PathLike | list, *,
                  extensions: list[str] | None = None,
                  exclude: list[str] | None = None) -> list[Path]:
    """Expand a data spec into the list of text files it names.

    Args:
        spec: a file, a folder (searched recursively in sorted order, skipping hidden
            files and folders), a glob (``**`` allowed), or a list of these.
        extensions: when given, folders only contribute files with these suffixes
            (``"txt"`` or ``".txt"``, case-insensitive). Named files and globs are taken
            as given, since they already say which files are meant.
        exclude: glob patterns (``test``, ``test_*.py``); files and folders met while
            scanning a folder whose name matches one are skipped.

    Returns:
        Files in order, without duplicates. Empty files found inside folders or globs
        are skipped.

    Raises:
        DataError: a path does not exist, a folder or glob holds no usable file, or a
            named file (or every file found) is empty.
    """
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise DataError("no data paths given (the list is empty)")
        files = [f for item in spec
                 for f in resolve_paths(item, extensions=extensions, exclude=exclude)]
        return list(dict.fromkeys(files))
    text = os.fspath(spec)
    path = Path(text)
    if path.is_file():
        if path.stat().st_size == 0:
            raise DataError(f"data path {path} holds no text: the file is empty")
        return [path]
    if path.is_dir():
        found = _scan_folder(path, _normalise_extensions(extensions), exclude)
        if not found:
            only = f" with extension {', '.join(extensions)}" if extensions else ""
            only += f" outside the excluded {', '.join(exclude)}" if exclude else ""
            raise DataError(f"data folder {path} holds no files{only} "
                            "(hidden files and folders are skipped)")
        return _drop_empty(found, path)
    if _GLOB_CHARS & set(text):
        found = []
        for match in sorted(glob.glob(text, recursive=True)):
            m = Path(match)
            if m.is_dir():
                found += _scan_folder(m, _normalise_extensions(extensions), exclude)
            elif m.is_file():
                found.append(m)
        if not found:
            raise DataError(f"data glob {text!r} matched no files")
        return _drop_empty(list(dict.fromkeys(found)), text)
    raise DataError(f"data path {path} does not exist{_sibling_hint(path)}")


def _normalise_extensions(extensions: list[str] | None) -> tuple[str, ...] | None:
    if extensions is None:
        return None
    return tuple("." + e.lower().lstrip(".") for e in extensions)


def _scan_folder(root: Path, suffixes: tuple[str, ...] | None,
                 exclude: list[str] | None = None) -> list[Path]:
    def skipped(name: str) -> bool:
        return name.startswith(".") or any(fnmatch.fnmatch(name, p) for p in exclude or ())

    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not skipped(d))
        for name in sorted(names):
            if skipped(name):
                continue
            if suffixes is not None and not name.lower().endswith(suffixes):
                continue
            files.append(Path(folder) / name)
    return files


def _drop_empty(files: list[Path], where: str | Path) -> list[Path]:
    kept = [f for f in files if f.stat().st_size > 0]
    if not kept:
        raise DataError(f"data path {where} holds no text: all {len(files)} files are empty")
    return kept


def _sibling_hint(path: Path) -> str:
    parent = path.parent
    if not parent.is_dir():
        return ""
    return closest(path.name, [p.name for p in parent.iterdir()])


@dataclass
class TokenCorpus:
    """A corpus as one token stream.

    Attributes:
        tokens: 1-D int32 ids; every document is preceded and followed by ``eos``.
        units: bytes or characters of text the tokens represent (bits-per-unit denominator).
        files: the files actually read (``max_bytes`` may stop before the last ones).
    """

    tokens: Tensor
    units: int
    files: list[Path] = field(default_factory=list)


def read_texts(paths: list[Path]) -> Iterator[str]:
    """Yield each file as text (invalid UTF-8 replaced by U+FFFD), e.g. to build a char vocab."""
    for path in paths:
        yield Path(path).read_bytes().decode("utf-8", "replace")


def read_corpus(paths: list[Path], tokenizer: Tokenizer, *,
                max_bytes: int | None = None) -> TokenCorpus:
    """Read files into one token stream, documents joined with ``eos``.

    ``eos`` also opens the stream, so the model always sees ``eos`` right before a
    document starts, which is what generation prompts begin with.

    Byte tokenizers take the raw bytes (nothing can be invalid); other tokenizers get
    UTF-8 text with invalid bytes replaced, and one warning per file names the offset of
    the first invalid byte.

    Args:
        paths: files, e.g. from ``resolve_paths``.
        tokenizer: turns each file into ids.
        max_bytes: cap on the total bytes read; reading stops there, cutting the last
            file at a character boundary.

    Raises:
        DataError: no files are given.
        ValueError: ``max_bytes`` is not positive.
    """
    if not paths:
        raise DataError("no data files to read")
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    eos = np.array([tokenizer.eos_id], dtype=np.int32)
    pieces, files = [eos], []
    for path, limit in byte_budget(paths, max_bytes):
        files.append(path)
        pieces += [encode_file(path, tokenizer, limit), eos]
    tokens = torch.from_numpy(np.concatenate(pieces))
    return TokenCorpus(tokens=tokens, units=tokenizer.count_units(tokens), files=files)


def byte_budget(paths: list[Path], max_bytes: int | None) -> list[tuple[Path, int | None]]:
    """The files a ``max_bytes`` cap lets ``read_corpus`` read, each with the most bytes
    to read from it (None: all of it); the last one may be cut."""
    plan, budget = [], max_bytes
    for path in paths:
        path = Path(path)
        plan.append((path, budget))
        if budget is not None:
            size = path.stat().st_size
            if size >= budget:
                break
            budget -= size
    return plan


def encode_file(path: Path, tokenizer: Tokenizer, limit: int | None = None) -> np.ndarray:
    """A file's ids (at most ``limit`` bytes of it, cut at a character boundary)."""
    data, _ = _read_bytes(path, limit)
    return _encode_file(path, data, tokenizer)


def _read_bytes(path: Path, limit: int | None) -> tuple[bytes, bool]:
    """Read the file, or at most ``limit`` bytes of it ending on a UTF-8 character boundary.

    Returns:
        The bytes and whether the file was cut short.
    """
    with open(path, "rb") as f:
        if limit is None:
            return f.read(), False
        data = f.read(limit + 3)
    if len(data) <= limit:
        return data, False
    cut = limit
    while cut > max(limit - 3, 0) and data[cut] & 0xC0 == 0x80:
        cut -= 1  # data[cut] continues a multi-byte character: cut before it starts
    return data[:cut], True


def _encode_file(path: Path, data: bytes, tokenizer: Tokenizer) -> np.ndarray:
    if tokenizer.unit == "byte":
        return tokenizer.encode_array(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        logger.warning("%s is not valid UTF-8 (first invalid byte at offset %d); "
                       "invalid bytes are read as U+FFFD", path, e.start)
        text = data.decode("utf-8", "replace")
    return tokenizer.encode_array(text)


def split_tokens(tokens: Tensor, val_fraction: float) -> tuple[Tensor, Tensor]:
    """Split a stream into (train, validation), validation being the last ``val_fraction``.

    Both sides get at least one token when the stream has two; callers check whether
    that is enough for their block size.
    """
    cut = split_point(len(tokens), val_fraction)
    return tokens[:cut], tokens[cut:]


def split_point(n: int, val_fraction: float) -> int:
    """Where a stream of ``n`` tokens splits into training and validation (see
    ``split_tokens``)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    n_val = min(max(round(n * val_fraction), 1), max(n - 1, 0))
    return n - n_val


class RandomBlocks:
    """Random contiguous training blocks whose content is a pure function of
    ``(seed, step, micro)``.

    Resuming at step 10**6 costs the same as at step 10: the data position is restored
    directly, no batches are replayed. Each batch draws from its own ``torch.Generator``,
    never the global RNG, so model code that samples does not shift the data.

    Args:
        tokens: 1-D token stream.
        block_size: tokens per block (the model's context length).
        batch_size: blocks per batch.
        seed: run seed.

    Raises:
        DataError: the stream is shorter than ``block_size + 1`` tokens.
    """

    def __init__(self, tokens: Tensor, *, block_size: int, batch_size: int, seed: int):
        if tokens.dim() != 1:
            raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
        if block_size < 1 or batch_size < 1:
            raise ValueError(f"block_size and batch_size must be positive, "
                             f"got {block_size} and {batch_size}")
        if len(tokens) < block_size + 1:
            raise DataError(
                f"the training data has {len(tokens)} tokens, fewer than block_size + 1 = "
                f"{block_size + 1}; use a smaller context_length or more data")
        self.tokens = tokens
        self.block_size, self.batch_size, self.seed = block_size, batch_size, seed
        self._offsets = torch.arange(block_size + 1)

    def _generator(self, step: int, micro: int) -> torch.Generator:
        # A hash, not seed + step: nearby (seed, step) pairs must not share streams.
        digest = hashlib.blake2b(f"{self.seed}:{step}:{micro}".encode(), digest_size=8).digest()
        g = torch.Generator()
        g.manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
        return g

    def batch(self, step: int, micro: int = 0) -> tuple[Tensor, Tensor]:
        """The batch for ``(step, micro)``.

        Returns:
            ``(inputs, targets)``, both int64 of shape (B, T); targets are inputs shifted
            by one position in the stream.
        """
        if step < 0 or micro < 0:
            raise ValueError(f"step and micro must be non-negative, got {step} and {micro}")
        n_starts = len(self.tokens) - self.block_size
        starts = torch.randint(n_starts, (self.batch_size,), generator=self._generator(step, micro))
        rows = self.tokens[starts[:, None] + self._offsets].long()  # (B, T + 1)
        return rows[:, :-1], rows[:, 1:]

    def state_dict(self) -> dict:
        """JSON-able data position: everything a batch depends on besides the step."""
        return {"seed": self.seed, "block_size": self.block_size,
                "batch_size": self.batch_size, "n_tokens": len(self.tokens)}

    def load_state_dict(self, d: dict) -> None:
        """Restore the seed; refuse a state saved for a different stream or batch shape.

        Raises:
            DataError: a key is missing or ``block_size``, ``batch_size`` or ``n_tokens``
                differs from the saved value (both values are named).
        """
        self.seed = restored_seed(d, self.state_dict(), "the same data and settings")


def sequential_blocks(tokens: Tensor, *, block_size: int, batch_size: int,
                      max_batches: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Non-overlapping consecutive blocks for evaluation, in stream order.

    Every target position of the stream is predicted exactly once: full blocks come in
    batches of ``batch_size`` (the last batch may be smaller), then the leftover tail as
    one shorter block. A stream shorter than ``block_size + 1`` gives one shorter block.

    Raises:
        DataError: the stream has fewer than 2 tokens (nothing to predict).
    """
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
    if block_size < 1 or batch_size < 1:
        raise ValueError(f"block_size and batch_size must be positive, "
                         f"got {block_size} and {batch_size}")
    if len(tokens) < 2:
        raise DataError(f"the evaluation data has {len(tokens)} tokens; at least 2 are needed")
    return _sequential(tokens, block_size, batch_size, max_batches)


def _sequential(tokens: Tensor, block_size: int, batch_size: int,
                max_batches: int | None) -> Iterator[tuple[Tensor, Tensor]]:
    n_targets = len(tokens) - 1
    n_full = n_targets // block_size
    offsets = torch.arange(block_size + 1)
    done = 0
    for first in range(0, n_full, batch_size):
        if max_batches is not None and done >= max_batches:
            return
        starts = torch.arange(first, min(first + batch_size, n_full)) * block_size
        rows = tokens[starts[:, None] + offsets].long()  # (B, T + 1)
        yield rows[:, :-1], rows[:, 1:]
        done += 1
    tail = tokens[n_full * block_size:].long()
    if len(tail) > 1 and (max_batches is None or done < max_batches):
        yield tail[None, :-1], tail[None, 1:]
