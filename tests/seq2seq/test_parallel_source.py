"""The ``parallel`` source: pairs from TSV (with or without a header), CSV and JSONL;
decoder inputs and targets laid out around <bos>/<eos>; length filtering; grouped
splits; and an error naming the file and line of every bad pair."""

import json
import logging

import pytest
import torch

from seqlab.data.batch import IGNORE
from seqlab.data.parallel import ParallelOptions, ParallelSource
from seqlab.data.sources import SourceContext
from seqlab.data.tokenizers import build_tokenizer
from seqlab.errors import ConfigError, DataError


def source(tmp_path, rows=None, name="pairs.tsv", text=None, **options):
    path = tmp_path / name
    if text is None:
        rows = rows or [(f"w{i}{'x' * (i % 5)}", f"W{i}", f"g{i % 4}") for i in range(24)]
        text = "source\ttarget\tgroup\n" + "".join("\t".join(r) + "\n" for r in rows)
    path.write_text(text)
    ctx = SourceContext(seed=0, batch_size=4, max_length=12)
    src = ParallelSource(ParallelOptions(source="parallel", path=str(path), **options), ctx)
    tokenizer = build_tokenizer("char", src.texts())
    src.load(tokenizer)
    return src, tokenizer


def test_a_batch_feeds_bos_plus_target_and_predicts_target_plus_eos(tmp_path):
    src, tok = source(tmp_path)
    batch = src.train_batch(0, 0)
    assert 1 <= batch.inputs.shape[0] <= 4
    for row, i in enumerate(batch.index.tolist()):
        target = src.train.targets[i].tolist()
        dec = batch.extras["decoder_inputs"][row].tolist()
        tgt = batch.targets[row].tolist()
        n = len(target)
        assert dec[:n + 1] == [tok.bos_id] + target
        assert tgt[:n + 1] == target + [tok.eos_id] and set(tgt[n + 1:]) <= {IGNORE}
        assert batch.inputs[row, :len(src.train.sources[i])].tolist() == src.train.sources[i].tolist()
    again = src.train_batch(0, 0)
    assert torch.equal(batch.inputs, again.inputs)  # a pure function of the step


def test_headerless_tsv_csv_with_quoted_newlines_and_jsonl_read_the_same_pairs(tmp_path):
    pairs = [("ab", "BA"), ("a\nb", "B A"), ("xyz", "ZYX")] * 4
    tsv = "".join(f"{s}\t{t}\n" for s, t in pairs if "\n" not in s)
    headerless, _ = source(tmp_path, name="a.tsv", text=tsv, header=False, val_fraction=0.25)
    assert len(headerless.train) + len(headerless.val) == 8
    csv_text = "source,target\n" + "".join(f'"{s}",{t}\n' for s, t in pairs)
    from_csv, tok = source(tmp_path, name="b.csv", text=csv_text, val_fraction=0.25)
    jsonl = "".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in pairs)
    from_jsonl, tok2 = source(tmp_path, name="c.jsonl", text=jsonl, val_fraction=0.25)
    texts = sorted(tok.decode(s.tolist()) for s in from_csv.train.sources + from_csv.val.sources)
    assert texts == sorted(tok2.decode(s.tolist()) for s in from_jsonl.train.sources
                           + from_jsonl.val.sources)
    assert "a\nb" in texts


def test_a_group_is_never_on_both_sides_of_the_split(tmp_path):
    src, tok = source(tmp_path, group_field="group", val_fraction=0.25)
    groups = {}
    for side, pairs in (("train", src.train), ("val", src.val)):
        for where in pairs.wheres:
            line = int(where.rsplit(":", 1)[1])
            groups.setdefault(f"g{(line - 2) % 4}", set()).add(side)
    assert all(len(sides) == 1 for sides in groups.values()) and len(groups) == 4


def test_too_long_pairs_are_dropped_with_a_warning_or_refused(tmp_path, caplog):
    rows = [("a" * n, "B", "g") for n in range(1, 20)]
    with caplog.at_level(logging.WARNING, "seqlab"):
        src, _ = source(tmp_path, rows, max_source_length=10, val_fraction=0.2)
    assert len(src.train) + len(src.val) == 10
    assert "training data: 7 of 15 pairs are too long" in caplog.text
    assert "validation data: 2 of 4" in caplog.text and "pairs.tsv:12 has a 11-token source" in caplog.text
    with pytest.raises(DataError, match=r"pairs.tsv:12 has a 11-token source .* limits are 10"):
        source(tmp_path, rows, max_source_length=10, too_long="error")


@pytest.mark.parametrize("text, message", [
    ("source\ttarget\nab\tBA\n\tX\ncd\tDC\n", r"pairs.tsv:3: the source is empty"),
    ("source\ttarget\nab\tBA\ncd\t \n", r"pairs.tsv:3: the target is empty"),
    ("src\ttarget\nab\tBA\n", r"pairs.tsv:2: no source field 'source'.*src, target"),
    ("source\ttarget\nab\tBA\n", r"holds 1 pair: too few to hold out"),
])
def test_bad_pairs_name_their_file_and_line(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        source(tmp_path, text=text)


def test_a_headerless_line_without_a_target_is_named(tmp_path):
    with pytest.raises(DataError, match=r"a.tsv:2: 1 column; a pair needs the source and the target"):
        source(tmp_path, name="a.tsv", text="ab\tBA\ncd\n", header=False)


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="data.too_long must be 'drop' or 'error'"):
        ParallelOptions(too_long="cut")
    with pytest.raises(ConfigError, match="data.max_source_length must be positive"):
        ParallelOptions(max_source_length=0)
