"""Sequence-to-sequence data sets made from what is on the machine.

- :func:`write_g2p`: English words (a system word list, ``/usr/share/dict/words``) to
  the phonemes espeak-ng gives them (``espeak-ng -q --ipa --sep=" "``: one phoneme per
  space-separated token, stress marks kept), split by word; both come from Debian's
  ``wamerican`` and ``espeak-ng`` packages, which the project's ``setup.sh`` installs.
- :func:`write_code_summaries`: a standard-library function's body (its source without
  the ``def`` line and docstring) to the first line of its docstring, split by module
  so no module is on both sides.

Each writes ``train.tsv``, ``val.tsv`` and ``test.tsv`` (columns ``source``, ``target``,
``group``) and returns their row counts.
"""

from __future__ import annotations

import ast
import csv
import io
import random
import re
import shutil
import subprocess
from pathlib import Path

from seqlab.errors import DataError
from seqlab.io import atomic_write

WORD_LISTS = ("/usr/share/dict/words", "/usr/share/dict/american-english")
SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}


def word_list(path: str | Path | None = None) -> list[str]:
    """Lower-case alphabetic words of the system word list (or ``path``), 3-12 letters."""
    candidates = [Path(path)] if path else [Path(p) for p in WORD_LISTS]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise DataError(f"no word list at {', '.join(map(str, candidates))}; install Debian's "
                        "wamerican package (setup.sh does) or pass a file of words")
    words = {w for w in found.read_text(encoding="utf-8", errors="replace").split()
             if re.fullmatch(r"[a-z]{3,12}", w)}
    return sorted(words)


def phonemes(words: list[str], *, voice: str = "en-us", espeak: str = "espeak-ng") -> list[str]:
    """espeak-ng's phonemes of each word, space separated (one call for all of them)."""
    if shutil.which(espeak) is None:
        raise DataError(f"{espeak} is not installed; install Debian's espeak-ng package "
                        "(setup.sh does)")
    done = subprocess.run([espeak, "-q", "--ipa", "--sep= ", "-v", voice],
                          input="\n\n".join(words), capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise DataError(f"{espeak} failed: {done.stderr.strip()[:300]}")
    out = [" ".join(line.split()) for line in done.stdout.split("\n") if line.strip()]
    if len(out) != len(words):
        raise DataError(f"{espeak} gave {len(out)} pronunciations for {len(words)} words")
    return out


def _write_splits(rows: list[tuple[str, str, str]], out: Path, seed: int) -> dict[str, int]:
    """Rows (source, target, group) split by group into train/val/test TSV files."""
    groups = sorted({g for _, _, g in rows})
    random.Random(seed).shuffle(groups)
    cut1 = round(len(groups) * SPLITS["train"])
    cut2 = cut1 + max(1, round(len(groups) * SPLITS["val"]))
    side = {g: "train" if i < cut1 else "val" if i < cut2 else "test" for i, g in enumerate(groups)}
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
        writer.writerow(["source", "target", "group"])
        kept = [r for r in rows if side[r[2]] == split]
        writer.writerows(kept)
        atomic_write(out / f"{split}.tsv", buffer.getvalue())
        counts[split] = len(kept)
    return counts


def write_g2p(out: str | Path, *, n_words: int = 20000, voice: str = "en-us", seed: int = 0,
              words: list[str] | None = None) -> dict[str, int]:
    """Grapheme-to-phoneme pairs of ``n_words`` words drawn from the word list (or of
    ``words``), split by word."""
    chosen = list(words) if words is not None else word_list()
    if words is None and len(chosen) > n_words:
        chosen = sorted(random.Random(seed).sample(chosen, n_words))
    rows = [(w, p, w) for w, p in zip(chosen, phonemes(chosen, voice=voice))]
    return _write_splits(rows, Path(out), seed)


def function_summaries(path: Path, *, max_body_chars: int = 600) -> list[tuple[str, str]]:
    """(body, first docstring line) of every documented function in one source file:
    the body is the function's source without its ``def`` line and docstring,
    dedented; functions whose body is longer than ``max_body_chars`` are left out."""
    try:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    lines = text.splitlines()
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        doc = ast.get_docstring(node)
        if not doc or len(node.body) < 2:
            continue
        summary = doc.strip().splitlines()[0].strip()
        if not 10 <= len(summary) <= 120:
            continue
        start, end = node.body[1].lineno - 1, node.end_lineno
        body = lines[start:end]
        indent = min((len(x) - len(x.lstrip()) for x in body if x.strip()), default=0)
        source = "\n".join(x[indent:] for x in body).strip()
        if 0 < len(source) <= max_body_chars:
            out.append((source.replace("\t", "    "), summary))
    return out


def write_code_summaries(out: str | Path, *, root: Path | None = None, max_pairs: int = 20000,
                         max_body_chars: int = 600, seed: int = 0) -> dict[str, int]:
    """Function body -> docstring summary pairs from the standard library (or ``root``),
    split by module (file). A body keeps its line breaks: the TSV cell is quoted, as
    the csv module writes and the ``parallel`` source reads."""
    from seqlab.datasets.stdlib import library_files

    rows = []
    files = library_files(root=root) if root is not None else library_files()
    for path in files:
        module = f"{path.parent.name}/{path.name}"
        rows += [(body, summary, module)
                 for body, summary in function_summaries(path, max_body_chars=max_body_chars)]
    if not rows:
        raise DataError(f"no documented functions under {root or 'the standard library'}")
    if len(rows) > max_pairs:
        rows = random.Random(seed).sample(rows, max_pairs)
    return _write_splits(rows, Path(out), seed)


__all__ = ["function_summaries", "phonemes", "word_list", "write_code_summaries", "write_g2p"]
