"""Labels of labelled examples: class names, tag names, or numbers.

A :class:`LabelSpace` is fitted on the training labels (the sorted set of names seen, or
the names of the numeric targets), saved with the run, and used to encode labels of any
split: a class or tag seen in evaluation but never in training becomes ``UNSEEN`` (the
ignore index), which no loss counts and every metric reports as a miss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seqlab.errors import DataError

KINDS = ("class", "tags", "number")
UNSEEN = -100  # = IGNORE: no loss counts it; metrics count it as a miss


class _NoTag:
    """The raw tag of a position that has none (a token standing for no character of
    its text, see ``seqlab.data.examples.align_tags``): never a tag name, encoded as the
    ignore index, which no loss or metric counts."""

    def __repr__(self) -> str:
        return "NO_TAG"


NO_TAG = _NoTag()


def _name_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, str):
        return "str"
    return type(value).__name__


def split_tags(value: Any, where: str) -> list:
    """Per-position labels from a list, or a string: split on whitespace when it has any
    (``"B-PER I-PER O"``), else one tag per character (``"HHHCCEE"``, as in
    secondary-structure files)."""
    if isinstance(value, str):
        return value.split() if any(c.isspace() for c in value) else list(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value.tolist() if isinstance(value, np.ndarray) else value)
    raise DataError(f"{where}: per-position labels must be a list or a string of tag "
                    f"letters, got {_name_type(value)}")


def parse_number(value: Any, where: str) -> list[float]:
    """One or several numeric targets: a number, a numeric string, or a list of them."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if isinstance(item, bool) or item is None:
            raise DataError(f"{where}: a regression target must be a number, got {item!r}")
        try:
            out.append(float(item))
        except (TypeError, ValueError):
            raise DataError(f"{where}: a regression target must be a number, got {item!r}") from None
    if not out:
        raise DataError(f"{where}: the regression target is an empty list")
    return out


@dataclass
class LabelSpace:
    """What a labelled objective predicts.

    Attributes:
        kind: ``class`` (one name per example), ``tags`` (one name per position) or
            ``number`` (``len(names)`` numbers per example).
        names: class or tag names in id order (str or int, as in the data), or the
            names of the numeric targets.
    """

    kind: str
    names: list = field(default_factory=list)

    @classmethod
    def fit(cls, kind: str, raw: list, wheres: list[str], target_names: list[str] | None = None
            ) -> "LabelSpace":
        """Fit on the training labels (``raw[i]`` found at ``wheres[i]``).

        Raises:
            DataError: labels of mixed types, naming a record of each type.
        """
        if kind == "number":
            width = len(raw[0]) if raw else 1
            for value, where in zip(raw, wheres):
                if len(value) != width:
                    raise DataError(f"{where}: {len(value)} regression targets, but the first "
                                    f"record has {width}")
            return cls(kind, list(target_names or [f"target_{i}" for i in range(width)])
                       if width > 1 or target_names else ["target"])
        seen: dict[str, tuple[Any, str]] = {}
        names = set()
        for value, where in zip(raw, wheres):
            for item in (value if kind == "tags" else [value]):
                if item is NO_TAG:
                    continue
                t = _name_type(item)
                if t not in ("int", "str"):
                    raise DataError(f"{where}: a label must be a string or an integer, got {item!r}")
                seen.setdefault(t, (item, where))
                names.add(item.item() if isinstance(item, np.generic) else item)
        if len(seen) > 1:
            (a, (va, wa)), (b, (vb, wb)) = list(seen.items())[:2]
            raise DataError(f"labels of mixed types: {wa} has {a} label {va!r} but {wb} has {b} "
                            f"label {vb!r}; use one type for every label")
        if not names:
            raise DataError("the training data has no labels")
        return cls(kind, sorted(names))

    @property
    def size(self) -> int:
        """Classes, tags, or numeric targets."""
        return len(self.names)

    def encode(self, value: Any) -> Any:
        """Class id (UNSEEN if new), array of tag ids (UNSEEN for a new tag or
        ``NO_TAG``), or array of floats."""
        if self.kind == "number":
            return np.asarray(value, dtype=np.float32)
        index = self._index()
        if self.kind == "tags":
            return np.array([index.get(_plain(v), UNSEEN) for v in value], dtype=np.int64)
        return index.get(_plain(value), UNSEEN)

    def _index(self) -> dict:
        if getattr(self, "_cache", None) is None or len(self._cache) != len(self.names):
            self._cache = {name: i for i, name in enumerate(self.names)}
        return self._cache

    def unseen(self, raw: list) -> list:
        """Labels in ``raw`` (one per example) that training never saw, sorted by name."""
        if self.kind == "number":
            return []
        index = self._index()
        items = (v for value in raw for v in (value if self.kind == "tags" else [value]))
        return sorted({_plain(v) for v in items if v is not NO_TAG and _plain(v) not in index},
                      key=str)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "names": list(self.names)}

    @classmethod
    def from_dict(cls, d: Any, source: str) -> "LabelSpace":
        if not isinstance(d, dict) or d.get("kind") not in KINDS or not isinstance(d.get("names"), list):
            raise DataError(f"{source}: 'labels' must be an object with 'kind' (one of "
                            f"{', '.join(KINDS)}) and a list of 'names'")
        return cls(d["kind"], list(d["names"]))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
