"""Pre-tokenised token streams on disk: shards written by ``seqlab data prepare``, read
lazily through memory maps, so a corpus larger than memory trains like a small one.

A prepared directory::

    DIR/
      index.json          format, dtype, the shards in stream order with their token
                          counts and sha256, how the stream was made (written last)
      tokenizer.json      the tokenizer the ids belong to
      tokens-KKKKK-JJJJJ.bin   raw little-endian uint16 (or uint32) ids, shard J of worker K

The stream is the concatenation of the shards, laid out as the ``text`` source's: ``eos``
first, then each document followed by ``eos``. Training with ``data.source: shards`` is
therefore the same training as ``data.source: text`` on the same files (tested), with
the held-out tail (``val_fraction``) cut from the stream the same way.

:class:`TokenShards` is what the block samplers read: ``len``, a 2-D index tensor of
positions (random training windows) and slices (evaluation). It never reads more than
the positions asked for; the operating system pages the maps in and out.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from seqlab.data.sources import Batches, PathSpec, register_source
from seqlab.data.text import RandomBlocks, split_point
from seqlab.data.text_source import TextOptions, TextSource
from seqlab.data.tokenizer_base import Tokenizer
from seqlab.errors import ConfigError, DataError
from seqlab.io import file_sha256

logger = logging.getLogger("seqlab")

INDEX_FILE = "index.json"
SHARD_TOKENIZER_FILE = "tokenizer.json"
FORMAT = "seqlab-token-shards"
VERSION = 1
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


def dtype_for(vocab_size: int) -> str:
    """The narrowest shard dtype that holds every id of a vocabulary."""
    return "uint16" if vocab_size <= 2**16 else "uint32"


def read_index(directory: str | os.PathLike) -> dict:
    """A prepared directory's ``index.json``, checked.

    Raises:
        DataError: the directory is not a (complete) prepared directory, naming what is
            missing or wrong and what would be valid.
    """
    directory = Path(directory)
    path = directory / INDEX_FILE
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory of prepared token shards; make one "
                        "with: seqlab data prepare CONFIG --out DIR")
    if not path.is_file():
        raise DataError(f"{directory} has no {INDEX_FILE}: it is not a prepared directory, or "
                        "its preparation did not finish (run seqlab data prepare again)")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DataError(f"{path} is not a seqlab token-shard index (format {FORMAT!r} expected)")
    if index.get("version") != VERSION:
        raise DataError(f"{path} has version {index.get('version')!r}; this seqlab reads "
                        f"version {VERSION}")
    if index.get("dtype") not in DTYPES:
        raise DataError(f"{path}: dtype {index.get('dtype')!r} is not one of {', '.join(DTYPES)}")
    for shard in index.get("shards", []):
        file = directory / shard["file"]
        expected = shard["tokens"] * DTYPES[index["dtype"]].itemsize
        if not file.is_file():
            raise DataError(f"{directory}: shard {shard['file']} listed in {INDEX_FILE} is missing")
        if file.stat().st_size != expected:
            raise DataError(f"{file} holds {file.stat().st_size} bytes, but {INDEX_FILE} says "
                            f"{shard['tokens']} tokens ({expected} bytes): the shard is damaged")
    if not index.get("shards"):
        raise DataError(f"{path} lists no shards")
    return index


class TokenShards:
    """A token stream over memory-mapped shards, or a window ``[start, stop)`` of one.

    Supports what the block samplers use: ``len``, ``dim`` (1), indexing by a tensor of
    positions (any shape; int64 ids of the same shape) and by a slice (int64 ids).
    """

    def __init__(self, maps: list[np.memmap], start: int = 0, stop: int | None = None):
        self.maps = maps
        self.bounds = np.cumsum([0] + [len(m) for m in maps])  # stream offset of each shard
        self.start = start
        self.stop = int(self.bounds[-1]) if stop is None else stop

    @classmethod
    def open(cls, directory: str | os.PathLike, *, verify: bool = False) -> "TokenShards":
        """Map a prepared directory's shards (``verify``: also check their sha256)."""
        directory = Path(directory)
        index = read_index(directory)
        maps = []
        for shard in index["shards"]:
            path = directory / shard["file"]
            if verify and file_sha256(path) != shard["sha256"]:
                raise DataError(f"{path} does not match the sha256 in {INDEX_FILE}: the shard "
                                "is damaged; prepare the data again")
            maps.append(np.memmap(path, dtype=DTYPES[index["dtype"]], mode="r"))
        return cls(maps)

    def __len__(self) -> int:
        return self.stop - self.start

    def dim(self) -> int:
        return 1

    def window(self, start: int, stop: int) -> "TokenShards":
        """Positions ``[start, stop)`` of this stream, still on disk."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"window [{start}, {stop}) outside a stream of {len(self)} tokens")
        return TokenShards(self.maps, self.start + start, self.start + stop)

    def __getitem__(self, index) -> Tensor:
        if isinstance(index, slice):
            first, last, step = index.indices(len(self))
            if step != 1:
                raise IndexError("token shards take slices with step 1 only")
            positions = np.arange(first, max(first, last), dtype=np.int64)
        else:
            positions = torch.as_tensor(index).numpy().astype(np.int64, copy=False)
        return torch.from_numpy(self._gather(positions))

    def _gather(self, positions: np.ndarray) -> np.ndarray:
        if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"token position outside a stream of {len(self)} tokens")
        absolute = positions + self.start
        shard = np.searchsorted(self.bounds, absolute, side="right") - 1
        out = np.empty(positions.shape, dtype=np.int64)
        for k in np.unique(shard):
            hit = shard == k
            out[hit] = self.maps[k][absolute[hit] - self.bounds[k]]
        return out


@dataclass
class ShardOptions(TextOptions):
    """``path``: a directory that ``seqlab data prepare`` wrote. ``val_path`` and
    ``eval_sets`` entries: prepared directories too. ``verify``: check every shard's
    sha256 when training starts (reads all of them once). The text source's own options
    (``extensions``, ``exclude``, ``max_bytes``, ``shuffle_files``) were applied when the
    shards were prepared; they are accepted here, so a text config switches to its
    shards with ``--set data.source=shards --set data.path=DIR``, and change nothing."""

    verify: bool = False

    def __post_init__(self):
        super().__post_init__()
        for key, spec in [("path", self.path), ("val_path", self.val_path),
                          *((f"eval_sets.{k}", v) for k, v in self.eval_sets.items())]:
            if isinstance(spec, list):
                raise ConfigError(f"data.{key} of the shards source is one prepared directory, "
                                  f"not a list")


@register_source("shards", ShardOptions, labels=(None,), inputs="tokens")
class ShardSource(TextSource):
    """A token stream from prepared shards (see the module docstring); training and
    evaluation blocks are cut as the ``text`` source cuts them."""

    def _directory(self) -> Path:
        if self.options.path is None:
            raise ConfigError("data.path is not set: give the directory seqlab data prepare wrote")
        return Path(self.options.path)

    def tokenizer_file(self) -> Path | None:
        return self._directory() / SHARD_TOKENIZER_FILE

    def texts(self):
        return iter(())  # the tokenizer comes with the shards

    def _open(self, spec: PathSpec) -> TokenShards:
        return TokenShards.open(spec, verify=self.options.verify)

    def load(self, tokenizer: Tokenizer | None, fitted: dict | None = None) -> None:
        o, block = self.options, self.ctx.max_length
        self.attach(tokenizer, fitted)
        index = read_index(self._directory())
        if index["vocab_size"] != tokenizer.vocab_size:
            raise ConfigError(f"{self._directory()} was prepared with a vocabulary of "
                              f"{index['vocab_size']} tokens, but the run's tokenizer has "
                              f"{tokenizer.vocab_size}; leave tokenizer.path unset to use the "
                              "shards' own tokenizer.json")
        stream = self._open(self._directory())
        if o.val_path is None:
            cut = split_point(len(stream), o.val_fraction)
            self.train_tokens, self.val_tokens = stream.window(0, cut), stream.window(cut, len(stream))
        else:
            self.train_tokens, self.val_tokens = stream, self._open(o.val_path)
        if len(self.train_tokens) < block + 1:
            raise DataError(f"the prepared training data ({o.path}) has {len(self.train_tokens)} "
                            f"tokens, fewer than model.context_length + 1 = {block + 1}")
        self.blocks = RandomBlocks(self.train_tokens, block_size=block,
                                   batch_size=self.ctx.batch_size, seed=self.ctx.seed)
        self.extra = {name: self._open(spec) for name, spec in o.eval_sets.items()}
        self.n_shards = len(index["shards"])

    def read(self, path: PathSpec, *, labelled: bool = True,
             max_batches: int | None = None) -> Batches:
        """A prepared directory, or text files read with the run's tokenizer."""
        if not isinstance(path, list) and (Path(path) / INDEX_FILE).is_file():
            return self._blocks(self._open(path), max_batches)
        return super().read(path, labelled=labelled, max_batches=max_batches)

    def describe(self) -> str:
        return (f"{self.n_shards} prepared shards in {self.options.path}, "
                f"{len(self.train_tokens)} training and {len(self.val_tokens)} validation tokens "
                "(memory-mapped)")
