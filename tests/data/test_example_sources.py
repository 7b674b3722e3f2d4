"""The ``examples`` source: labelled text examples from JSONL, CSV and TSV files."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest
import torch

import seqlab
from seqlab.data.batch import IGNORE
from seqlab.data.example_sources import ExamplesOptions
from seqlab.data.sources import DATA_SOURCES, SourceContext
from seqlab.data.tokenizers import build_tokenizer
from seqlab.errors import ConfigError, DataError

WORDS = ["ab", "cde", "f", "ghij", "kl", "mnopq", "r", "st", "uvw", "xyzab", "cd", "efg"]


def write(path, rows, fmt=None):
    """Write dicts as JSONL, CSV or TSV (by the extension unless ``fmt`` is given)."""
    fmt = fmt or path.suffix[1:]
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n",
                                    delimiter="\t" if fmt == "tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    return path


def source(path, *, label_kind="class", seed=0, batch_size=4, context_length=64, add_bos=False,
           tokenizer="byte", load=True, **options):
    """An ``examples`` source over ``path`` (``options`` are ExamplesOptions fields;
    ``context_length`` is the run's longest example), loaded with a fresh tokenizer."""
    entry = DATA_SOURCES.get("examples")
    ctx = SourceContext(seed=seed, batch_size=batch_size, grad_accum=1, eval_batches=None,
                        max_length=context_length, label_kind=label_kind, add_bos=add_bos)
    src = entry.cls(entry.options(source="examples", path=str(path), **options), ctx)
    tok = build_tokenizer(tokenizer, src.texts() if tokenizer != "byte" else ())
    if load:
        src.load(tok)
    return src, tok


def class_rows(n=12):
    return [{"text": WORDS[i % len(WORDS)], "label": "xyz"[i % 3]} for i in range(n)]


def val_batches(src, name="val"):
    return list(src.eval_sets()[name]())


def line_of(where: str) -> int:
    return int(where.rsplit(":", 1)[1])


def by_where(src_set):
    """{record line: (ids as a list, label)} of an ExampleSet."""
    return {line_of(w): src_set.row(i).tolist() for i, w in enumerate(src_set.names)}


# --- formats and inputs ----------------------------------------------------------------


def test_jsonl_csv_and_tsv_give_the_same_examples(tmp_path):
    rows = class_rows()
    loaded = [source(write(tmp_path / f"d.{fmt}", rows))[0] for fmt in ("jsonl", "csv", "tsv")]
    ref = loaded[0]
    assert ref.labels.names == ["x", "y", "z"]
    for other in loaded[1:]:
        assert other.labels.names == ref.labels.names
        for split in ("train", "val"):
            a, b = getattr(ref, split), getattr(other, split)
            assert np.array_equal(a.values, b.values) and np.array_equal(a.offsets, b.offsets)
            assert np.array_equal(a.labels, b.labels)
            # the CSV header shifts every record one line down
            assert [line_of(w) for w in a.names] == [line_of(w) - 1 for w in b.names]
        x, y = ref.train_batch(2, 0), other.train_batch(2, 0)
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)


def test_text_is_encoded_with_the_tokenizer_and_labels_follow_their_record(tmp_path):
    rows = class_rows()
    src, _ = source(write(tmp_path / "d.jsonl", rows))
    for split in (src.train, src.val):
        for i, where in enumerate(split.names):
            record = rows[line_of(where) - 1]
            assert split.row(i).tolist() == list(record["text"].encode())
            assert src.labels.names[split.labels[i]] == record["label"]


def test_pre_tokenised_ids_as_json_list_and_as_spaced_string_agree(tmp_path):
    ids = [[3, 1, 4], [1, 5], [9, 2, 6, 5], [3, 5], [8, 9, 7], [9, 3, 2, 3], [8], [4, 6]]
    labels = ["a", "b"] * 4
    j = write(tmp_path / "d.jsonl", [{"ids": x, "label": y} for x, y in zip(ids, labels)])
    c = write(tmp_path / "d.csv", [{"ids": " ".join(map(str, x)), "label": y}
                                   for x, y in zip(ids, labels)])
    a, tok_a = source(j, tokenizer="ids", tokens_field="ids")
    b, tok_b = source(c, tokenizer="ids", tokens_field="ids")
    assert tok_a.size == tok_b.size == 10  # largest id + 1
    for split in ("train", "val"):
        sa, sb = getattr(a, split), getattr(b, split)
        assert np.array_equal(sa.values, sb.values) and np.array_equal(sa.offsets, sb.offsets)
        for i, where in enumerate(sa.names):
            assert sa.row(i).tolist() == ids[line_of(where) - 1]
    batch = a.train_batch(0, 0)
    if batch.padding_mask is not None:
        assert (batch.inputs[~batch.padding_mask] == tok_a.pad_id).all()


