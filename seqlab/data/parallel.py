"""The ``parallel`` source: pairs of a source text and a target text (translation,
grapheme-to-phoneme, summarisation), from TSV, CSV or JSON Lines files.

A TSV or CSV file names its columns in a header line (``source_field`` and
``target_field``), or with ``header: false`` holds the source then the target in its
first two columns. Both sides are encoded with the run's one tokenizer (learnt from both
sides when its kind learns a vocabulary), or, when the objective gives the source a
``target_tokenizer``, sources with the run's tokenizer and targets with that one. Pairs longer than ``max_source_length`` or
``max_target_length`` tokens are dropped with one warning per split (``too_long:
drop``) or stop the run naming the first (``too_long: error``); an empty source or
target is an error naming its file and line.

Without a ``val_path`` a seeded ``val_fraction`` is held out, by whole groups when
``group_field`` names one (every pair of a word, a module or a speaker on the same side
of the split). Batches come from :class:`~seqlab.data.sampling.ExampleSampler` (a pure
function of the step; bucketed by length unless ``bucket: false``):

- ``inputs`` (B, S) source ids and ``padding_mask`` (B, S);
- ``extras["decoder_inputs"]`` (B, T): ``<bos>`` then the target, and ``decoder_mask``;
- ``targets`` (B, T): the target then ``<eos>``, IGNORE at padding.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seqlab.data.batch import IGNORE, Batch, pad
from seqlab.data.records import Record, field_of, read_records, record_format
from seqlab.data.sampling import ExampleSampler, eval_plan, seeded_rng
from seqlab.data.sources import Batches, DataSource, FileOptions, PathSpec, register_source
from seqlab.data.text import resolve_paths
from seqlab.errors import ConfigError, DataError

logger = logging.getLogger("seqlab")

SPLIT_STREAM = 23
FORMATS = ("auto", "tsv", "csv", "jsonl")


@dataclass
class ParallelOptions(FileOptions):
    format: str = "auto"
    header: bool = True
    source_field: str = "source"
    target_field: str = "target"
    group_field: str | None = None
    max_source_length: int | None = None  # default: the encoder's context_length
    max_target_length: int | None = None  # default: model.context_length - 1
    too_long: str = "drop"
    bucket: bool = True
    bucket_span: int = 50
    val_fraction: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        if self.format not in FORMATS:
            raise ConfigError(f"data.format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.too_long not in ("drop", "error"):
            raise ConfigError(f"data.too_long must be 'drop' or 'error', got {self.too_long!r}")
        for key in ("max_source_length", "max_target_length", "bucket_span"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"data.{key} must be positive, got {value}")


@dataclass
class Pairs:
    """Encoded pairs: source and target id rows, and where each came from."""

    sources: list[np.ndarray]
    targets: list[np.ndarray]
    wheres: list[str]

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(s) + len(t) for s, t in zip(self.sources, self.targets)])

    def take(self, index) -> "Pairs":
        return Pairs([self.sources[i] for i in index], [self.targets[i] for i in index],
                     [self.wheres[i] for i in index])


def read_pairs(path: Path, o: ParallelOptions) -> list[Record]:
    """The records of one file, with ``o.source_field`` and ``o.target_field``."""
    fmt = record_format(path, "auto" if o.format == "auto" else o.format)
    if fmt not in ("tsv", "csv", "jsonl"):
        raise DataError(f"{path}: parallel text is read from TSV, CSV or JSONL files, not {fmt}")
    if o.header or fmt == "jsonl":
        return read_records(path, fmt)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (invalid byte at offset {e.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
    records = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        n = reader.line_num
        if len(row) < 2:
            raise DataError(f"{path}:{n}: {len(row)} column; a pair needs the source and the "
                            "target, separated by a " + ("tab" if fmt == "tsv" else "comma"))
        records.append(Record({o.source_field: row[0], o.target_field: row[1]}, f"{path}:{n}",
                              str(path)))
    if not records:
        raise DataError(f"{path} holds no pairs")
    return records


@register_source("parallel", ParallelOptions, labels=(None,), inputs="tokens")
class ParallelSource(DataSource):
    """Source-target text pairs (see the module docstring)."""

    _train_records: list[Record] | None = None
    separate = False  # the targets have a tokenizer of their own (set by the objective)
    source_limit: int | None = None  # the encoder's positions (set by the objective)
    target_tokenizer = None  # that tokenizer, once built

    @property
    def output_tokenizer(self):
        """The tokenizer of the targets: their own, or the shared one."""
        return self.target_tokenizer if self.target_tokenizer is not None else self.tokenizer

    @property
    def limits(self) -> tuple[int, int]:
        o = self.options
        return (o.max_source_length or self.source_limit or self.ctx.max_length,
                o.max_target_length or self.ctx.max_length - 1)

    def _records(self, spec: PathSpec) -> list[Record]:
        return [r for path in resolve_paths(spec) for r in read_pairs(path, self.options)]

    def _training_records(self) -> list[Record]:
        if self._train_records is None:
            if self.options.path is None:
                raise ConfigError("data.path is not set: give the training pairs")
            self._train_records = self._records(self.options.path)
        return self._train_records

    def texts(self):
        """The training texts the run's tokenizer learns from: both sides, or the sources
        alone when the targets have a tokenizer of their own."""
        yield from self.source_texts()
        if not self.separate:
            yield from self.target_texts()

    def source_texts(self):
        for r in self._training_records():
            yield str(field_of(r, self.options.source_field, "source"))

    def target_texts(self):
        for r in self._training_records():
            yield str(field_of(r, self.options.target_field, "target"))

    def encode_source(self, text: str, where: str) -> np.ndarray:
        """Source ids of one text, refusing an empty one and one past the source limit."""
        if not str(text).strip():
            raise DataError(f"{where}: the source is empty")
        ids = self.tokenizer.encode_array(str(text))
        if len(ids) > self.limits[0]:
            raise DataError(f"{where}: the source is {len(ids)} tokens long; this model reads "
                            f"at most {self.limits[0]} (data.max_source_length)")
        return ids

    def _encode(self, records: list[Record], name: str) -> Pairs:
        o, (max_src, max_tgt) = self.options, self.limits
        pairs, long = Pairs([], [], []), []
        for r in records:
            src, tgt = (str(field_of(r, f, what)) for f, what in
                        ((o.source_field, "source"), (o.target_field, "target")))
            for text, side in ((src, "source"), (tgt, "target")):
                if not text.strip():
                    raise DataError(f"{r.where}: the {side} is empty")
            s, t = self.tokenizer.encode_array(src), self.output_tokenizer.encode_array(tgt)
            if len(s) > max_src or len(t) > max_tgt:
                long.append((r.where, len(s), len(t)))
                continue
            pairs.sources.append(s)
            pairs.targets.append(t)
            pairs.wheres.append(r.where)
        if long:
            where, ns, nt = long[0]
            detail = (f"{where} has a {ns}-token source and a {nt}-token target; the limits are "
                      f"{max_src} and {max_tgt} (data.max_source_length, data.max_target_length)")
            if o.too_long == "error":
                raise DataError(f"{name}: {len(long)} pair(s) are too long, the first: {detail}")
            logger.warning("%s: %d of %d pairs are too long and were dropped; the first: %s",
                           name, len(long), len(records), detail)
        if not len(pairs):
            raise DataError(f"{name}: no pair is left to use")
        return pairs

    def _split(self, records: list[Record]) -> tuple[list[Record], list[Record]]:
        o = self.options
        keys = ([str(field_of(r, o.group_field, "group")) for r in records] if o.group_field
                else list(range(len(records))))
        groups = sorted(set(keys), key=str)
        if len(groups) < 2:
            raise DataError(f"{o.path} holds {len(groups)} {'group' if o.group_field else 'pair'}: "
                            "too few to hold out a validation set (give data.val_path)")
        order = seeded_rng(self.ctx.seed, SPLIT_STREAM).permutation(len(groups))
        n_val = min(max(1, round(len(groups) * o.val_fraction)), len(groups) - 1)
        held = {groups[i] for i in order[:n_val]}
        return ([r for r, k in zip(records, keys) if k not in held],
                [r for r, k in zip(records, keys) if k in held])

    def load(self, tokenizer, fitted=None) -> None:
        self.attach(tokenizer, fitted)
        o = self.options
        records = self._training_records()
        if o.val_path is not None:
            train, val = records, self._records(o.val_path)
        else:
            train, val = self._split(records)
        self.train = self._encode(train, "training data")
        self.val = self._encode(val, "validation data")
        self.extra = {name: self._encode(self._records(spec), f"eval set {name!r}")
                      for name, spec in o.eval_sets.items()}
        self.sampler = ExampleSampler(self.train.lengths, batch_size=self.ctx.batch_size,
                                      seed=self.ctx.seed, grad_accum=self.ctx.grad_accum,
                                      bucket=o.bucket, bucket_span=o.bucket_span)

    def batch(self, pairs: Pairs, indices) -> Batch:
        src, src_mask = pad([pairs.sources[i] for i in indices], value=self.tokenizer.pad_id,
                            dtype=torch.long)
        targets, extras = self.decoder_layout([pairs.targets[i] for i in indices])
        return Batch(src, targets, src_mask, extras, torch.as_tensor(np.asarray(indices)))

    def decoder_layout(self, rows: list[np.ndarray]) -> tuple[torch.Tensor, dict]:
        """Targets (the rows then ``<eos>``, IGNORE at padding) and the extras holding
        the decoder's inputs (``<bos>`` then the rows) and their mask."""
        tok = self.output_tokenizer
        bos, eos = np.array([tok.bos_id]), np.array([tok.eos_id])
        dec, dec_mask = pad([np.concatenate([bos, r]) for r in rows], value=tok.pad_id,
                            dtype=torch.long)
        targets, _ = pad([np.concatenate([r, eos]) for r in rows], value=IGNORE, dtype=torch.long)
        extras = {"decoder_inputs": dec}
        if dec_mask is not None:
            extras["decoder_mask"] = dec_mask
        return targets, extras

    def train_batch(self, step: int, micro: int) -> Batch:
        return self.batch(self.train, self.sampler.indices(step, micro))

    def batches(self, pairs: Pairs, cap: int | None) -> Batches:
        plan = eval_plan(pairs.lengths, batch_size=self.ctx.batch_size, max_batches=cap,
                         seed=self.ctx.seed)
        return lambda: (self.batch(pairs, indices) for indices in plan)

    def eval_sets(self) -> dict[str, Batches]:
        cap = self.ctx.eval_batches
        return {"val": self.batches(self.val, cap),
                **{name: self.batches(p, cap) for name, p in self.extra.items()}}

    def eval_pairs(self) -> dict[str, Pairs]:
        return {"val": self.val, **self.extra}

    def read_pairs(self, path: PathSpec) -> Pairs:
        """Pairs of other files, encoded and filtered as the training data."""
        return self._encode(self._records(path), str(path))

    def read(self, path: PathSpec, *, labelled: bool = True,
             max_batches: int | None = None) -> Batches:
        return self.batches(self.read_pairs(path), max_batches)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)

    def describe(self) -> str:
        src = np.array([len(s) for s in self.train.sources])
        tgt = np.array([len(t) for t in self.train.targets])
        return (f"{len(self.train)} training and {len(self.val)} validation pairs; sources "
                f"{src.min()}-{src.max()} tokens (mean {src.mean():.0f}), targets "
                f"{tgt.min()}-{tgt.max()} (mean {tgt.mean():.0f})")


__all__ = ["Pairs", "ParallelOptions", "ParallelSource", "read_pairs"]
