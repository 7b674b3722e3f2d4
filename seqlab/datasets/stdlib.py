"""Labelled demo data sets cut from the Python standard library's own source.

Every machine that runs seqlab has the standard library, so these data sets need no
download and are the same wherever the Python version is the same. Two tasks:

- :func:`write_token_tags`: tag every byte of a source with its token type
  (:mod:`seqlab.datasets.tagging`), a per-position labelling task;
- :func:`write_package_snippets`: which top-level package a snippet of source comes
  from, a sequence classification task.

Both split train and validation by file, never by record, so that no file (and none of
its neighbouring chunks, which share identifiers and style) is on both sides.
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import random
import sysconfig
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from seqlab.datasets.tagging import TAGS, tag_source
from seqlab.errors import DataError
from seqlab.io import atomic_write

__all__ = ["PACKAGE_EXCLUDE", "STDLIB_EXCLUDE", "TAGS", "library_files", "stdlib_dir",
           "stdlib_packages", "tag_source", "write_package_snippets", "write_token_tags"]

#: Directories and files of the standard library that are tests or installed packages,
#: not library code (the same list the quickstart job uses).
STDLIB_EXCLUDE = ["test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
                  "test_*.py"]

#: Top-level packages left out of package classification, and why: ``idlelib`` and
#: ``turtledemo`` are applications, not library code; ``lib2to3`` and ``distutils`` are
#: deprecated and gone from newer Pythons (the label set would depend on the version);
#: ``encodings`` is 120 near-identical generated codec tables; ``pydoc_data`` is one
#: generated file; ``__phello__`` is a test fixture.
PACKAGE_EXCLUDE = ["test", "idlelib", "turtledemo", "lib2to3", "distutils", "encodings",
                   "pydoc_data", "__phello__"]

_MIN_TAIL = 16  # a file's last, shorter chunk is kept if it has at least this many bytes


def stdlib_dir() -> Path:
    """The folder that holds the running Python's standard library source."""
    return Path(sysconfig.get_paths()["stdlib"])


def library_files(extensions: Sequence[str] = (".py",), *, root: Path | None = None) -> list[Path]:
    """The standard library's source files, tests and installed packages left out.

    Args:
        extensions: file name endings to keep (case-insensitive).
        root: folder to scan instead of :func:`stdlib_dir` (tests use a small one).

    Returns:
        Sorted paths; hidden files and folders, and everything matching
        :data:`STDLIB_EXCLUDE`, are skipped.
    """
    root = stdlib_dir() if root is None else Path(root)
    suffixes = tuple(e.lower() for e in extensions)

    def skipped(name: str) -> bool:
        return name.startswith(".") or any(fnmatch.fnmatch(name, p) for p in STDLIB_EXCLUDE)

    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not skipped(d))
        files += [Path(folder) / n for n in names
                  if not skipped(n) and n.lower().endswith(suffixes)]
    return sorted(files)


def stdlib_packages(*, root: Path | None = None) -> list[str]:
    """Top-level packages of the standard library (folders with an ``__init__.py``),
    less :data:`PACKAGE_EXCLUDE` and :data:`STDLIB_EXCLUDE`, sorted."""
    root = stdlib_dir() if root is None else Path(root)
    return sorted(d.name for d in root.iterdir()
                  if d.is_dir() and (d / "__init__.py").is_file() and not d.name.startswith(".")
                  and d.name not in PACKAGE_EXCLUDE
                  and not any(fnmatch.fnmatch(d.name, p) for p in STDLIB_EXCLUDE))