def test_pre_tokenised_ids_beyond_the_training_vocabulary_name_the_record(tmp_path):
    train = write(tmp_path / "t.jsonl", [{"ids": [1, 2], "label": "a"}, {"ids": [0, 3], "label": "b"}])
    val = write(tmp_path / "v.jsonl", [{"ids": [1, 7], "label": "a"}])
    with pytest.raises(DataError, match=rf"{val}:1: token id 7 .*0\.\.3"):
        source(train, tokenizer="ids", tokens_field="ids", val_path=str(val))


def test_tokens_field_needs_the_ids_tokenizer_at_config_read(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer.kind: ids"):
        seqlab.RunConfig.from_dict({"task": "classify", "data": {
            "source": "examples", "path": "x.jsonl", "tokens_field": "ids"}})


def test_char_tokenizer_learns_from_the_training_texts(tmp_path):
    src, tok = source(write(tmp_path / "d.jsonl", class_rows()), tokenizer="char")
    assert tok.unk_id not in src.train.values.tolist()
    assert tok.decode(src.train.row(0)) in WORDS


# --- labels ----------------------------------------------------------------------------


def test_integer_class_labels_keep_their_type_and_order(tmp_path):
    rows = [{"text": WORDS[i], "label": [10, 2, 7][i % 3]} for i in range(12)]
    src, _ = source(write(tmp_path / "d.jsonl", rows))
    assert src.labels.names == [2, 7, 10]  # sorted as numbers, not as text
    for i, where in enumerate(src.train.names):
        assert src.labels.names[src.train.labels[i]] == rows[line_of(where) - 1]["label"]
    assert src.train_batch(0, 0).targets.dtype == torch.int64


def test_one_number_per_example(tmp_path):
    rows = [{"text": WORDS[i], "y": i * 0.5} for i in range(10)]
    for fmt in ("jsonl", "csv"):
        src, _ = source(write(tmp_path / f"d.{fmt}", rows), label_kind="number", label_field="y")
        assert src.labels.names == ["target"]
        assert src.train.labels.shape == (len(src.train), 1)
        for i, where in enumerate(src.train.names):
            first = 1 if fmt == "jsonl" else 2
            assert src.train.labels[i, 0] == pytest.approx(rows[line_of(where) - first]["y"])
        assert src.train_batch(0, 0).targets.dtype == torch.float32


def test_a_list_of_numbers_in_one_field(tmp_path):
    rows = [{"text": WORDS[i], "y": [i, -i, 0.25]} for i in range(10)]
    src, _ = source(write(tmp_path / "d.jsonl", rows), label_kind="number", label_field="y")
    assert src.labels.names == ["target_0", "target_1", "target_2"]
    for i, where in enumerate(src.train.names):
        assert src.train.labels[i].tolist() == rows[line_of(where) - 1]["y"]
    assert src.train_batch(0, 0).targets.shape[1] == 3  # (B, K)


def test_numbers_from_several_fields(tmp_path):
    rows = [{"text": WORDS[i], "h": i, "w": 2 * i + 0.5} for i in range(10)]
    src, _ = source(write(tmp_path / "d.csv", rows), label_kind="number", label_field=["h", "w"])
    assert src.labels.names == ["h", "w"]
    for i, where in enumerate(src.train.names):
        r = rows[line_of(where) - 2]
        assert src.train.labels[i].tolist() == [r["h"], r["w"]]


def test_tags_as_letters_as_spaced_names_and_as_a_list_agree(tmp_path):
    texts = ["abc", "de", "fghi", "jk", "lmn", "o", "pq", "rst"]
    letters = ["ABA", "BB", "AAAB", "BA", "ABB", "A", "AB", "BAB"]

    def rows(written):
        return [{"text": t, "tags": written(s)} for t, s in zip(texts, letters)]

    sources = [
        source(write(tmp_path / "letters.csv", rows(lambda s: s)), label_kind="tags",
               label_field="tags")[0],
        source(write(tmp_path / "spaced.tsv", rows(lambda s: " ".join(s))), label_kind="tags",
               label_field="tags")[0],
        source(write(tmp_path / "list.jsonl", rows(list)), label_kind="tags",
               label_field="tags")[0],
    ]
    for src in sources:
        assert src.labels.names == ["A", "B"]
        assert np.array_equal(src.train.labels, sources[0].train.labels)
        assert len(src.train.labels) == len(src.train.values)  # aligned with the positions
    src = sources[2]
    for i, where in enumerate(src.train.names):
        tags = src.train.labels[src.train.offsets[i]:src.train.offsets[i + 1]]
        assert "".join(src.labels.names[t] for t in tags) == letters[line_of(where) - 1]
    batch = src.train_batch(0, 0)
    assert batch.targets.shape == batch.inputs.shape
    if batch.padding_mask is not None:
        assert torch.equal(batch.targets != IGNORE, batch.padding_mask)


def test_long_examples_are_cut_to_max_length_tags_too(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="seqlab")
    rows = [{"text": "abcdefg", "tags": "ABCDEFG"}, {"text": "ab", "tags": "AB"},
            {"text": "abcd", "tags": "ABCD"}, {"text": "xyz", "tags": "XYZ"}]
    path = write(tmp_path / "d.jsonl", rows)
    tags = {"label_kind": "tags", "label_field": "tags", "val_path": str(path)}
    src, _ = source(path, context_length=3, **tags)
    assert src.train.lengths.tolist() == [3, 2, 3, 3]
    assert "".join(src.labels.names[t] for t in src.train.labels) == "ABC" + "AB" + "ABC" + "XYZ"
    assert "2 of 4 examples are longer than 3 and were cut" in caplog.text
    batch = src.train_batch(0, 0)
    assert batch.inputs.shape[1] <= 3 and batch.targets.shape == batch.inputs.shape
    # data.max_length wins over the run's context length
    src, _ = source(path, context_length=64, max_length=5, **tags)
    assert src.train.lengths.tolist() == [5, 2, 4, 3]
    assert len(src.train.labels) == 14


# --- splits and evaluation --------------------------------------------------------------


def test_seeded_validation_split_is_deterministic_and_disjoint(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(40)])
    a, _ = source(path, seed=3, val_fraction=0.25)
    b, _ = source(path, seed=3, val_fraction=0.25)
    c, _ = source(path, seed=4, val_fraction=0.25)
    assert a.val.names == b.val.names and a.train.names == b.train.names
    assert len(a.val) == 10 and len(a.train) == 30
    assert not set(a.val.names) & set(a.train.names)
    assert set(a.val.names) | set(a.train.names) == {f"{path}:{n}" for n in range(1, 41)}
    assert set(c.val.names) != set(a.val.names)


