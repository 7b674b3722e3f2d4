"""Sequence-to-sequence data made on the machine: espeak-ng pronunciations of words
(split by word) and standard-library function summaries (split by module)."""

import csv
import shutil

import pytest

from seqlab.datasets.seq2seq_pairs import function_summaries, phonemes, write_code_summaries, write_g2p
from seqlab.errors import DataError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (setup.sh installs it)")


def rows(path):
    return list(csv.DictReader(path.open(encoding="utf-8"), delimiter="\t"))


@needs_espeak
def test_pronunciations_are_espeaks_one_per_word_and_no_word_is_on_two_sides(tmp_path):
    words = ["cat", "through", "phoneme", "tough", "sing", "thing", "catalogue", "zebra",
             "quick", "brown"]
    counts = write_g2p(tmp_path, words=words)
    assert sum(counts.values()) == 10
    seen = {}
    for split in ("train", "val", "test"):
        for row in rows(tmp_path / f"{split}.tsv"):
            assert row["group"] == row["source"] and row["source"] not in seen
            seen[row["source"]] = row["target"]
    assert seen["cat"] == "k ˈa t" or seen["cat"] == "k ˈæ t"
    assert seen["through"].split() == ["θ", "ɹ", "ˈuː"]
    assert phonemes(["tough"]) == [seen["tough"]]


def test_a_missing_program_or_word_list_is_named(tmp_path):
    with pytest.raises(DataError, match="no-such-espeak is not installed"):
        phonemes(["cat"], espeak="no-such-espeak")
    from seqlab.datasets.seq2seq_pairs import word_list

    with pytest.raises(DataError, match="no word list at .*nowhere.txt"):
        word_list(tmp_path / "nowhere.txt")


def test_function_bodies_map_to_their_docstrings_first_line(tmp_path):
    package = tmp_path / "lib" / "pkg"
    package.mkdir(parents=True)
    (package / "a.py").write_text(
        'def add(a, b):\n    """Add two numbers together.\n\n    More text.\n    """\n'
        '    total = a + b\n    return total\n\n'
        'def bare(x):\n    return x\n\n'
        'class K:\n    def m(self):\n        """Return the answer to it all."""\n        return 42\n')
    (package / "b.py").write_text('def neg(x):\n    """Negate a number here."""\n    return -x\n')
    (package / "broken.py").write_text("def (:\n")
    assert function_summaries(package / "a.py") == [
        ("total = a + b\nreturn total", "Add two numbers together."),
        ("return 42", "Return the answer to it all.")]
    counts = write_code_summaries(tmp_path / "out", root=tmp_path / "lib")
    assert sum(counts.values()) == 3
    groups = {}
    for split in ("train", "val", "test"):
        for row in rows(tmp_path / "out" / f"{split}.tsv"):
            groups.setdefault(row["group"], set()).add(split)
    assert set(groups) == {"pkg/a.py", "pkg/b.py"} and all(len(v) == 1 for v in groups.values())
