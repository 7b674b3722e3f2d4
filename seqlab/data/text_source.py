"""The ``text`` source: text files read into one token stream, cut into blocks.

Training blocks are random contiguous windows (``RandomBlocks``: a pure function of
seed, step and micro-step); evaluation walks the held-out stream in consecutive blocks.
Each block comes with its next-token targets, which causal language modeling uses and
masked language modeling ignores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from seqlab.data.batch import Batch
from seqlab.data.sources import (Batches, DataSource, FileOptions, PathSpec, SourceContext,
                                 register_source)
from seqlab.data.text import RandomBlocks, read_corpus, read_texts, resolve_paths, sequential_blocks, split_tokens
from seqlab.data.tokenizer_base import Tokenizer
from seqlab.errors import ConfigError, DataError

logger = logging.getLogger("seqlab")



@dataclass
class TextOptions(FileOptions):
    """``extensions`` keeps only files with these suffixes; ``exclude`` drops files any of
    whose path parts below the folder (or glob root) match one of these glob patterns.
    ``shuffle_files`` orders files by a seeded shuffle before they are joined, so the
    validation tail and a ``max_bytes`` cap sample the whole collection rather than the
    alphabetically last files."""

    extensions: list[str] | None = None
    exclude: list[str] | None = None
    max_bytes: int | None = None
    shuffle_files: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ConfigError(f"data.max_bytes must be positive, got {self.max_bytes}")


@register_source("text", TextOptions, labels=(None,), inputs="tokens")
class TextSource(DataSource):
    """A token stream from text files (see the module docstring)."""

    default_eval_batches = 20  # batches of blocks per evaluation while training

    def __init__(self, options: TextOptions, ctx: SourceContext):
        super().__init__(options, ctx)
        self._files: list[Path] | None = None

    def files(self) -> list[Path]:
        """The training files, in a seeded shuffle when ``shuffle_files``."""
        if self._files is None:
            o = self.options
            if o.path is None:
                raise ConfigError("data.path is not set: give a text file, a folder or a glob")
            files = resolve_paths(o.path, extensions=o.extensions, exclude=o.exclude)
            if o.shuffle_files:
                order = torch.randperm(len(files), generator=torch.Generator().manual_seed(self.ctx.seed))
                files = [files[i] for i in order.tolist()]
            self._files = files
        return self._files

    def texts(self):
        return read_texts(self.files())

    def _stream(self, spec: PathSpec) -> Tensor:
        o = self.options
        return read_corpus(resolve_paths(spec, extensions=o.extensions, exclude=o.exclude),
                           self.tokenizer).tokens

    def load(self, tokenizer: Tokenizer | None, fitted: dict | None = None) -> None:
        o, block = self.options, self.ctx.max_length
        self.attach(tokenizer, fitted)
        tokens = read_corpus(self.files(), tokenizer, max_bytes=o.max_bytes).tokens
        if o.val_path is None:
            self.train_tokens, self.val_tokens = split_tokens(tokens, o.val_fraction)
        else:
            self.train_tokens, self.val_tokens = tokens, self._stream(o.val_path)
        if len(self.train_tokens) < block + 1:
            raise DataError(
                f"the training data ({o.path}) has {len(self.train_tokens)} tokens, fewer than "
                f"model.context_length + 1 = {block + 1}; use a smaller context_length or more data")
        self.blocks = RandomBlocks(self.train_tokens, block_size=block,
                                   batch_size=self.ctx.batch_size, seed=self.ctx.seed)
        self.extra = {name: self._stream(spec) for name, spec in o.eval_sets.items()}

    def train_batch(self, step: int, micro: int) -> Batch:
        x, y = self.blocks.batch(step, micro)
        return Batch(x, y)

    def _blocks(self, tokens: Tensor, max_batches: int | None) -> Batches:
        def batches():
            for x, y in sequential_blocks(tokens, block_size=self.ctx.max_length,
                                          batch_size=self.ctx.batch_size, max_batches=max_batches):
                yield Batch(x, y)

        return batches

    def eval_sets(self) -> dict[str, Batches]:
        cap = self.ctx.eval_batches
        sets = {"val": self._blocks(self.val_tokens, cap)}
        sets.update({name: self._blocks(tokens, cap) for name, tokens in self.extra.items()})
        return sets

    def read(self, path: PathSpec, *, labelled: bool = True,
             max_batches: int | None = None) -> Batches:
        return self._blocks(read_corpus(resolve_paths(path), self.tokenizer).tokens, max_batches)

    def state_dict(self) -> dict:
        return self.blocks.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.blocks.load_state_dict(state)

    def describe(self) -> str:
        return (f"{len(self.files())} files, {len(self.train_tokens)} training and "
                f"{len(self.val_tokens)} validation tokens")