def test_too_few_examples_to_hold_out_a_validation_set(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"text": "ab", "label": "x"}])
    with pytest.raises(DataError, match="too few.*val_path"):
        source(path)


def test_eval_sets_cover_every_validation_example_once(tmp_path):
    train = write(tmp_path / "t.jsonl", class_rows(12))
    val = write(tmp_path / "v.jsonl", class_rows(11))
    src, _ = source(train, val_path=str(val), eval_sets={"ood": str(val)}, batch_size=3)
    sets = src.eval_sets()
    assert list(sets) == ["val", "ood"]
    for name in sets:
        batches = list(sets[name]())
        seen = torch.cat([b.index for b in batches]).tolist()
        assert sorted(seen) == list(range(11))
        again = list(sets[name]())  # re-iterable, same batches
        assert all(torch.equal(x.inputs, y.inputs) for x, y in zip(batches, again))


def test_add_bos_puts_bos_first(tmp_path):
    path = write(tmp_path / "d.jsonl", class_rows())
    plain, _ = source(path)
    src, tok = source(path, add_bos=True)
    assert (src.train.lengths == plain.train.lengths + 1).all()
    for i in range(len(src.train)):
        assert src.train.row(i)[0] == tok.bos_id
        assert src.train.row(i)[1:].tolist() == plain.train.row(i).tolist()
    for batch in [src.train_batch(0, 0), *val_batches(src)]:
        assert (batch.inputs[:, 0] == tok.bos_id).all()
    # bos counts towards the longest example
    cut, _ = source(path, add_bos=True, context_length=3)
    assert cut.train.lengths.max() == 3 and cut.train.row(0)[0] == tok.bos_id


def test_add_bos_with_tags_keeps_targets_aligned_with_inputs(tmp_path):
    rows = [{"text": "abc", "tags": "ABA"}, {"text": "de", "tags": "BB"},
            {"text": "f", "tags": "A"}, {"text": "ghij", "tags": "ABBA"}]
    path = write(tmp_path / "d.jsonl", rows)
    src, _ = source(path, label_kind="tags", label_field="tags", add_bos=True,
                      val_path=str(path))
    assert len(src.train.labels) == len(src.train.values)
    batch = src.train_batch(0, 0)
    assert batch.targets.shape == batch.inputs.shape
    assert (batch.targets[:, 0] == IGNORE).all()  # bos carries no tag
    for i, where in enumerate(src.train.names):
        tags = src.train.labels[src.train.offsets[i] + 1:src.train.offsets[i + 1]]
        assert "".join(src.labels.names[t] for t in tags) == rows[line_of(where) - 1]["tags"]


