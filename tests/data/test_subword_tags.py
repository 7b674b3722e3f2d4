"""Per-character tags on subword tokens: tokenizer offsets, the alignment rule, a tag run
on a byte-level BPE vocabulary end to end, and the error for tags of neither length."""

import json
import logging
import random
import re

import pytest

import seqlab
from seqlab.config import RunConfig
from seqlab.data.bio_tokenizers import DNATokenizer, KmerTokenizer
from seqlab.data.bpe import train_bpe
from seqlab.data.examples import align_tags, tags_per_token
from seqlab.data.labels import NO_TAG
from seqlab.data.records import Record
from seqlab.data.tokenizers import ByteTokenizer, CharTokenizer, IdsTokenizer
from seqlab.errors import DataError

KEYWORDS = ("def", "return", "if", "for", "in")
NAMES = ("x", "y", "total", "count", "item")
LEXEME = re.compile(r"(?P<W>\s+)|(?P<N>[A-Za-z_]\w*)|(?P<D>\d+)|(?P<O>.)")


def tag_line(text: str) -> str:
    """One tag per character: K keyword, N name, D digits, O operator, W whitespace."""
    tags = []
    for m in LEXEME.finditer(text):
        kind = "K" if m.lastgroup == "N" and m.group() in KEYWORDS else m.lastgroup
        tags.append(kind * len(m.group()))
    return "".join(tags)


def code_lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        a, b = rng.choice(NAMES), rng.choice(NAMES)
        lines.append(rng.choice([f"if {a} > {b}:", f"return {a} + {rng.randint(0, 99)}",
                                 f"for {a} in {b}:", f"    {a} = {b} * {rng.randint(0, 9)}"]))
    return lines


@pytest.fixture(scope="module")
def bpe():
    """Trained on ASCII only: non-ASCII characters stay split into their UTF-8 bytes."""
    return train_bpe(code_lines(200), vocab_size=300)


def test_bpe_offsets_are_characters_on_ascii_text(bpe):
    text = "    return total + 42"
    spans = bpe.offsets(text)
    assert len(spans) == len(bpe.encode(text))
    assert [text[s:e] for s, e in spans] == ["   ", " ", "return", " total", " +", " 4", "2"]


def test_bpe_offsets_are_characters_not_bytes_on_non_ascii_text(bpe):
    text = "a→é"  # 3 characters, 6 UTF-8 bytes: "→" reads as 3 tokens, "é" as 2
    expected = [(0, 1), (1, 2), (1, 2), (1, 2), (2, 3), (2, 3)]
    assert len(bpe.encode(text)) == 6
    assert bpe.offsets(text) == expected
    assert ByteTokenizer().offsets(text) == expected  # one span per byte, naming its character


def test_offsets_of_other_tokenizers():
    assert CharTokenizer("ab").offsets("abba") == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert ByteTokenizer().offsets("\U0001F600x") == [(0, 1)] * 4 + [(1, 2)]
    assert IdsTokenizer(5).offsets("1 2") is None
    assert DNATokenizer().offsets("AC G") == [(0, 1), (1, 2), (3, 4)]
    assert KmerTokenizer(2).offsets("ACG TA") == [(0, 2), (2, 5), (5, 6)]
    kmers = KmerTokenizer(2, overlap=True)
    assert kmers.offsets("ACGT") == [(0, 2), (1, 3), (2, 4)]
    assert len(kmers.offsets("ACGT")) == len(kmers.encode("ACGT"))


def test_alignment_rule_on_a_hand_example():
    text = "if x→y:\n  z"
    tags = "KKWNONOWWWN"  # one per character
    # "if", " x", the 3 bytes of "→", "y", ":", "\n  " (all whitespace), "z", a token
    # standing for no character.
    offsets = [(0, 2), (2, 4), (4, 5), (4, 5), (4, 5), (5, 6), (6, 7), (7, 10), (10, 11),
               (11, 11)]
    assert align_tags(tags, offsets, text) == ["K", "N", "O", "O", "O", "N", "O", "W", "N",
                                               NO_TAG]


def test_alignment_with_a_trained_bpe(bpe):
    text = "    return total + 42"
    tags = tag_line(text)
    assert tags == "WWWWKKKKKKWNNNNNWOWDD"
    # "   ", " ", "return", " total", " +", " 4", "2": a space folded into the word after it
    # takes the word's tag.
    assert align_tags(tags, bpe.offsets(text), text) == ["W", "W", "K", "N", "O", "D", "D"]


def records_of(texts, tags, file="f.jsonl"):
    return [Record({"text": t, "tags": g}, f"{file}:{i + 1}", file)
            for i, (t, g) in enumerate(zip(texts, tags))]


