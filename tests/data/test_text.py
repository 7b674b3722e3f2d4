"""Text corpora: path resolution, reading, splitting and block sampling."""

from __future__ import annotations

import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.data.text import (
    RandomBlocks,
    read_corpus,
    read_texts,
    resolve_paths,
    sequential_blocks,
    split_tokens,
)
from seqlab.data.tokenizers import ByteTokenizer, build_tokenizer
from seqlab.errors import DataError


def make_tree(root):
    """root/{a.txt, b.md, .hidden.txt, empty.txt, sub/c.txt, .git/x.txt}"""
    (root / "sub").mkdir()
    (root / ".git").mkdir()
    (root / "a.txt").write_text("alpha")
    (root / "b.md").write_text("beta")
    (root / ".hidden.txt").write_text("hidden")
    (root / "empty.txt").write_text("")
    (root / "sub" / "c.txt").write_text("gamma")
    (root / ".git" / "x.txt").write_text("git")
    return root


# --- resolve_paths ---------------------------------------------------------------------


def test_resolve_single_file(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("x")
    assert resolve_paths(f) == [f]
    assert resolve_paths(str(f), extensions=["md"]) == [f]  # named files are taken as given


def test_resolve_folder_recursive_sorted_skips_hidden_and_empty(tmp_path):
    root = make_tree(tmp_path)
    assert resolve_paths(root) == [root / "a.txt", root / "b.md", root / "sub" / "c.txt"]


@pytest.mark.parametrize("extensions", [["txt"], [".TXT"]])
def test_resolve_folder_with_extensions(tmp_path, extensions):
    root = make_tree(tmp_path)
    assert resolve_paths(root, extensions=extensions) == [root / "a.txt", root / "sub" / "c.txt"]


def test_resolve_glob_and_recursive_glob(tmp_path):
    root = make_tree(tmp_path)
    assert resolve_paths(str(root / "*.txt")) == [root / "a.txt"]  # empty.txt skipped
    assert resolve_paths(str(root / "**" / "*.txt")) == [root / "a.txt", root / "sub" / "c.txt"]


def test_resolve_list_deduplicates(tmp_path):
    root = make_tree(tmp_path)
    got = resolve_paths([str(root / "b.md"), root / "sub", str(root / "sub" / "*.txt")])
    assert got == [root / "b.md", root / "sub" / "c.txt"]


def test_resolve_missing_path_is_named_with_hint(tmp_path):
    (tmp_path / "train.txt").write_text("x")
    with pytest.raises(DataError, match=r"data path .*trian\.txt does not exist "
                                        r"\(did you mean 'train\.txt'\?\)"):
        resolve_paths(tmp_path / "trian.txt")


def test_resolve_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "only_md").mkdir()
    (tmp_path / "only_md" / "a.md").write_text("x")
    (tmp_path / "all_empty").mkdir()
    (tmp_path / "all_empty" / "a.txt").write_text("")
    (tmp_path / "hidden_only").mkdir()
    (tmp_path / "hidden_only" / ".a.txt").write_text("x")
    with pytest.raises(DataError, match=r"empty\.txt holds no text: the file is empty"):
        resolve_paths(tmp_path / "empty.txt")
    with pytest.raises(DataError, match=r"only_md holds no files with extension txt"):
        resolve_paths(tmp_path / "only_md", extensions=["txt"])
    with pytest.raises(DataError, match=r"hidden_only holds no files"):
        resolve_paths(tmp_path / "hidden_only")
    with pytest.raises(DataError, match=r"all_empty holds no text: all 1 files are empty"):
        resolve_paths(tmp_path / "all_empty")
    with pytest.raises(DataError, match=r"matched no files"):
        resolve_paths(str(tmp_path / "*.csv"))
    with pytest.raises(DataError, match=r"holds no text"):
        resolve_paths(str(tmp_path / "*.txt"))
    with pytest.raises(DataError, match="list is empty"):
        resolve_paths([])


# --- reading ---------------------------------------------------------------------------


def test_read_corpus_byte_joins_documents_with_eos(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b"hi")
    b.write_bytes(b"\xffx")  # invalid UTF-8 is just bytes to the byte tokenizer
    tok = ByteTokenizer()
    corpus = read_corpus([a, b], tok)
    eos = tok.eos_id
    assert corpus.tokens.dtype == torch.int32
    assert corpus.tokens.tolist() == [eos, 104, 105, eos, 0xFF, 120, eos]
    assert corpus.units == 4 and corpus.files == [a, b]


def test_read_corpus_char_warns_on_invalid_utf8(tmp_path, caplog):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"abc\xffde")
    tok = build_tokenizer("char", read_texts([f]))
    assert "\ufffd" in tok.chars
    with caplog.at_level(logging.WARNING, logger="seqlab"):
        corpus = read_corpus([f], tok)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "bad.txt" in warnings[0].getMessage() and "offset 3" in warnings[0].getMessage()
    assert tok.decode(corpus.tokens) == "abc\ufffdde"
    assert corpus.units == 6


def test_read_corpus_max_bytes_stops_and_truncates(tmp_path):
    files = []
    for name in "abc":
        files.append(tmp_path / f"{name}.txt")
        files[-1].write_text(name * 10)
    tok = ByteTokenizer()
    corpus = read_corpus(files, tok, max_bytes=15)
    assert corpus.files == files[:2]
    assert tok.decode(corpus.tokens) == "a" * 10 + "b" * 5
    assert corpus.units == 15
    with pytest.raises(ValueError, match="max_bytes"):
        read_corpus(files, tok, max_bytes=0)
    with pytest.raises(DataError):
        read_corpus([], tok)