def write_token_tags(out_dir: str | os.PathLike, *, chunk_bytes: int = 256,
                     max_files: int | None = None, val_fraction: float = 0.1, seed: int = 0,
                     root: Path | None = None) -> dict:
    """Write a per-byte token-type tagging data set (``train.jsonl``, ``val.jsonl``).

    Only files that are pure ASCII and tokenize without error are used, so that a byte
    is a character and every tag is exact; the others are counted in the summary. Each
    file is cut into consecutive ``chunk_bytes`` chunks (its last, shorter chunk kept if
    it has at least 16 bytes). A chunk's tags come from tokenizing the whole file, so a
    chunk that starts inside a string is still tagged ``S`` there.

    Records: ``{"text": chunk, "tags": one letter of TAGS per byte, "file": path
    relative to the library folder}``, files in sorted order, chunks in file order.

    Args:
        out_dir: folder to write ``train.jsonl``, ``val.jsonl`` and ``summary.json`` in.
        chunk_bytes: bytes per record.
        max_files: use only this many usable files, drawn at random (seeded) from the
            whole library, so that a small build still spans many modules.
        val_fraction: share of the bytes in validation, as near as whole files (in
            seeded random order) allow; at least one file each side when there are two.
        seed: seeds the file sample and the split.
        root: library folder to read instead of :func:`stdlib_dir`.

    Returns:
        The summary also written to ``summary.json``: files used and skipped, records,
        bytes and tag counts per split.
    """
    if chunk_bytes < _MIN_TAIL:
        raise ValueError(f"chunk_bytes must be at least {_MIN_TAIL}, got {chunk_bytes}")
    _check_fraction(val_fraction)
    root = stdlib_dir() if root is None else Path(root)
    candidates = library_files(root=root)
    rng = random.Random(seed)
    if max_files is not None:
        if max_files < 1:
            raise ValueError(f"max_files must be at least 1, got {max_files}")
        rng.shuffle(candidates)

    tagged: dict[str, tuple[str, str]] = {}
    skipped: dict[str, list[str]] = {"non_ascii": [], "tokenize_error": []}
    for path in candidates:
        if max_files is not None and len(tagged) >= max_files:
            break
        rel = path.relative_to(root).as_posix()
        data = path.read_bytes()
        if not data.isascii():
            skipped["non_ascii"].append(rel)
            continue
        text = data.decode("ascii")
        try:
            tagged[rel] = (text, tag_source(text))
        except DataError:
            skipped["tokenize_error"].append(rel)
    if not tagged:
        raise DataError(f"no usable source under {root}: {len(candidates)} files, none pure "
                        "ASCII and tokenizable")

    val = _val_files({rel: len(text) for rel, (text, _) in tagged.items()}, val_fraction, rng)
    splits = {"train": sorted(set(tagged) - val), "val": sorted(val)}
    summary: dict = {"task": "token_tags", **_provenance(root, seed), "chunk_bytes": chunk_bytes,
                     "val_fraction": val_fraction, "max_files": max_files, "tags": TAGS,
                     "files": {"candidates": len(candidates), "used": len(tagged),
                               **{f"skipped_{k}": len(v) for k, v in skipped.items()},
                               **{s: len(f) for s, f in splits.items()}},
                     "skipped": skipped, "records": {}, "bytes": {}, "tag_counts": {}}
    out = Path(out_dir)
    for split, files in splits.items():
        records, counts = [], Counter()
        for rel in sorted(files):
            text, tags = tagged[rel]
            for a in range(0, len(text), chunk_bytes):
                chunk = text[a:a + chunk_bytes]
                if len(chunk) < _MIN_TAIL:
                    continue
                records.append({"text": chunk, "tags": tags[a:a + chunk_bytes], "file": rel})
                counts.update(tags[a:a + chunk_bytes])
        _write_jsonl(out / f"{split}.jsonl", records)
        summary["records"][split] = len(records)
        summary["bytes"][split] = sum(counts.values())
        summary["tag_counts"][split] = {t: counts[t] for t in TAGS}
    _write_json(out / "summary.json", summary)
    return summary


