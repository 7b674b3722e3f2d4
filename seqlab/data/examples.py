"""Labelled examples of varying length, held as two flat arrays (values + offsets).

Token ids or feature vectors of every example are concatenated along time, so a data
set of a million short examples is a few arrays rather than a million tensors; a batch
gathers its rows and pads them (``seqlab.data.batch.pad``).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from seqlab.data.batch import IGNORE, Batch, pad
from seqlab.data.labels import NO_TAG, LabelSpace, parse_number, split_tags
from seqlab.data.records import Record, field_of
from seqlab.data.tokenizers import IdsTokenizer, Tokenizer
from seqlab.errors import DataError

logger = logging.getLogger("seqlab")
UNKNOWN_POLICIES = ("warn", "error")


@dataclass
class ExampleSet:
    """Examples as flat arrays.

    Shapes:
        values: (sum T, ) int32 token ids or (sum T, F) float32 features.
        offsets: (N + 1,) int64; example i is ``values[offsets[i]:offsets[i + 1]]``.
        labels: (N,) int64 class ids, (N, K) float32 numbers, (sum T,) int64 tag ids
            aligned with ``values``, or None.
    """

    values: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray | None
    label_kind: str | None
    names: list[str]  # where each example came from, for errors and predictions

    @classmethod
    def from_rows(cls, rows: list[np.ndarray], labels: list | None, label_kind: str | None,
                  names: list[str]) -> "ExampleSet":
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(r) for r in rows])
        values = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int32)
        if labels is None:
            packed = None
        elif label_kind == "tags":
            packed = np.concatenate(labels).astype(np.int64)
        elif label_kind == "number":
            packed = np.stack(labels).astype(np.float32)
        else:
            packed = np.asarray(labels, dtype=np.int64)
        return cls(values, offsets, packed, label_kind, names)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    def batch(self, indices: np.ndarray, *, pad_id: int = 0,
              transform: Callable[[np.ndarray], np.ndarray] | None = None,
              flip: np.ndarray | None = None, complement: np.ndarray | None = None,
              keep_first: int = 0) -> Batch:
        """Gather and pad the examples at ``indices``; ``transform`` maps each feature
        row (e.g. standardises it) before padding. ``flip`` (one bool per example) with
        ``complement`` (id -> id): those examples read reversed and complemented, their
        first ``keep_first`` ids (a ``<bos>``) left in front, their tags reversed too."""
        rows = [self.row(i) for i in indices]
        flips = np.zeros(len(rows), bool) if flip is None else np.asarray(flip, bool)
        k = keep_first
        rows = [np.concatenate([r[:k], complement[r[k:][::-1]]]).astype(r.dtype) if f else r
                for r, f in zip(rows, flips)]
        if self.values.dtype.kind == "f":
            if transform is not None:
                rows = [transform(r) for r in rows]
            inputs, mask = pad(rows, value=0.0, dtype=torch.float32)
        else:
            inputs, mask = pad(rows, value=pad_id, dtype=torch.int64)
        targets = None
        if self.labels is not None:
            if self.label_kind == "tags":
                tags = [self.labels[self.offsets[i]:self.offsets[i + 1]] for i in indices]
                tags = [np.concatenate([t[:k], t[k:][::-1]]) if f else t for t, f in zip(tags, flips)]
                targets, _ = pad(tags, value=IGNORE)
            else:
                targets = torch.from_numpy(self.labels[indices])
        return Batch(inputs, targets, mask, index=torch.as_tensor(np.asarray(indices)))


def record_tokens(record: Record, tokenizer: Tokenizer, *, text_field: str,
                  tokens_field: str | None) -> np.ndarray:
    """The token ids of one record: its text field encoded, or its pre-tokenised ids
    (a JSON list of integers, or integers separated by spaces)."""
    if tokens_field is None:
        text = field_of(record, text_field, "text")
        if not isinstance(text, str):
            raise DataError(f"{record.where}: field {text_field!r} must be text, got "
                            f"{type(text).__name__}")
        return tokenizer.encode_array(text)
    value = field_of(record, tokens_field, "tokens")
    if isinstance(value, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            raise DataError(f"{record.where}: field {tokens_field!r} must list token ids "
                            "(integers >= 0)")
        ids = np.asarray(value, dtype=np.int64)
        if isinstance(tokenizer, IdsTokenizer) and ids.size and int(ids.max()) >= tokenizer.size:
            raise DataError(f"{record.where}: token id {int(ids.max())} is beyond the "
                            f"vocabulary of the training data (ids 0..{tokenizer.size - 1})")
        return ids.astype(np.int32)
    if isinstance(value, str):
        try:
            return tokenizer.encode_array(value)
        except Exception as e:  # the tokenizer names what is wrong
            raise DataError(f"{record.where}: {e}") from None
    raise DataError(f"{record.where}: field {tokens_field!r} must be a list of ids or ids "
                    f"separated by spaces, got {type(value).__name__}")


def report_unknown(records: list[Record], rows: list[np.ndarray], tokenizer: Tokenizer, *,
                   text_field: str, policy: str = "warn") -> None:
    """Letters outside a residue tokenizer's alphabet, read as ``<unk>``: one warning per
    file (how many, in how many records, which letters), or with ``policy`` ``error`` a
    DataError naming the first record that has one. Tokenizers without a fixed alphabet
    (no ``unknown_letters``) are not checked; nor are pre-tokenised records."""
    unknown_letters = getattr(tokenizer, "unknown_letters", None)
    if unknown_letters is None or tokenizer.unk_id is None:
        return
    per_file: dict[str, tuple[Counter, list[str]]] = {}
    for record, row in zip(records, rows):
        text = record.fields.get(text_field)
        if not isinstance(text, str) or not (row == tokenizer.unk_id).any():
            continue
        letters = unknown_letters(text)
        if not letters:
            continue
        if policy == "error":
            raise DataError(f"{record.where}: {_letters_seen(letters)} outside the "
                            f"{tokenizer.kind} alphabet ({tokenizer.valid_letters}); "
                            "data.unknown: warn reads them as <unk>")
        counts, wheres = per_file.setdefault(record.file or record.where, (Counter(), []))
        counts.update(letters)
        wheres.append(record.where)
    totals = Counter(record.file or record.where for record in records) if per_file else {}
    for file, (counts, wheres) in per_file.items():
        logger.warning("%s: %d letters outside the %s alphabet, read as <unk>, in %d of its %d "
                       "records (first %s): %s", file, sum(counts.values()), tokenizer.kind,
                       len(wheres), totals[file], wheres[0], _letters_seen(counts))


def _letters_seen(counts: Counter, show: int = 6) -> str:
    most = counts.most_common()
    text = ", ".join(f"{letter!r} x{n}" for letter, n in most[:show])
    return text + (f" and {len(most) - show} more" if len(most) > show else "")


def record_texts(records: list[Record], *, text_field: str, tokens_field: str | None):
    """The texts a tokenizer with a learned vocabulary (char, ids) is built from."""
    for r in records:
        value = field_of(r, tokens_field or text_field, "tokens" if tokens_field else "text")
        yield " ".join(map(str, value)) if isinstance(value, list) else str(value)


def raw_label(record: Record, kind: str, label_field: str | list[str]) -> object:
    """The label of a record as written: a name, a list of numbers, or a list of tags."""
    if kind == "number":
        if isinstance(label_field, list):
            return [parse_number(field_of(record, f, "label"), f"{record.where} field {f!r}")[0]
                    for f in label_field]
        return parse_number(field_of(record, label_field, "label"), record.where)
    value = field_of(record, label_field, "label")
    if kind == "tags":
        return split_tags(value, record.where)
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{record.where}: the label field {label_field!r} is empty")
    return value


def align_tags(tags: Sequence, offsets: Sequence[tuple[int, int]], text: str) -> list:
    """One tag per token from one tag per character of ``text``, the characters of each
    token given by ``offsets`` (``Tokenizer.offsets``).

    The rule: a token takes the tag of its first character that is not whitespace, or of
    its first character when all of them are whitespace. Byte-level BPE folds the space
    before a word into the word (``" return"``), which so takes the word's tag, not the
    space's. The pieces of one character split over several tokens (the UTF-8 bytes of
    ``"→"``) each take its tag. A token that stands for no character (``start == end``)
    gets ``NO_TAG``, the ignore index.
    """
    out = []
    for start, end in offsets:
        if start >= end:
            out.append(NO_TAG)
            continue
        first = next((i for i in range(start, end) if not text[i].isspace()), start)
        out.append(tags[first])
    return out


def tags_per_token(records: list[Record], rows: list[np.ndarray], raw: list[list],
                   tokenizer: Tokenizer, *, text_field: str, tokens_field: str | None) -> list:
    """The tags of each record, one per token of ``rows``.

    A record's tags are one per token when their count is the token count (as given),
    or one per character of its text when their count is the text's length and the
    tokenizer gives character offsets: they are then aligned with :func:`align_tags`.
    A record that fits both (as many tokens as characters) is read as the others of its
    file: per character when some record of the file fits only per character and none
    only per token; per token otherwise. One INFO line per file says how many records
    were aligned.

    Raises:
        DataError: tags that fit neither count, naming the record, the number of tags,
            the text's characters and its tokens.
    """
    texts = [None if tokens_field is not None else record.fields.get(text_field)
             for record in records]
    aligns = tokens_field is None and tokenizer.offsets("") is not None
    fits = []  # per record: (fits per token, fits per character)
    for record, row, tags, text in zip(records, rows, raw, texts):
        per_token, per_char = len(tags) == len(row), text is not None and len(tags) == len(text)
        if not (per_token or (per_char and aligns)):
            raise DataError(_tags_mismatch(record.where, len(tags), row, text, tokenizer, aligns))
        fits.append((per_token, per_char and aligns))
    by_file: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        by_file.setdefault(record.file or record.where, []).append(i)
    out = list(raw)
    for file, indices in by_file.items():
        only_chars = any(fits[i] == (False, True) for i in indices)
        only_tokens = any(fits[i] == (True, False) for i in indices)
        aligned = 0
        for i in indices:
            per_token, per_char = fits[i]
            if per_char and (not per_token or (only_chars and not only_tokens)):
                offsets = tokenizer.offsets(texts[i])
                if len(offsets) != len(rows[i]):
                    raise DataError(f"{records[i].where}: the {tokenizer.kind} tokenizer gives "
                                    f"{len(offsets)} character offsets for {len(rows[i])} tokens")
                if len(offsets) != len(texts[i]) or any(
                        span != (c, c + 1) for c, span in enumerate(offsets)):
                    out[i] = align_tags(raw[i], offsets, texts[i])
                    aligned += 1
        if aligned:
            logger.info("%s: %d of %d records give one tag per character; each of their "
                        "tokens (%s tokenizer) takes the tag of its first character that is "
                        "not whitespace", file, aligned, len(indices), tokenizer.kind)
    return out


def _tags_mismatch(where: str, n_tags: int, row: np.ndarray, text: str | None,
                   tokenizer: Tokenizer, aligns: bool) -> str:
    message = f"{where}: {n_tags} per-position labels for a sequence of {len(row)} positions"
    if text is None:
        return message + "; they must be equal"
    message += (f" (its text has {len(text)} characters, read by the {tokenizer.kind} "
                f"tokenizer as {len(row)} tokens)")
    if n_tags == len(text):
        return message + (f"; the {tokenizer.kind} tokenizer gives no character offsets to "
                          "align one label per character with: give one label per token")
    return message + "; give one label per token or one per character of the text"


def build_examples(rows: list[np.ndarray], raw: list | None, wheres: list[str], *,
                   kind: str | None, labels: LabelSpace | None, max_length: int,
                   bos_id: int | None = None, target_names: list[str] | None = None
                   ) -> tuple[ExampleSet, LabelSpace | None, int]:
    """Check, truncate and label the examples; fit ``labels`` on them when None.

    Args:
        rows: per example, (T,) ids or (T, F) features.
        raw: per example, its raw label (see :func:`raw_label`), or None for unlabelled data.
        max_length: longest example kept; longer ones are cut (their tags too).
        bos_id: prepended to every token example (the slot ``first`` pooling reads).

    Returns:
        The examples, the label space, and how many examples were cut.

    Raises:
        DataError: an empty example, or per-position labels whose count differs from the
            example's length (naming the record and both lengths).
    """
    cut = 0
    keep = max_length - (1 if bos_id is not None else 0)
    for i, (row, where) in enumerate(zip(rows, wheres)):
        if len(row) == 0:
            raise DataError(f"{where}: the example is empty (no tokens or frames)")
        if kind == "tags" and raw is not None and len(raw[i]) != len(row):
            raise DataError(f"{where}: {len(raw[i])} per-position labels for a sequence of "
                            f"{len(row)} positions; they must be equal")
        if len(row) > keep:
            cut += 1
            rows[i] = row[:keep]
            if kind == "tags" and raw is not None:
                raw[i] = raw[i][:keep]
        if bos_id is not None:
            rows[i] = np.concatenate([np.array([bos_id], dtype=rows[i].dtype), rows[i]])
    encoded = None
    if raw is not None and kind is not None:
        if labels is None:
            labels = LabelSpace.fit(kind, raw, wheres, target_names)
        elif kind == "number" and raw and len(raw[0]) != labels.size:
            raise DataError(f"{wheres[0]}: {len(raw[0])} regression targets, the run predicts "
                            f"{labels.size}")
        encoded = [labels.encode(value) for value in raw]
        if kind == "tags" and bos_id is not None:  # <bos> carries no tag
            encoded = [np.concatenate([[IGNORE], tags]).astype(np.int64) for tags in encoded]
    return ExampleSet.from_rows(rows, encoded, kind, list(wheres)), labels, cut
