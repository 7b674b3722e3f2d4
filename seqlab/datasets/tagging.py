"""Byte-level token-type tags for Python source, read off Python's own ``tokenize``.

A per-byte labelling task needs labels that are exact and reproducible on any machine,
so the labels here are not a heuristic: every byte gets the type of the ``tokenize``
token that covers it, and bytes between tokens are whitespace.
"""

from __future__ import annotations

import io
import keyword
import tokenize

from seqlab.errors import DataError

#: Tag letter -> what it marks. Every byte of a source gets exactly one of these.
TAGS: dict[str, str] = {
    "N": "name (identifier, including the soft keywords match, case, _ and type)",
    "K": "keyword (keyword.iskeyword: def, return, True, None, ...)",
    "O": "operator or delimiter (tokenize OP)",
    "S": "string literal, prefix and quotes included (f-string parts on Python 3.12+)",
    "D": "number literal",
    "C": "comment",
    "L": "line break (NEWLINE and NL tokens)",
    "W": "whitespace and indentation: bytes inside no token, INDENT, line continuations",
    "E": "anything else tokenize reports (ERRORTOKEN and the like)",
}

_BY_TYPE: dict[int, str] = {
    tokenize.OP: "O",
    tokenize.STRING: "S",
    tokenize.NUMBER: "D",
    tokenize.COMMENT: "C",
    tokenize.NEWLINE: "L",
    tokenize.NL: "L",
    tokenize.INDENT: "W",
}
# Python 3.12+ splits f-strings into these; they are all string text.
for _name in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END"):
    if hasattr(tokenize, _name):
        _BY_TYPE[getattr(tokenize, _name)] = "S"
# Zero-width bookkeeping tokens: they cover no byte.
_SKIP = {tokenize.DEDENT, tokenize.ENDMARKER, tokenize.ENCODING}


def tag_source(text: str) -> str:
    """Label every UTF-8 byte of a Python source with its token type.

    Soft keywords (``match``, ``case``, ``_``, ``type``) are tagged ``N``: whether one
    acts as a keyword depends on the parser, not on the token, and ``_`` is far more
    often a plain name, so a tag that follows ``tokenize`` alone must call them names.
    A backslash line continuation lies inside no token, so it is ``W``; so is a blank
    that Python < 3.12 reports as an ``ERRORTOKEN`` before a stray character.

    Args:
        text: Python source. ``tokenize`` reports (row, column) in characters; they are
            converted to byte offsets, so a multi-byte character gets its token's tag on
            each of its bytes.

    Returns:
        A string of letters from :data:`TAGS`, one per byte of ``text.encode("utf-8")``.

    Raises:
        DataError: ``tokenize`` rejects the source (unterminated triple-quoted string,
            inconsistent dedent, ...).
    """
    lines: list[str] = []
    reader = io.StringIO(text, newline="")

    def readline() -> str:
        line = reader.readline()
        if line:
            lines.append(line)
        return line

    spans: list[tuple[tuple[int, int], tuple[int, int], str]] = []
    try:
        for tok in tokenize.generate_tokens(readline):
            if tok.type in _SKIP or not tok.string:  # an end-of-file NEWLINE is '' yet 1 wide
                continue
            if tok.type == tokenize.NAME:
                tag = "K" if keyword.iskeyword(tok.string) else "N"
            elif tok.type == tokenize.ERRORTOKEN and tok.string.isspace():
                tag = "W"  # Python < 3.12 reports the blank before a stray character so
            else:
                tag = _BY_TYPE.get(tok.type, "E")
            spans.append((tok.start, tok.end, tag))
    except (tokenize.TokenError, SyntaxError) as exc:
        raise DataError(f"source does not tokenize: {exc}") from exc

    starts = [0]  # byte offset of the start of each line, plus the end of the text
    for line in lines:
        starts.append(starts[-1] + (len(line) if line.isascii() else len(line.encode("utf-8"))))
    total = starts[-1]

    def offset(row: int, col: int) -> int:
        if row > len(lines):
            return total
        line = lines[row - 1]
        return starts[row - 1] + (col if line.isascii() else len(line[:col].encode("utf-8")))

    tags = bytearray(b"W" * total)
    for start, end, tag in spans:
        a, b = min(offset(*start), total), min(offset(*end), total)
        tags[a:b] = tag.encode("ascii") * (b - a)
    return tags.decode("ascii")