def test_unseen_class_in_validation_becomes_ignore_and_is_named(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="seqlab")
    train = write(tmp_path / "t.jsonl", class_rows(6))
    val = write(tmp_path / "v.jsonl", [{"text": "ab", "label": "x"},
                                       {"text": "cd", "label": "never"}])
    src, _ = source(train, val_path=str(val))
    assert src.labels.names == ["x", "y", "z"]
    assert src.val.labels.tolist() == [0, IGNORE]
    assert "validation data" in caplog.text and "'never'" in caplog.text
    targets = torch.cat([b.targets for b in val_batches(src)])
    assert sorted(targets.tolist()) == [IGNORE, 0]


def test_read_unlabelled_file_without_a_label_column(tmp_path):
    src, tok = source(write(tmp_path / "t.csv", class_rows()))
    new = write(tmp_path / "new.csv", [{"text": "hello"}, {"text": "hi"}, {"text": "yo!"}])
    batches = list(src.read(str(new), labelled=False)())
    assert all(b.targets is None for b in batches)
    by_index = {}
    for b in batches:
        for k, i in enumerate(b.index.tolist()):
            row = b.inputs[k] if b.padding_mask is None else b.inputs[k][b.padding_mask[k]]
            by_index[i] = tok.decode(row.tolist())
    assert by_index == {0: "hello", 1: "hi", 2: "yo!"}
    assert src.names(str(new)) == [f"{new}:{n}" for n in (2, 3, 4)]
    with pytest.raises(DataError, match="no label field 'label'"):
        src.read(str(new))  # labelled=True asks for the label


def test_from_inputs_encodes_texts_and_id_lists(tmp_path):
    src, tok = source(write(tmp_path / "t.jsonl", class_rows()))
    (batch,) = list(src.from_inputs(["ab", "abcd"])())
    assert batch.targets is None
    assert batch.inputs.tolist() == [[97, 98, tok.pad_id, tok.pad_id], [97, 98, 99, 100]]
    assert batch.padding_mask.tolist() == [[True, True, False, False], [True] * 4]
    (batch,) = list(src.from_inputs([[1, 2, 3]])())
    assert batch.inputs.tolist() == [[1, 2, 3]] and batch.padding_mask is None
    with pytest.raises(DataError, match="text or a list of token ids"):
        src.from_inputs([[0.5, 1.5]])


def test_attach_fitted_reads_new_files_like_the_trained_source(tmp_path):
    train = write(tmp_path / "t.jsonl", class_rows())
    other = write(tmp_path / "o.jsonl", class_rows(7))
    src, tok = source(train)
    fitted = json.loads(json.dumps(src.fitted()))  # saved as JSON in the run directory
    assert fitted["labels"] == {"kind": "class", "names": ["x", "y", "z"]}
    fresh, _ = source(train, load=False)
    fresh.attach(tok, fitted)
    want, got = list(src.read(str(other))()), list(fresh.read(str(other))())
    assert len(want) == len(got)
    for a, b in zip(want, got):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def test_source_state_dict_round_trip_and_refusal(tmp_path):
    path = write(tmp_path / "d.jsonl", class_rows(20))
    a, _ = source(path, seed=1)
    b, _ = source(path, seed=1)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.train_batch(7, 0).index, b.train_batch(7, 0).index)
    c, _ = source(path, seed=1, batch_size=5)
    with pytest.raises(DataError, match="batch_size 4 but this run has 5"):
        c.load_state_dict(a.state_dict())


def test_source_from_the_run_config(tmp_path):
    path = write(tmp_path / "d.jsonl", class_rows())
    config = seqlab.RunConfig.from_dict({
        "task": "classify", "seed": 2, "train": {"batch_size": 3},
        "data": {"source": "examples", "path": str(path), "val_fraction": 0.25}})
    from seqlab.tasks import OBJECTIVES

    src = OBJECTIVES.get(config.task).cls(config).source
    assert type(src) is DATA_SOURCES.get("examples").cls
    assert isinstance(src.options, ExamplesOptions)
    assert src.ctx.label_kind == "class" and src.ctx.batch_size == 3 and src.ctx.seed == 2
    src.load(build_tokenizer("byte"))
    assert len(src.val) == 3 and len(src.train) == 9
    assert src.train_batch(0, 0).size == 3


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_misspelt_label_column_names_the_columns_and_the_record(tmp_path, fmt):
    path = write(tmp_path / f"d.{fmt}", [{"text": "ab", "lable": "x"}, {"text": "c", "lable": "y"}])
    with pytest.raises(DataError) as e:
        source(path)
    msg = str(e.value)
    line = 2 if fmt == "csv" else 1
    assert f"{path}:{line}" in msg
    assert "no label field 'label'" in msg and "did you mean 'lable'" in msg
    assert "the record has: text, lable" in msg


