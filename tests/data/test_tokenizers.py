"""Byte and char tokenizers: exact round trips, save/load, errors, unit counts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.data.tokenizers import (
    TOKENIZERS,
    ByteTokenizer,
    CharTokenizer,
    Tokenizer,
    build_tokenizer,
    load_tokenizer,
)
from seqlab.errors import ConfigError, DataError, TokenizerError

any_text = st.text(alphabet=st.characters(), max_size=60)  # surrogates included
VOCAB = "abcdefgh xyz\n\u00e9\u4e2d\U0001F600\ud800"
vocab_text = st.text(alphabet=st.sampled_from(VOCAB), max_size=60)


def char_tok(text: str = VOCAB) -> CharTokenizer:
    return build_tokenizer("char", [text])


def test_registry_has_both_kinds():
    assert {"byte", "char"} <= set(TOKENIZERS.names())
    assert isinstance(build_tokenizer("byte"), ByteTokenizer)
    with pytest.raises(ConfigError, match="did you mean 'char'"):
        build_tokenizer("chra")


def test_specials_and_sizes():
    b = ByteTokenizer()
    assert (b.vocab_size, b.pad_id, b.bos_id, b.eos_id, b.unk_id) == (259, 256, 257, 258, None)
    assert b.special_tokens == ["<pad>", "<bos>", "<eos>"] and b.unit == "byte"
    c = char_tok("ba")
    assert c.special_tokens == ["<pad>", "<unk>", "<bos>", "<eos>"] and c.unit == "char"
    assert c.vocab_size == 6 and c.encode("ab") == [4, 5]


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_byte_round_trip_any_str(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode(torch.tensor(ids, dtype=torch.long)) == text
    assert tok.encode_array(text).dtype == np.int32
    assert tok.count_units(ids) == len(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=40))
def test_byte_decode_of_invalid_utf8_never_crashes(data):
    tok = ByteTokenizer()
    ids = tok.encode_array(data)
    assert ids.tolist() == list(data)
    assert isinstance(tok.decode(ids), str)
    assert isinstance(tok.decode(list(ids) + [tok.eos_id], skip_special=False), str)


def test_byte_decode_specials():
    tok = ByteTokenizer()
    ids = [tok.bos_id] + tok.encode("hi") + [tok.eos_id, tok.pad_id]
    assert tok.decode(ids) == "hi"
    assert tok.decode(ids, skip_special=False) == "<bos>hi<eos><pad>"
    assert tok.decode([0xFF, 0x41]) == "\ufffdA"


@settings(max_examples=150, deadline=None)
@given(vocab_text)
def test_char_round_trip_in_vocab(text):
    tok = char_tok()
    ids = tok.encode(text)
    assert tok.unk_id not in ids
    assert tok.decode(ids) == text
    assert tok.count_units(torch.tensor(ids)) == len(text)


def test_char_unseen_chars_become_unk():
    tok = char_tok("abc")
    assert tok.encode("aZb\U0001F600") == [4, tok.unk_id, 5, tok.unk_id]
    assert tok.decode(tok.encode("aZ")) == "a\ufffd"
    assert tok.decode(tok.encode("aZ") + [tok.eos_id], skip_special=False) == "a<unk><eos>"
    assert tok.count_units(tok.encode("aZ") + [tok.eos_id, tok.pad_id]) == 2


def test_char_encode_array_from_bytes_replaces_invalid():
    tok = char_tok("ab\ufffd")
    assert tok.encode_array(b"a\xffb").tolist() == tok.encode("a\ufffdb")


def test_char_build_needs_text():
    with pytest.raises(DataError, match="no characters"):
        build_tokenizer("char", [])
    with pytest.raises(ValueError, match="single characters"):
        CharTokenizer(["ab"])


@settings(max_examples=40, deadline=None)
@given(corpus=st.text(alphabet=st.characters(), min_size=1, max_size=40), probe=any_text)
def test_char_save_load_identity(tmp_path_factory, corpus, probe):
    tok = build_tokenizer("char", [corpus])
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(path)
    back = load_tokenizer(path)
    assert back == tok and back.to_dict() == tok.to_dict()
    assert back.encode(corpus + probe) == tok.encode(corpus + probe)
    assert back.decode(back.encode(corpus)) == corpus


def test_byte_save_load_identity(tmp_path):
    tok = ByteTokenizer()
    tok.save(tmp_path / "tokenizer.json")
    assert load_tokenizer(tmp_path) == tok  # a run directory works too
    assert json.loads((tmp_path / "tokenizer.json").read_text()) == {"kind": "byte", "version": 1}


def test_from_dict_on_base_and_subclass():
    d = char_tok("xy").to_dict()
    assert Tokenizer.from_dict(d) == char_tok("xy")
    with pytest.raises(TokenizerError, match="expected 'byte'"):
        ByteTokenizer.from_dict(d)


@pytest.mark.parametrize("ids", [[1, 2, 300, 4], torch.tensor([1, 2, 300, 4]),
                                 np.array([1, 2, 300, 4])])
def test_check_ids_names_id_and_position(ids):
    with pytest.raises(TokenizerError, match=r"token id 300 at position 2 is out of range for "
                       r"this tokenizer \(vocabulary size 259: ids 0\.\.258\)"):
        ByteTokenizer().check_ids(ids)


def test_check_ids_other_cases():
    tok = ByteTokenizer()
    tok.check_ids(torch.arange(259))
    tok.check_ids([])
    with pytest.raises(TokenizerError, match=r"token id -1 at position \(1, 0\)"):
        tok.check_ids(torch.tensor([[0, 1], [-1, 2]]))
    with pytest.raises(TokenizerError, match="integers"):
        tok.check_ids(torch.tensor([1.0]))
    with pytest.raises(TokenizerError, match="token id 6 at position 0"):
        char_tok("ab").decode([6])
    with pytest.raises(TokenizerError, match="token id 259"):
        tok.decode([259])


def test_count_units_is_vectorised_over_large_input():
    tok = ByteTokenizer()
    ids = torch.randint(0, 259, (2_000_000,), generator=torch.Generator().manual_seed(0))
    assert tok.count_units(ids) == int((ids < 256).sum())
    assert tok.count_units(ids.numpy()) == tok.count_units(ids)


def test_char_encode_array_large_text_is_fast_and_exact():
    text = ("the quick brown fox \u00e9\U0001F600\n" * 20000)
    tok = build_tokenizer("char", [text])
    ids = tok.encode_array(text)
    assert ids.dtype == np.int32 and len(ids) == len(text)
    assert tok.decode(ids) == text


# --- load_tokenizer error paths -------------------------------------------------------


def write(tmp_path, content) -> str:
    path = tmp_path / "tokenizer.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(TokenizerError, match="nope.json does not exist"):
        load_tokenizer(tmp_path / "nope.json")


def test_load_invalid_json_gives_line_and_column(tmp_path):
    path = write(tmp_path, '{\n  "kind": "byte",\n  "version": 1,,\n}')
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: invalid JSON at line 3, column"):
        load_tokenizer(path)


def test_load_not_utf8(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_bytes(b'{"kind": "\xff"}')
    with pytest.raises(TokenizerError, match="not UTF-8"):
        load_tokenizer(path)


@pytest.mark.parametrize("content, message", [
    ([1, 2], "expected a JSON object, got list"),
    ({"version": 1}, "key 'kind' is missing"),
    ({"kind": 3, "version": 1}, "'kind' must be a string"),
    ({"kind": "bite", "version": 1}, "unknown tokenizer 'bite' \\(did you mean 'byte'\\?\\)"),
    ({"kind": "byte"}, "key 'version' is missing"),
    ({"kind": "byte", "version": "1"}, "'version' must be of type int, got str"),
    ({"kind": "byte", "version": True}, "'version' must be of type int, got bool"),
    ({"kind": "byte", "version": 3}, "'version' 3 is not supported"),
    ({"kind": "byte", "version": 1, "vocab": 3}, "unknown key 'vocab'"),
    ({"kind": "char", "version": 1, "special_tokens": ["<pad>", "<unk>", "<bos>", "<eos>"]},
     "key 'chars' is missing"),
    ({"kind": "char", "version": 1, "special_tokens": ["<pad>", "<unk>", "<bos>", "<eos>"],
      "char": []}, "unknown key 'char' \\(did you mean 'chars'\\?\\)"),
    ({"kind": "char", "version": 1, "special_tokens": ["<pad>", "<unk>", "<bos>", "<eos>"],
      "chars": "abc"}, "'chars' must be of type list, got str"),
    ({"kind": "char", "version": 1, "special_tokens": ["<pad>", "<unk>", "<bos>", "<eos>"],
      "chars": ["a", "bc"]}, "item 1 is 'bc'"),
    ({"kind": "char", "version": 1, "special_tokens": ["<pad>", "<unk>", "<bos>", "<eos>"],
      "chars": ["b", "a"]}, "sorted and without duplicates"),
    ({"kind": "char", "version": 1, "special_tokens": ["<pad>"], "chars": ["a"]},
     "'special_tokens' must be"),
])
def test_load_bad_contents_names_file_and_key(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(TokenizerError, match=message) as info:
        load_tokenizer(path)
    assert str(info.value).startswith(path)