def test_read_corpus_max_bytes_cuts_at_char_boundary(tmp_path, caplog):
    f = tmp_path / "u.txt"
    f.write_text("a\u00e9\u4e2d", encoding="utf-8")  # bytes: 1 + 2 + 3
    tok = build_tokenizer("char", read_texts([f]))
    with caplog.at_level(logging.WARNING, logger="seqlab"):
        for limit, expected in [(1, "a"), (2, "a"), (3, "a\u00e9"), (5, "a\u00e9"), (6, "a\u00e9\u4e2d")]:
            assert tok.decode(read_corpus([f], tok, max_bytes=limit).tokens) == expected
    assert not caplog.records  # truncation never produces invalid UTF-8


def test_split_tokens():
    t = torch.arange(100)
    train, val = split_tokens(t, 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))
    train, val = split_tokens(torch.arange(3), 0.01)
    assert len(train) == 2 and len(val) == 1
    with pytest.raises(ValueError):
        split_tokens(t, 1.0)


# --- RandomBlocks ----------------------------------------------------------------------


def blocks(n=500, **kw):
    args = {"block_size": 16, "batch_size": 4, "seed": 7, **kw}
    return RandomBlocks(torch.arange(n, dtype=torch.int32), **args)


def test_random_blocks_deterministic_per_step():
    a, b = blocks(), blocks()
    for step in (0, 1, 10**6):
        xa, ya = a.batch(step, 1)
        xb, yb = b.batch(step, 1)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a.batch(3)[0], a.batch(4)[0])
    assert not torch.equal(a.batch(3, 0)[0], a.batch(3, 1)[0])
    assert not torch.equal(a.batch(3)[0], blocks(seed=8).batch(3)[0])


@settings(max_examples=30, deadline=None)
@given(step=st.integers(0, 10**9), micro=st.integers(0, 7),
       n=st.integers(17, 200), block=st.integers(1, 16))
def test_random_blocks_are_contiguous_shifted_slices(step, micro, n, block):
    tokens = torch.arange(n, dtype=torch.int32) * 3  # ids tell their own position
    x, y = RandomBlocks(tokens, block_size=block, batch_size=3, seed=1).batch(step, micro)
    assert x.shape == y.shape == (3, block) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.all(torch.diff(torch.cat([x, y[:, -1:]], 1), dim=1) == 3)
    assert int(y.max()) <= 3 * (n - 1)


def test_random_blocks_leave_global_rng_alone():
    state = torch.get_rng_state()
    b = blocks()
    for step in range(5):
        b.batch(step)
    assert torch.equal(torch.get_rng_state(), state)


def test_random_blocks_too_little_data():
    with pytest.raises(DataError, match=r"has 10 tokens, fewer than block_size \+ 1 = 17; "
                                        r"use a smaller context_length or more data"):
        blocks(n=10)
    blocks(n=17)  # exactly enough


def test_random_blocks_state_dict_round_trip_and_mismatch():
    saved = blocks(seed=3).state_dict()
    assert saved == {"seed": 3, "block_size": 16, "batch_size": 4, "n_tokens": 500}
    b = blocks(seed=99)
    b.load_state_dict(saved)
    assert torch.equal(b.batch(5)[0], blocks(seed=3).batch(5)[0])
    with pytest.raises(DataError, match="block_size 16 but this run has 32"):
        blocks(block_size=32).load_state_dict(saved)
    with pytest.raises(DataError, match="batch_size 4 but this run has 8"):
        blocks(batch_size=8).load_state_dict(saved)
    with pytest.raises(DataError, match="n_tokens 500 but this run has 400"):
        blocks(n=400).load_state_dict(saved)
    with pytest.raises(DataError, match="no 'seed'"):
        blocks().load_state_dict({k: v for k, v in saved.items() if k != "seed"})


# --- sequential_blocks -----------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 120), block=st.integers(1, 20), batch=st.integers(1, 5))
def test_sequential_blocks_cover_every_target_once(n, block, batch):
    tokens = torch.arange(n, dtype=torch.int32)
    targets, batches = [], list(sequential_blocks(tokens, block_size=block, batch_size=batch))
    for x, y in batches:
        assert x.dtype == torch.int64 and torch.equal(y, x + 1)
        assert x.shape[0] <= batch and x.shape[1] <= block
        targets += y.flatten().tolist()
    assert targets == list(range(1, n))


def test_sequential_blocks_short_stream_and_limits():
    (x, y), = sequential_blocks(torch.arange(5), block_size=64, batch_size=4)
    assert x.tolist() == [[0, 1, 2, 3]] and y.tolist() == [[1, 2, 3, 4]]
    assert len(list(sequential_blocks(torch.arange(1000), block_size=8, batch_size=2,
                                      max_batches=3))) == 3
    with pytest.raises(DataError, match="has 1 tokens"):
        sequential_blocks(torch.arange(1), block_size=8, batch_size=2)


def test_exclude_skips_matching_folders_and_files(tmp_path):
    (tmp_path / "pkg" / "tests").mkdir(parents=True)
    (tmp_path / "pkg" / "mod.py").write_text("a = 1\n")
    (tmp_path / "pkg" / "test_mod.py").write_text("b = 2\n")
    (tmp_path / "pkg" / "tests" / "x.py").write_text("c = 3\n")
    files = resolve_paths(tmp_path, extensions=[".py"], exclude=["tests", "test_*.py"])
    assert [f.name for f in files] == ["mod.py"]
    with pytest.raises(DataError, match="outside the excluded"):
        resolve_paths(tmp_path / "pkg" / "tests", exclude=["*.py"])