def test_a_missing_text_column_names_the_record(tmp_path):
    path = write(tmp_path / "d.csv", [{"body": "ab", "label": "x"}, {"body": "c", "label": "y"}])
    with pytest.raises(DataError, match=rf"{path}:2: no text field 'text'.*body, label"):
        source(path)


def test_labels_of_mixed_types_name_a_record_of_each(tmp_path):
    rows = [{"text": "ab", "label": 1}, {"text": "cd", "label": 2}, {"text": "ef", "label": "x"}]
    path = write(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError) as e:
        source(path, val_path=str(path))
    msg = str(e.value)
    assert "mixed types" in msg
    assert f"{path}:1 has int label 1" in msg and f"{path}:3 has str label 'x'" in msg


def test_a_label_that_is_neither_text_nor_integer_names_the_record(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"text": "ab", "label": 1.5}, {"text": "c", "label": 1}])
    with pytest.raises(DataError, match=rf"{path}:1: a label must be a string or an integer"):
        source(path, val_path=str(path))


def test_an_empty_class_label_names_the_record(tmp_path):
    path = write(tmp_path / "d.csv", [{"text": "ab", "label": "x"}, {"text": "cd", "label": " "}])
    with pytest.raises(DataError, match=rf"{path}:3: the label field 'label' is empty"):
        source(path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_empty_example_names_the_record(tmp_path, fmt):
    path = write(tmp_path / f"d.{fmt}", [{"text": "ab", "label": "x"}, {"text": "", "label": "y"},
                                         {"text": "cd", "label": "x"}])
    line = 3 if fmt == "csv" else 2
    with pytest.raises(DataError, match=rf"{path}:{line}: the example is empty"):
        source(path, val_path=str(path))


def test_tags_of_the_wrong_length_name_the_record_and_both_lengths(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"text": "abc", "tags": "ABA"},
                                        {"text": "abcd", "tags": ["A", "B"]}])
    with pytest.raises(DataError) as e:
        source(path, label_kind="tags", label_field="tags", val_path=str(path))
    msg = str(e.value)
    assert f"{path}:2" in msg and "2 per-position labels" in msg and "4 positions" in msg


def test_a_regression_target_that_is_not_a_number_names_the_record(tmp_path):
    path = write(tmp_path / "d.csv", [{"text": "ab", "y": "1.5"}, {"text": "cd", "y": "high"}])
    with pytest.raises(DataError, match=rf"{path}:3: .*must be a number, got 'high'"):
        source(path, label_kind="number", label_field="y", val_path=str(path))


def test_regression_targets_of_different_counts_name_the_record(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"text": "ab", "y": [1, 2]}, {"text": "cd", "y": [3]}])
    with pytest.raises(DataError, match=rf"{path}:2: 1 regression targets, but the first record has 2"):
        source(path, label_kind="number", label_field="y", val_path=str(path))


def test_invalid_json_line_stops_the_load_naming_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ab", "label": "x"}\n{"text": "cd", "label": }\n')
    with pytest.raises(DataError, match=rf"{path}:2: invalid JSON"):
        source(path)


def test_csv_row_with_the_wrong_column_count_stops_the_load(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nab,x\ncd,y,z\n")
    with pytest.raises(DataError, match=rf"{path}:3: 3 columns, but the header has 2"):
        source(path)


def test_unknown_data_option_at_config_read_suggests_the_right_key():
    with pytest.raises(ConfigError) as e:
        seqlab.RunConfig.from_dict({"task": "classify", "data": {
            "source": "examples", "path": "x.jsonl", "label_feild": "y"}})
    msg = str(e.value)
    assert "data.label_feild" in msg and "did you mean 'data.label_field'" in msg


@pytest.mark.parametrize("options, match", [
    ({"format": "xml"}, "data.format"),
    ({"max_length": 0}, "data.max_length"),
    ({"bucket_span": 0}, "data.bucket_span"),
    ({"label_field": []}, "data.label_field"),
    ({"val_fraction": 1.0}, "data.val_fraction"),
])
def test_invalid_option_values_raise_config_errors_naming_the_key(options, match):
    with pytest.raises(ConfigError, match=match):
        ExamplesOptions(source="examples", path="x.jsonl", **options)
