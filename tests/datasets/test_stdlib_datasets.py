import ast
import json
import sys
from pathlib import Path

import pytest

import seqlab.datasets
from seqlab.datasets import (TAGS, library_files, stdlib_dir, write_package_snippets,
                             write_token_tags)
from seqlab.errors import DataError


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_library_files_skip_tests_and_hidden():
    files = library_files()
    assert files == sorted(files) and len(files) > 100
    for f in files:
        parts = f.relative_to(stdlib_dir()).parts
        assert f.suffix == ".py"
        assert not {"test", "tests", "idle_test", "site-packages", "__pycache__"} & set(parts)
        assert not parts[-1].startswith(("test_", "."))


def test_token_tags_on_the_real_library(tmp_path):
    summary = write_token_tags(tmp_path, chunk_bytes=128, max_files=12, val_fraction=0.25, seed=3)
    splits = {s: read_jsonl(tmp_path / f"{s}.jsonl") for s in ("train", "val")}
    assert all(splits.values())
    for records in splits.values():
        for r in records:
            assert len(r["tags"]) == len(r["text"].encode("utf-8"))
            assert 16 <= len(r["text"]) <= 128 and set(r["tags"]) <= set(TAGS)
    files = {s: {r["file"] for r in records} for s, records in splits.items()}
    assert not files["train"] & files["val"]
    assert summary["files"]["used"] == 12
    assert summary["records"] == {s: len(r) for s, r in splits.items()}
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    # The chunks of a file are the whole file, in order (its tail is kept when >= 16 bytes).
    rel = min(files["train"])
    text = (stdlib_dir() / rel).read_text(encoding="ascii")
    joined = "".join(r["text"] for r in splits["train"] if r["file"] == rel)
    assert text.startswith(joined) and len(text) - len(joined) < 16


def test_token_tags_skip_and_count_bad_files(tmp_path):
    lib = tmp_path / "lib"
    (lib / "pkg").mkdir(parents=True)
    for i in range(4):
        (lib / "pkg" / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i}  # ok\n" * 3)
    (lib / "accents.py").write_text("s = 'é'\n" * 4, encoding="utf-8")
    (lib / "broken.py").write_text('x = 1\ny = """never closed\n')
    (lib / ".hidden.py").write_text("x = 1\n" * 9)
    summary = write_token_tags(tmp_path / "out", chunk_bytes=32, val_fraction=0.25, root=lib)
    assert summary["files"]["used"] == 4
    assert summary["skipped"] == {"non_ascii": ["accents.py"], "tokenize_error": ["broken.py"]}
    assert summary["files"]["train"] == 3 and summary["files"]["val"] == 1


def test_token_tags_are_deterministic_per_seed(tmp_path):
    def build(name, seed):
        write_token_tags(tmp_path / name, max_files=6, seed=seed)
        return [(tmp_path / name / f"{s}.jsonl").read_bytes() for s in ("train", "val")]

    assert build("a", 0) == build("b", 0)
    assert build("a", 0) != build("c", 1)


def test_package_snippets(tmp_path):
    summary = write_package_snippets(tmp_path, per_file_cap=4, per_package_cap=24, min_snippets=8)
    labels = summary["labels"]
    assert len(labels) >= 8 and not {"test", "idlelib", "encodings"} & set(labels)
    splits = {s: read_jsonl(tmp_path / f"{s}.jsonl") for s in ("train", "val")}
    files = {s: {r["file"] for r in records} for s, records in splits.items()}
    assert not files["train"] & files["val"]
    texts = [r["text"] for records in splits.values() for r in records]
    assert len(texts) == len(set(texts))
    for records in splits.values():
        assert {r["label"] for r in records} == set(labels)  # every class on both sides
        for r in records:
            assert r["label"] == r["file"].split("/")[0]
            assert r["file"].count("/") >= 1 and (stdlib_dir() / r["file"]).is_file()
            assert 256 <= len(r["text"].encode("utf-8")) <= 512
    for package in labels:
        n = sum(summary["counts"][s].get(package, 0) for s in ("train", "val"))
        assert 8 <= n <= 24


def test_package_snippets_reject_bad_requests(tmp_path):
    with pytest.raises(DataError, match="not a package"):
        write_package_snippets(tmp_path, packages=["json", "no_such_package"])
    with pytest.raises(DataError, match="min_packages"):
        write_package_snippets(tmp_path, packages=["json", "email"], min_packages=8)


def test_package_imports_only_the_bottom_of_the_graph():
    # third-party leaves (arrays, tables, signal filters, sound files) and seqlab's foundation
    allowed = {"numpy", "pandas", "scipy", "soundfile", "seqlab.errors", "seqlab.io",
               "seqlab.datasets"}
    for path in Path(seqlab.datasets.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                ok = name.split(".")[0] in sys.stdlib_module_names or any(
                    name == a or name.startswith(a + ".") for a in allowed)
                assert ok, (path.name, name)