def write_package_snippets(out_dir: str | os.PathLike, *, snippet_bytes: int = 512,
                           packages: Sequence[str] | None = None, min_packages: int = 8,
                           per_file_cap: int = 16, per_package_cap: int = 160,
                           min_snippets: int = 32, val_fraction: float = 0.2, seed: int = 0,
                           root: Path | None = None) -> dict:
    """Write a "which standard-library package is this from" data set.

    Snippets are non-overlapping ``snippet_bytes`` windows of each file's UTF-8 bytes,
    each end moved back to a character boundary so that every snippet decodes. A
    window under half the size (a file's tail) or under 40% non-whitespace (mostly
    blank) is dropped, and so is every repeat of a snippet text already taken (so the
    same text never has two labels or sits on both sides of the split).

    Balance, so that no package dominates: at most ``per_file_cap`` snippets per file
    (seeded sample, kept in file order), then at most ``per_package_cap`` per package,
    taken round-robin over the package's files so that every file keeps a share.
    Packages left with fewer than ``min_snippets`` snippets or fewer than two files are
    dropped (a by-file split needs a file on each side). The largest class is thus at
    most ``per_package_cap / min_snippets`` times the smallest.

    Split: per package, whole files (in seeded random order) go to validation while
    that brings it nearer ``val_fraction`` of the package's snippets (at least one file
    each side, so a two-file package may be split half and half).

    Records: ``{"text": snippet, "label": package, "file": path relative to the
    library folder}``.

    Args:
        out_dir: folder to write ``train.jsonl``, ``val.jsonl`` and ``summary.json`` in.
        snippet_bytes: bytes per window.
        packages: package names to use; default :func:`stdlib_packages`.
        min_packages: raise if fewer packages than this are left.
        per_file_cap: most snippets taken from one file.
        per_package_cap: most snippets taken from one package.
        min_snippets: fewest snippets a package needs to be kept.
        val_fraction: share of each package's snippets (whole files) in validation.
        seed: seeds the sampling and the split.
        root: library folder to read instead of :func:`stdlib_dir`.

    Returns:
        The summary also written to ``summary.json``: packages kept and dropped, counts
        per package per split.

    Raises:
        DataError: a named package does not exist, or fewer than ``min_packages`` remain.
    """
    if snippet_bytes < 8 or min(per_file_cap, per_package_cap, min_snippets) < 1:
        raise ValueError("snippet_bytes must be at least 8 and the caps and min_snippets "
                         f"at least 1, got {snippet_bytes}, {per_file_cap}, {per_package_cap}, "
                         f"{min_snippets}")
    _check_fraction(val_fraction)
    root = stdlib_dir() if root is None else Path(root)
    names = list(stdlib_packages(root=root) if packages is None else packages)
    missing = [p for p in names if not (root / p / "__init__.py").is_file()]
    if missing:
        raise DataError(f"not a package under {root}: {', '.join(missing)}")
    rng = random.Random(seed)
    seen: set[str] = set()
    undecodable: list[str] = []
    kept: dict[str, dict[str, list[str]]] = {}
    dropped: dict[str, int] = {}
    for package in sorted(names):
        per_file: dict[str, list[str]] = {}
        for path in library_files(root=root / package):
            rel = path.relative_to(root).as_posix()
            try:
                windows = _windows(path.read_bytes(), snippet_bytes)
            except UnicodeDecodeError:
                undecodable.append(rel)
                continue
            windows = [w for w in windows if w not in seen]
            seen.update(windows)
            if len(windows) > per_file_cap:
                windows = [windows[i] for i in sorted(rng.sample(range(len(windows)), per_file_cap))]
            if windows:
                per_file[rel] = windows
        per_file = _round_robin_cap(per_file, per_package_cap, rng)
        total = sum(map(len, per_file.values()))
        if total < min_snippets or len(per_file) < 2:
            dropped[package] = total
        else:
            kept[package] = per_file
    if len(kept) < min_packages:
        raise DataError(f"only {len(kept)} packages under {root} have at least {min_snippets} "
                        f"snippets in two or more files ({', '.join(kept) or 'none'}); "
                        f"min_packages is {min_packages}")

    records: dict[str, list[dict]] = {"train": [], "val": []}
    counts: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    n_files: dict[str, int] = {"train": 0, "val": 0}
    for package, per_file in kept.items():
        val_files = _val_files({f: len(w) for f, w in per_file.items()}, val_fraction, rng)
        for rel, windows in per_file.items():
            split = "val" if rel in val_files else "train"
            records[split] += [{"text": w, "label": package, "file": rel} for w in windows]
            counts[split][package] = counts[split].get(package, 0) + len(windows)
            n_files[split] += 1
    out = Path(out_dir)
    for split, recs in records.items():
        _write_jsonl(out / f"{split}.jsonl", recs)
    summary = {"task": "package_snippets", **_provenance(root, seed),
               "snippet_bytes": snippet_bytes, "val_fraction": val_fraction,
               "per_file_cap": per_file_cap, "per_package_cap": per_package_cap,
               "min_snippets": min_snippets, "labels": sorted(kept),
               "dropped_packages": dropped, "undecodable_files": undecodable,
               "files": n_files, "records": {s: len(r) for s, r in records.items()},
               "counts": counts}
    _write_json(out / "summary.json", summary)
    return summary


def _windows(data: bytes, size: int) -> list[str]:
    """Non-overlapping windows of ``data``, each cut back to a UTF-8 character boundary."""
    data.decode("utf-8")  # raises UnicodeDecodeError on a file that is not UTF-8
    out, a = [], 0
    while a < len(data):
        b = min(a + size, len(data))
        while b < len(data) and b > a and (data[b] & 0xC0) == 0x80:  # continuation byte
            b -= 1
        window = data[a:b].decode("utf-8")
        if b - a >= size // 2 and sum(not c.isspace() for c in window) >= 0.4 * len(window):
            out.append(window)
        a = b
    return out


def _round_robin_cap(per_file: dict[str, list[str]], cap: int,
                     rng: random.Random) -> dict[str, list[str]]:
    """Keep at most ``cap`` snippets in all, one from each file in turn (files in
    seeded order), so that a package's small files are not crowded out by its large
    ones."""
    take = dict.fromkeys(per_file, 0)
    left, files = cap, sorted(per_file)
    rng.shuffle(files)
    while left and files:
        files = [f for f in files if take[f] < len(per_file[f])]
        for f in files[:left]:
            take[f] += 1
        left -= len(files[:left])
    return {f: [per_file[f][i] for i in sorted(rng.sample(range(len(per_file[f])), n))]
            for f, n in take.items() if n}


def _val_files(weights: dict[str, int], val_fraction: float, rng: random.Random) -> set[str]:
    """Files for validation holding about ``val_fraction`` of the total weight (bytes,
    snippets): in seeded random order, each file joins if that brings the held weight
    closer to the target; at least one file each side when there are two or more."""
    if val_fraction == 0 or len(weights) < 2:
        return set()
    files = sorted(weights)
    rng.shuffle(files)
    target, held = val_fraction * sum(weights.values()), 0
    val: set[str] = set()
    for f in files[:-1]:
        if not val or held + weights[f] / 2 < target:
            val.add(f)
            held += weights[f]
    return val


def _check_fraction(val_fraction: float) -> None:
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")


def _provenance(root: Path, seed: int) -> dict:
    return {"python": platform.python_version(), "library": str(root), "seed": seed}


def _write_jsonl(path: Path, records: Iterable[dict]) -> None:
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in records))


def _write_json(path: Path, obj: dict) -> None:
    atomic_write(path, json.dumps(obj, indent=2) + "\n")
