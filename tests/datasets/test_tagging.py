import ast
from pathlib import Path

import pytest

from seqlab.datasets import TAGS, tag_source
from seqlab.errors import DataError

# One line of source per entry, with its tags written out by hand.
HAND_TAGGED = [
    ("def f(x=1):  # hi\n",      "KKKWNONODOOWWCCCCL"),
    ("    return x + 'a'\n",     "WWWWKKKKKKWNWOWSSSL"),
    ("\n",                       "L"),
    ("match = None\n",           "NNNNNWOWKKKKL"),       # soft keyword: a name
    ("y = 1.5e3 \\\n",           "NWOWDDDDDWWW"),        # continuation: in no token
    ("    - 2\n",                "WWWWOWDL"),
    ("s = 'é'  # ü\n",           "NWOWSSSSWWCCCCL"),     # é and ü: two bytes each
    ('"""a\n',                   "SSSSS"),               # a string across lines
    ('b"""\n',                   "SSSSL"),
    ("if s:\n",                  "KKWNOL"),
    ("\tpass\n",                 "WKKKKL"),
]


def test_hand_tagged_source(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text("".join(line for line, _ in HAND_TAGGED), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    assert tag_source(text) == "".join(tags for _, tags in HAND_TAGGED)


def test_one_tag_per_byte_from_the_documented_set():
    text = Path(ast.__file__).read_text(encoding="utf-8")
    tags = tag_source(text)
    assert len(tags) == len(text.encode("utf-8"))
    assert set(tags) <= set(TAGS)
    assert set("NKOSDCLW") <= set(tags)


def test_error_tokens_and_no_trailing_newline():
    assert tag_source("a $ b") == "NWEWN"
    assert tag_source("") == ""


def test_untokenizable_source_raises():
    with pytest.raises(DataError, match="does not tokenize"):
        tag_source('x = """never closed\n')
