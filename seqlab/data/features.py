"""Sequences of feature vectors from NumPy files (sensor traces, audio features, frames).

Accepted layouts, all read with ``allow_pickle=False`` (a file can never run code):

* a ``.npz`` file with ``features`` of shape (sum T, F) — every sequence concatenated
  along time — and ``lengths`` (N,); or ``features`` of shape (N, T, F), equal lengths.
  Labels may sit beside them under ``labels``: (N,) names or numbers, (N, K) numbers,
  or (sum T,) per-position tags aligned with ``features``;
* a ``.npy`` file of shape (N, T, F) (N sequences) or (T, F) (one sequence);
* a folder of such files (searched recursively, sorted): a ``.npy`` of shape (T, F) is
  one sequence named by its file stem.

Labels can also come from a CSV, TSV or JSONL file (``data.labels``) whose ``id`` column
names the sequence: a one-sequence file's stem, or the row index of a single array
file (which then serves the training data only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqlab.data.records import field_of, read_records
from seqlab.errors import DataError

SUFFIXES = (".npy", ".npz")
_SIGNATURES = (b"\x93NUMPY", b"PK\x03\x04", b"PK\x05\x06")  # .npy, .npz (a zip), empty zip


def _load(path: Path):
    try:
        with path.open("rb") as f:
            head = f.read(len(_SIGNATURES[0]))
    except OSError as e:
        raise DataError(f"{path}: not a readable NumPy file ({e})") from None
    if not head.startswith(_SIGNATURES):  # np.load would take it for a pickle
        raise DataError(f"{path}: not a NumPy .npy or .npz file (only plain NumPy arrays "
                        "are read, never pickles)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(f"{path}: cannot be read without pickle ({e}); save plain numeric "
                        "or string arrays") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable NumPy file ({e})") from None


def _array(data, key: str, path: Path) -> np.ndarray:
    """One array of an open ``.npz``; an object array is refused, never unpickled."""
    try:
        return data[key]
    except ValueError as e:
        raise DataError(f"{path}: array {key!r} cannot be read without pickle ({e}); save "
                        "plain numeric or string arrays") from None


def as_sequence(array: np.ndarray, where: str) -> np.ndarray:
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataError(f"{where}: a sequence must have shape (time, features), got "
                        f"{tuple(array.shape)}")
    if array.dtype.kind not in "fiub":
        raise DataError(f"{where}: features must be numbers, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise DataError(f"{where}: features hold NaN or infinite values")
    return array


def _split(features: np.ndarray, lengths: np.ndarray | None, where: str) -> list[np.ndarray]:
    if features.ndim == 3:
        rows = [features[i] for i in range(len(features))]
        if lengths is not None:
            if len(lengths) != len(rows) or (np.asarray(lengths) > features.shape[1]).any():
                raise DataError(f"{where}: 'lengths' does not fit 'features' of shape "
                                f"{tuple(features.shape)}")
            rows = [r[:n] for r, n in zip(rows, lengths)]
        return [as_sequence(r, f"{where}[{i}]") for i, r in enumerate(rows)]
    if lengths is None:
        return [as_sequence(features, where)]
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu" or (lengths < 0).any():
        raise DataError(f"{where}: 'lengths' must be a 1-D array of counts")
    if int(lengths.sum()) != len(features):
        raise DataError(f"{where}: 'lengths' sums to {int(lengths.sum())} but 'features' has "
                        f"{len(features)} rows")
    ends = np.cumsum(lengths)
    return [as_sequence(features[e - n:e], f"{where}[{i}]")
            for i, (e, n) in enumerate(zip(ends, lengths))]


def read_file(path: Path, keys: tuple[str, str, str]) -> tuple[list[np.ndarray], list[str], list | None]:
    """Sequences, their names (row indices) and the labels stored beside them (or None)."""
    features_key, lengths_key, labels_key = keys
    data = _load(path)
    if isinstance(data, np.ndarray):
        rows = _split(data, None, str(path))
        return rows, [str(i) for i in range(len(rows))], None
    with data:
        if features_key not in data.files:
            raise DataError(f"{path}: no array {features_key!r}; it holds: {', '.join(data.files)}")
        lengths = _array(data, lengths_key, path) if lengths_key in data.files else None
        rows = _split(_array(data, features_key, path), lengths, str(path))
        labels = None
        if labels_key in data.files:
            stored = _array(data, labels_key, path)
            total = sum(len(r) for r in rows)
            if len(stored) == total and len(stored) != len(rows):
                ends = np.cumsum([len(r) for r in rows])
                labels = [stored[e - len(r):e].tolist() for e, r in zip(ends, rows)]
            elif len(stored) == len(rows):
                labels = [v.tolist() if isinstance(v, np.ndarray) else v.item() for v in stored]
            else:
                raise DataError(f"{path}: {labels_key!r} has {len(stored)} entries for "
                                f"{len(rows)} sequences of {total} positions in all")
    return rows, [str(i) for i in range(len(rows))], labels


def read_sequences(paths: list[Path], keys: tuple[str, str, str]
                   ) -> tuple[list[np.ndarray], list[str], list[str], list | None]:
    """All sequences of the given files, checked to share one feature width.

    Returns:
        Sequences (T, F) float32; their ids, which a labels file names (``stem`` for
        one-sequence files, ``index`` for a single array file, ``stem:index`` otherwise);
        where each came from (``file`` or ``file[index]``); and the labels stored in the
        files (None unless every file has them).

    Raises:
        DataError: a file whose feature width differs from the first file's (naming both).
    """
    rows, names, wheres, labels, width, first = [], [], [], [], None, None
    for path in paths:
        seqs, ids, stored = read_file(path, keys)
        single = path.suffix == ".npy" and len(seqs) == 1
        wheres += [str(path)] if single else [f"{path}[{i}]" for i in ids]
        for s in seqs:
            if width is None:
                width, first = s.shape[1], path
            elif s.shape[1] != width:
                raise DataError(f"{path}: sequences have {s.shape[1]} features, but {first} has "
                                f"{width}; every sequence needs the same width")
        if single:
            ids = [path.stem]
        elif len(paths) > 1:
            ids = [f"{path.stem}:{i}" for i in ids]
        rows += seqs
        names += ids
        labels = None if labels is None or stored is None else labels + stored
    if not rows:
        raise DataError("no feature sequences found")
    return rows, names, wheres, labels


def labels_from_file(path: Path, names: list[str], *, id_field: str, label_field: str | list[str],
                     fmt: str = "auto") -> list:
    """Labels for named sequences from a CSV/TSV/JSONL file (``id_field`` -> label)."""
    by_id = {}
    fields = label_field if isinstance(label_field, list) else [label_field]
    for record in read_records(path, fmt):
        key = str(field_of(record, id_field, "id"))
        values = [field_of(record, f, "label") for f in fields]
        by_id[key] = values if isinstance(label_field, list) else values[0]
    missing = [n for n in names if n not in by_id]
    if missing:
        raise DataError(f"{path} has no label for {len(missing)} sequence(s), e.g. "
                        f"{', '.join(missing[:3])} (its {id_field!r} column must name every "
                        "sequence: a file's stem, or a row index)")
    return [by_id[n] for n in names]
