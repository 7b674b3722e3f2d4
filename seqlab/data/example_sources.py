"""The ``examples`` and ``features`` sources: labelled examples of varying length.

``examples`` reads records from JSON Lines, CSV or TSV files: a text field (or a field of
pre-tokenised ids) and a label field holding a class name, a number (or several), or
per-position tags. ``features`` reads sequences of feature vectors from NumPy files
(``seqlab.data.features``), with labels stored beside them or in a CSV/TSV/JSONL file.

Both split off a seeded ``val_fraction`` of the examples when no ``val_path`` is given,
batch with :class:`~seqlab.data.sampling.ExampleSampler` (optionally bucketed by
length), pad with the collator, and evaluate every held-out example once.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from seqlab.data.example_options import ExamplesOptions, FeaturesOptions
from seqlab.data.examples import (ExampleSet, build_examples, raw_label, record_texts,
                                  record_tokens, report_unknown, tags_per_token)
from seqlab.data.features import SUFFIXES, as_sequence, labels_from_file, read_sequences
from seqlab.data.labels import LabelSpace, parse_number, split_tags
from seqlab.data.records import Record, field_of, read_records
from seqlab.data.sampling import ExampleSampler, eval_plan, seeded_rng
from seqlab.data.sources import Batches, DataSource, PathSpec, register_source
from seqlab.data.text import resolve_paths
from seqlab.errors import ConfigError, DataError

logger = logging.getLogger("seqlab")

SPLIT_STREAM = 21
RC_STREAM = 22  # which training examples read reverse-complemented


class ExampleSource(DataSource):
    """What ``examples`` and ``features`` share: split, labels, sampler, evaluation."""

    def _examples(self, spec: PathSpec, labelled: bool, train: bool = False
                  ) -> tuple[list[np.ndarray], list | None, list[str]]:
        """(rows, raw labels or None, where each came from) of the examples in ``spec``."""
        raise NotImplementedError

    @property
    def max_length(self) -> int:
        return self.options.max_length or self.ctx.max_length

    def _bos(self) -> int | None:
        return self.tokenizer.bos_id if self.ctx.add_bos and self.tokenizer is not None else None

    def _target_names(self) -> list[str] | None:
        field = self.options.label_field
        return list(field) if isinstance(field, list) else None

    def _build(self, rows, raw, wheres, name: str) -> ExampleSet:
        kind = self.ctx.label_kind if raw is not None else None
        if raw is not None and self.labels is not None:
            unseen = self.labels.unseen(raw)
            if unseen:
                shown = ", ".join(map(repr, unseen[:10])) + (" ..." if len(unseen) > 10 else "")
                logger.warning("%s: labels never seen in training (%d): %s; they count as errors "
                               "in every metric", name, len(unseen), shown)
        examples, self.labels, cut = build_examples(
            rows, raw, wheres, kind=kind, labels=self.labels, max_length=self.max_length,
            bos_id=self._bos(), target_names=self._target_names())
        if cut:
            logger.warning("%s: %d of %d examples are longer than %d and were cut", name, cut,
                           len(rows), self.max_length)
        return examples

    def attach(self, tokenizer, fitted=None) -> None:
        super().attach(tokenizer, fitted)
        if fitted and fitted.get("labels") is not None:
            self.labels = LabelSpace.from_dict(fitted["labels"], "data.json")

    def load(self, tokenizer, fitted=None) -> None:
        self.attach(tokenizer, fitted)
        o, labelled = self.options, self.ctx.label_kind is not None
        if o.path is None:
            raise ConfigError("data.path is not set: give the training examples")
        rows, raw, wheres = self._examples(o.path, labelled, train=True)
        if o.val_path is not None:
            train = list(range(len(rows)))
            val_parts = self._examples(o.val_path, labelled)
        else:
            order = seeded_rng(self.ctx.seed, SPLIT_STREAM).permutation(len(rows))
            n_val = min(max(1, round(len(rows) * o.val_fraction)), len(rows) - 1)
            if n_val < 1:
                raise DataError(f"{o.path} holds {len(rows)} example(s): too few to hold out a "
                                "validation set (give data.val_path)")
            train, held = sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
            val_parts = ([rows[i] for i in held], None if raw is None else [raw[i] for i in held],
                         [wheres[i] for i in held])
        self.train = self._build([rows[i] for i in train],
                                 None if raw is None else [raw[i] for i in train],
                                 [wheres[i] for i in train], "training data")
        self._fit_features()
        self.val = self._build(*val_parts, "validation data")
        self.extra = {name: self._build(*self._examples(spec, labelled), f"eval set {name!r}")
                      for name, spec in o.eval_sets.items()}
        self.sampler = ExampleSampler(self.train.lengths, batch_size=self.ctx.batch_size,
                                      seed=self.ctx.seed, grad_accum=self.ctx.grad_accum,
                                      bucket=o.bucket, bucket_span=o.bucket_span)

    def _fit_features(self) -> None:
        """Fit what the inputs need from the training split (feature statistics)."""

    def _batch(self, examples: ExampleSet, indices: np.ndarray):
        pad_id = self.tokenizer.pad_id if self.tokenizer is not None else 0
        return examples.batch(indices, pad_id=pad_id)

    def train_batch(self, step: int, micro: int):
        return self._batch(self.train, self.sampler.indices(step, micro))

    def _batches(self, examples: ExampleSet, cap: int | None) -> Batches:
        plan = eval_plan(examples.lengths, batch_size=self.ctx.batch_size, max_batches=cap,
                         seed=self.ctx.seed)

        def batches():
            for indices in plan:
                yield self._batch(examples, indices)

        return batches

    def eval_sets(self) -> dict[str, Batches]:
        cap = self.ctx.eval_batches
        sets = {"val": self._batches(self.val, cap)}
        sets.update({name: self._batches(ex, cap) for name, ex in self.extra.items()})
        return sets

    def read(self, path: PathSpec, *, labelled: bool = True,
             max_batches: int | None = None) -> Batches:
        rows, raw, wheres = self._examples(path, labelled)
        self._read_names = wheres
        return self._batches(self._build(rows, raw, wheres, str(path)), max_batches)

    def names(self, path: PathSpec) -> list[str]:
        return list(getattr(self, "_read_names", []))

    def _input_row(self, item) -> np.ndarray:
        raise NotImplementedError

    def from_inputs(self, items: list) -> Batches:
        """Unlabelled examples given in memory (texts, id lists, or arrays)."""
        rows = [self._input_row(item) for item in items]
        wheres = [f"input {i}" for i in range(len(rows))]
        return self._batches(self._build(rows, None, wheres, "inputs"), None)

    def fitted(self) -> dict:
        return {"labels": self.labels.to_dict() if self.labels is not None else None}

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)

    def describe(self) -> str:
        lengths = self.train.lengths
        return (f"{len(self.train)} training and {len(self.val)} validation examples of "
                f"{lengths.min()}-{lengths.max()} positions (mean {lengths.mean():.0f})"
                f"{', bucketed by length' if self.options.bucket else ''}")


def _labelled(records: list[Record], labelled: bool, kind: str | None, field) -> list | None:
    if not labelled or kind is None:
        return None
    return [raw_label(r, kind, field) for r in records]


def attach_labels(records: list[Record], o: ExamplesOptions) -> None:
    """Fill each record's ``label_field`` from the label sources the options name
    (``header_label``, ``labels``, ``tags_path``), naming any record left without one."""
    field = o.label_field if isinstance(o.label_field, str) else None
    sources = [name for name in ("header_label", "labels", "tags_path") if getattr(o, name)]
    if not sources:
        return
    if len(sources) > 1 or field is None:
        raise ConfigError(f"data.{' and data.'.join(sources)}: give one label source, for one "
                          "data.label_field")
    if o.header_label:
        try:
            pattern = re.compile(o.header_label)
        except re.error as e:
            raise ConfigError(f"data.header_label {o.header_label!r} is not a regular expression: "
                              f"{e}") from None
        if pattern.groups < 1:
            raise ConfigError("data.header_label needs one (group) around the label")
        for r in records:
            match = pattern.search(str(field_of(r, "description", "header")))
            if match is None:
                raise DataError(f"{r.where}: data.header_label {o.header_label!r} finds no label "
                                f"in {r.fields['description']!r}")
            r.fields[field] = match.group(1)
        return
    source = o.labels or o.tags_path
    entries = (read_records(Path(o.labels), o.labels_format) if o.labels else
               read_records(Path(o.tags_path), "auto"))
    by_id, first_at = {}, {}
    for x in entries:
        key = str(field_of(x, "id" if o.tags_path else o.id_field, "id"))
        if key in by_id:
            raise DataError(f"{x.where}: id {key!r} appears twice in {source} (first at "
                            f"{first_at[key]}); give each record one entry")
        by_id[key] = x.fields["text"] if o.tags_path else field_of(x, field, "label")
        first_at[key] = x.where
    keys = [str(field_of(r, o.id_field, "id")) for r in records]
    missing = [(r, key) for r, key in zip(records, keys) if key not in by_id]
    if missing:
        r, key = missing[0]
        named = set(keys)
        unused = [k for k in by_id if k not in named]
        raise DataError(f"{r.where}: {source} has no entry for {key!r}; {len(missing)} of "
                        f"{len(records)} records have none ({_few(k for _, k in missing)}), and "
                        f"its ids that name no record here are: {_few(unused) or 'none'}")
    for r, key in zip(records, keys):
        value = by_id[key]
        if o.tags_path and len(value) != len(str(r.fields.get(o.text_field, ""))):
            raise DataError(f"{r.where}: its tags in {o.tags_path} are {len(value)} long, the "
                            f"sequence {len(str(r.fields.get(o.text_field, '')))}")
        r.fields[field] = value


def _few(names, show: int = 3) -> str:
    names = list(names)
    return ", ".join(map(repr, names[:show])) + (f" ... ({len(names)})" if len(names) > show else "")


@register_source("examples", ExamplesOptions, labels=(None, "class", "tags", "number"),
                 inputs="tokens")
class ExamplesSource(ExampleSource):
    """Labelled (or unlabelled) text examples from JSONL, CSV or TSV files."""

    _train_records: list[Record] | None = None

    def train_batch(self, step: int, micro: int):
        indices = self.sampler.indices(step, micro)
        if not self.options.reverse_complement:
            return self._batch(self.train, indices)
        complement = getattr(self.tokenizer, "complement_ids", None)
        if complement is None:
            raise ConfigError(f"data.reverse_complement needs a dna or rna tokenizer, not "
                              f"{getattr(self.tokenizer, 'kind', None)!r}")
        flip = seeded_rng(self.ctx.seed, RC_STREAM, step, micro).random(len(indices)) < 0.5
        return self.train.batch(indices, pad_id=self.tokenizer.pad_id, flip=flip,
                                complement=complement(), keep_first=int(self._bos() is not None))

    def _records(self, spec: PathSpec) -> list[Record]:
        return [r for path in resolve_paths(spec) for r in read_records(path, self.options.format)]

    def _training_records(self) -> list[Record]:
        if self._train_records is None:
            self._train_records = self._records(self.options.path)
        return self._train_records

    def texts(self):
        o = self.options
        return record_texts(self._training_records(), text_field=o.text_field,
                            tokens_field=o.tokens_field)

    def _input_row(self, item) -> np.ndarray:
        if isinstance(item, str):
            return self.tokenizer.encode_array(item)
        ids = np.asarray(item)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise DataError(f"an input must be a text or a list of token ids, got {type(item).__name__}")
        return ids.astype(np.int32)

    def _examples(self, spec, labelled, train=False):
        o = self.options
        records = self._training_records() if train else self._records(spec)
        if labelled and self.ctx.label_kind is not None:
            attach_labels(records, o)
        rows = [record_tokens(r, self.tokenizer, text_field=o.text_field,
                              tokens_field=o.tokens_field) for r in records]
        if o.tokens_field is None:
            report_unknown(records, rows, self.tokenizer, text_field=o.text_field, policy=o.unknown)
        raw = _labelled(records, labelled, self.ctx.label_kind, o.label_field)
        if raw is not None and self.ctx.label_kind == "tags":
            raw = tags_per_token(records, rows, raw, self.tokenizer, text_field=o.text_field,
                                 tokens_field=o.tokens_field)
        return rows, raw, [r.where for r in records]


@register_source("features", FeaturesOptions, labels=(None, "class", "tags", "number"),
                 inputs="features")
class FeaturesSource(ExampleSource):
    """Sequences of feature vectors from ``.npy``/``.npz`` files or folders of them."""

    input_kind = "features"
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    width: int | None = None

    @property
    def input_dim(self) -> int | None:
        return self.width

    def _examples(self, spec, labelled, train=False):
        o = self.options
        files = resolve_paths(spec, extensions=list(SUFFIXES))
        keys = (o.features_key, o.lengths_key, o.labels_key)
        rows, names, wheres, stored = read_sequences(files, keys)
        if self.width is not None and rows[0].shape[1] != self.width:
            raise DataError(f"{spec}: sequences have {rows[0].shape[1]} features, but the "
                            f"training data has {self.width}")
        self.width = rows[0].shape[1]
        kind = self.ctx.label_kind
        if not labelled or kind is None:
            return rows, None, wheres
        if o.labels is not None:
            if spec != o.path and all(n.isdigit() for n in names):
                raise DataError(f"{spec}: its sequences are named by row index, which the labels "
                                f"file {o.labels} gives for the training array {o.path}; store "
                                f"labels inside .npz files, or use folders of one file per sequence")
            stored = labels_from_file(Path(o.labels), names, id_field=o.id_field,
                                      label_field=o.label_field, fmt=o.labels_format)
        elif stored is None:
            raise DataError(f"{spec}: no labels (the files hold no {o.labels_key!r} array and "
                            "data.labels names no labels file)")
        if kind == "number":
            raw = [parse_number(v, w) for v, w in zip(stored, wheres)]
        elif kind == "tags":
            raw = [split_tags(v, w) for v, w in zip(stored, wheres)]
        else:
            raw = stored
        return rows, raw, wheres

    def _input_row(self, item) -> np.ndarray:
        row = as_sequence(np.asarray(item), "input")
        if self.width is not None and row.shape[1] != self.width:
            raise DataError(f"an input has {row.shape[1]} features; the model reads {self.width}")
        return row

    def _fit_features(self) -> None:
        if self.options.normalize == "dataset" and self.mean is None:
            values = self.train.values
            self.mean = values.mean(0).astype(np.float32)
            self.std = np.maximum(values.std(0), 1e-6).astype(np.float32)

    def attach(self, tokenizer, fitted=None) -> None:
        super().attach(tokenizer, fitted)
        stats = (fitted or {}).get("features")
        if stats:
            self.mean = np.asarray(stats["mean"], dtype=np.float32)
            self.std = np.asarray(stats["std"], dtype=np.float32)
            self.width = len(self.mean)
        elif fitted and fitted.get("width"):
            self.width = int(fitted["width"])

    def fitted(self) -> dict:
        stats = None if self.mean is None else {"mean": self.mean.tolist(), "std": self.std.tolist()}
        return {**super().fitted(), "features": stats, "width": self.width}

    def _standardise(self, row: np.ndarray) -> np.ndarray:
        if self.options.normalize == "sequence":
            return (row - row.mean(0)) / np.maximum(row.std(0), 1e-6)
        if self.mean is not None:
            return (row - self.mean) / self.std
        return row

    def _batch(self, examples: ExampleSet, indices: np.ndarray):
        return examples.batch(indices, transform=self._standardise)