def test_byte_tokens_of_non_ascii_text_take_their_characters_tag(caplog):
    byte = ByteTokenizer()
    texts, tags = ["ab", "é→"], [list("AB"), list("XY")]
    rows = [byte.encode_array(t) for t in texts]
    with caplog.at_level(logging.INFO, logger="seqlab"):
        out = tags_per_token(records_of(texts, tags), rows, tags, byte, text_field="text",
                             tokens_field=None)
    assert out == [["A", "B"], ["X", "X", "Y", "Y", "Y"]]
    assert "f.jsonl: 1 of 2 records give one tag per character" in caplog.text


def test_per_token_tags_are_kept(bpe):
    texts = ["return x"]
    rows = [bpe.encode_array(t) for t in texts]
    tags = [["K"] * len(rows[0])]
    assert len(rows[0]) != len(texts[0])
    assert tags_per_token(records_of(texts, tags), rows, tags, bpe, text_field="text",
                          tokens_field=None) == tags


def test_a_record_that_fits_both_counts_is_read_as_the_rest_of_its_file(bpe):
    # "for→": 4 characters and 4 tokens ("for" and the 3 bytes of "→").
    assert bpe.offsets("for→") == [(0, 3), (3, 4), (3, 4), (3, 4)]
    texts, tags = ["for→", "return x"], [list("KKKO"), list("KKKKKKWN")]
    rows = [bpe.encode_array(t) for t in texts]
    out = tags_per_token(records_of(texts, tags), rows, tags, bpe, text_field="text",
                         tokens_field=None)
    assert out == [["K", "O", "O", "O"], ["K", "N"]]  # per character, as "return x"
    per_token = [list("KOOO"), list("KN")]  # "return x" fits only per token here
    out = tags_per_token(records_of(texts, per_token), rows, per_token, bpe,
                         text_field="text", tokens_field=None)
    assert out == per_token


def write_jsonl(path, lines):
    path.write_text("".join(json.dumps({"text": t, "tags": tag_line(t)}) + "\n" for t in lines))


def tag_config(tmp_path, train, val, steps=30):
    bpe = train_bpe(code_lines(300), vocab_size=300)
    bpe.save(tmp_path / "tokenizer.json")
    return RunConfig.from_dict({
        "task": "tag", "seed": 0,
        "tokenizer": {"kind": "bpe", "path": str(tmp_path / "tokenizer.json")},
        "model": {"mixer": "gru", "d_model": 32, "n_layers": 1, "causal": False,
                  "context_length": 32, "position": "none"},
        "data": {"source": "examples", "path": str(train), "val_path": str(val),
                 "label_field": "tags"},
        "train": {"steps": steps, "batch_size": 16, "lr": 1e-2, "warmup_steps": 1,
                  "eval_every": steps, "log_every": 10, "progress": False, "num_threads": 1},
    })


def test_a_tag_run_on_bpe_tokens_trains_and_evaluates(tmp_path, caplog):
    lines = code_lines(300)
    write_jsonl(tmp_path / "train.jsonl", lines[:240])
    write_jsonl(tmp_path / "val.jsonl", lines[240:])
    with caplog.at_level(logging.INFO, logger="seqlab"):
        result = seqlab.fit(tag_config(tmp_path, tmp_path / "train.jsonl", tmp_path / "val.jsonl"),
                            tmp_path / "run")
    assert "train.jsonl: 240 of 240 records give one tag per character" in caplog.text
    m = result.metrics
    assert {"accuracy", "macro_f1", "f1/K", "f1/N", "f1/O", "f1/D", "f1/W"} <= set(m)
    assert m["accuracy"] > 0.8  # the majority tag (N) is about 0.3 of the tokens
    pipeline = seqlab.load(tmp_path / "run")
    assert pipeline.tokenizer.kind == "bpe"
    assert pipeline.evaluate(tmp_path / "val.jsonl")["accuracy"] == pytest.approx(m["accuracy"])
    text = "return total + 7"
    assert len(pipeline.predict(text)["tags"]) == len(pipeline.tokenizer.encode(text))  # per token


def test_tags_of_neither_length_name_the_record_and_both_counts(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", code_lines(20))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "return total", "tags": "KKK"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: 3 per-position labels for a sequence "
                                        r"of 2 positions \(its text has 12 characters, read by "
                                        r"the bpe tokenizer as 2 tokens\)"):
        seqlab.fit(tag_config(tmp_path, tmp_path / "train.jsonl", bad, steps=1), tmp_path / "run")
