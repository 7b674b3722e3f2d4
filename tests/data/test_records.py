"""Records from JSON Lines, CSV and TSV files, and the errors that name file:line."""

from __future__ import annotations

import json

import pytest

from seqlab.data.records import Record, field_of, read_records, record_format
from seqlab.errors import DataError


def test_jsonl_csv_and_tsv_give_the_same_records(tmp_path):
    rows = [{"text": "a b", "label": "x"}, {"text": "c, d", "label": "y"}]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "r.csv").write_text('text,label\na b,x\n"c, d",y\n')
    (tmp_path / "r.tsv").write_text("text\tlabel\na b\tx\nc, d\ty\n")
    for name in ("r.jsonl", "r.csv", "r.tsv"):
        records = read_records(tmp_path / name)
        assert [r.fields for r in records] == rows, name
        first_line = 1 if name == "r.jsonl" else 2  # below the header
        assert records[0].where == f"{tmp_path / name}:{first_line}"


def test_where_names_the_file_line_skipping_blank_lines(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert [r.where for r in read_records(f)] == [f"{f}:1", f"{f}:3"]
    c = tmp_path / "r.csv"
    c.write_text("a,b\n1,2\n\n3,4\n")
    assert [r.where for r in read_records(c)] == [f"{c}:2", f"{c}:4"]


def test_format_from_extension_or_named(tmp_path):
    assert record_format(tmp_path / "x.ndjson") == "jsonl"
    assert record_format(tmp_path / "x.TAB") == "tsv"
    assert record_format(tmp_path / "x.txt", "csv") == "csv"
    with pytest.raises(DataError, match=r"x\.txt.*data\.format"):
        record_format(tmp_path / "x.txt")
    with pytest.raises(DataError, match="'xml'"):
        record_format(tmp_path / "x.csv", "xml")


def test_invalid_json_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "ok", "label": 1}\n{"text": "broken", \n')
    with pytest.raises(DataError, match=rf"{f}:2: invalid JSON"):
        read_records(f)


def test_a_json_line_that_is_not_an_object_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=rf"{f}:2: .*JSON object, got list"):
        read_records(f)


def test_csv_row_with_the_wrong_column_count_names_file_line_and_header(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("text,label\nab,x\nab,x,extra\n")
    with pytest.raises(DataError) as e:
        read_records(f)
    msg = str(e.value)
    assert f"{f}:3" in msg and "3 columns" in msg and "header has 2" in msg and "text, label" in msg


def test_header_naming_a_column_twice(tmp_path):
    f = tmp_path / "bad.tsv"
    f.write_text("text\ttext\na\tb\n")
    with pytest.raises(DataError, match=rf"{f}:1: .*twice"):
        read_records(f)


def test_empty_and_non_utf8_files(tmp_path):
    f = tmp_path / "only_header.csv"
    f.write_text("text,label\n")
    with pytest.raises(DataError, match="holds no records"):
        read_records(f)
    g = tmp_path / "latin.jsonl"
    g.write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        read_records(g)


def test_quoted_csv_field_keeps_its_line_break(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text('text,label\n"two\nlines",x\nnext,y\n')
    records = read_records(f)
    assert [r.fields["text"] for r in records] == ["two\nlines", "next"]
    assert records[1].where == f"{f}:4"


def test_jsonl_text_may_hold_unicode_line_separators(tmp_path):
    # json.dumps(ensure_ascii=False) leaves U+2028, U+2029 and U+0085 unescaped: they are
    # part of the string, not line ends of the file.
    text = "a\u2028b\u2029c\x85d"
    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps({"text": text}, ensure_ascii=False) + "\n"
                 + json.dumps({"text": "e"}) + "\n", encoding="utf-8")
    records = read_records(f)
    assert [r.fields["text"] for r in records] == [text, "e"]
    assert records[1].where == f"{f}:2"


@pytest.mark.parametrize("name, body", [("r.csv", "text,label\nab,x\n"),
                                        ("r.jsonl", '{"text": "ab", "label": "x"}\n')])
def test_a_utf8_byte_order_mark_is_not_part_of_the_first_field(tmp_path, name, body):
    f = tmp_path / name
    f.write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert read_records(f)[0].fields == {"text": "ab", "label": "x"}


def test_field_of_names_the_record_and_the_fields_it_has():
    record = Record({"text": "ab", "labl": "x"}, "data.csv:7")
    with pytest.raises(DataError) as e:
        field_of(record, "label", "label")
    msg = str(e.value)
    assert "data.csv:7" in msg and "'label'" in msg
    assert "did you mean 'labl'" in msg and "the record has: text, labl" in msg
