"""Records of labelled examples from JSON Lines, CSV and TSV files, and from FASTA and
FASTQ sequence files (through Biopython; ``.gz`` accepted): a sequence record's fields
are ``id``, ``description`` (the header line), ``text`` (the sequence) and, from FASTQ,
``quality`` (Phred scores).

A record is a mapping of field names to values plus where it came from
(``file:line``), so every error about its contents can name the record.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqlab.errors import DataError
from seqlab.registry import closest

FORMATS = ("jsonl", "csv", "tsv", "fasta", "fastq")
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
             ".tsv": "tsv", ".tab": "tsv", ".fasta": "fasta", ".fa": "fasta", ".faa": "fasta",
             ".fna": "fasta", ".ffn": "fasta", ".fastq": "fastq", ".fq": "fastq"}


@dataclass
class Record:
    fields: dict[str, Any]
    where: str  # "file:line"
    file: str | None = None  # the file alone, to report once per file


def record_format(path: Path, fmt: str = "auto") -> str:
    """The format named, or the one the file's extension implies."""
    if fmt != "auto":
        if fmt not in FORMATS:
            raise DataError(f"unknown record format {fmt!r}; valid: auto, {', '.join(FORMATS)}")
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    suffix = suffixes[-2] if len(suffixes) > 1 and suffixes[-1] == ".gz" else path.suffix.lower()
    try:
        return _SUFFIXES[suffix]
    except KeyError:
        raise DataError(f"cannot tell the format of {path} from its extension; name it with "
                        f"data.format ({', '.join(FORMATS)}) or use one of "
                        f"{', '.join(sorted(_SUFFIXES))}") from None


def read_records(path: Path, fmt: str = "auto") -> list[Record]:
    """Every record of one file.

    Raises:
        DataError: naming the file and line of a malformed record, or an empty file.
    """
    fmt = record_format(path, fmt)
    if fmt in ("fasta", "fastq"):
        records = _sequences(path, fmt)
        if not records:
            raise DataError(f"{path} holds no {fmt.upper()} records")
        return records
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading BOM is not part of a field
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (invalid byte at offset {e.start})") from None
    records = _jsonl(path, text) if fmt == "jsonl" else _delimited(path, text, fmt)
    if not records:
        raise DataError(f"{path} holds no records")
    return records


def _sequences(path: Path, fmt: str) -> list[Record]:
    """FASTA/FASTQ records, read one at a time by Biopython (gzip when named ``.gz``)."""
    try:
        from Bio import SeqIO
    except ImportError:
        raise DataError(f"{path}: reading {fmt.upper()} needs Biopython: pip install biopython") from None
    zipped = path.suffix.lower() == ".gz"
    opener = gzip.open if zipped else open
    records = []
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for n, rec in enumerate(SeqIO.parse(handle, fmt), 1):
                fields = {"id": rec.id, "description": rec.description, "text": str(rec.seq)}
                if fmt == "fastq":
                    fields["quality"] = rec.letter_annotations["phred_quality"]
                records.append(Record(fields, f"{path}: record {n} ({rec.id})", str(path)))
    except (ValueError, UnicodeDecodeError, EOFError, OSError, zlib.error) as e:
        first = " ".join(str(e).split("\n\n")[0].split())
        if zipped and isinstance(e, (EOFError, zlib.error, gzip.BadGzipFile)):
            after = (f"after record {len(records)} ({records[-1].fields['id']})" if records
                     else "before its first record")
            raise DataError(f"{path}: not readable gzip (truncated or corrupt) {after}: "
                            f"{first}") from None
        where = f"record {len(records) + 1}" if records or fmt == "fastq" else "the start"
        raise DataError(f"{path}: not valid {fmt.upper()} at {where}: {first}") from None
    return records


def _jsonl(path: Path, text: str) -> list[Record]:
    records = []
    # Only "\n" ends a line: str.splitlines would also split at U+2028, U+0085 etc., which
    # json.dumps(ensure_ascii=False) leaves unescaped inside strings.
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: invalid JSON at column {e.colno}: {e.msg}") from None
        if not isinstance(value, dict):
            raise DataError(f"{path}:{n}: each line must be a JSON object, got "
                            f"{type(value).__name__}")
        records.append(Record(value, f"{path}:{n}", str(path)))
    return records


def _delimited(path: Path, text: str, fmt: str) -> list[Record]:
    # newline="": quoted fields keep their line breaks and line_num counts physical lines
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
    try:
        header = next(reader)
    except StopIteration:
        return []
    if len(set(header)) != len(header):
        raise DataError(f"{path}:1: the header names a column twice ({', '.join(header)})")
    records = []
    for row in reader:
        n = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{n}: {len(row)} columns, but the header has {len(header)} "
                            f"({', '.join(header)})")
        records.append(Record(dict(zip(header, row)), f"{path}:{n}", str(path)))
    return records


def field_of(record: Record, name: str, what: str) -> Any:
    """``record.fields[name]``, or a DataError naming the fields that exist."""
    try:
        return record.fields[name]
    except KeyError:
        have = list(record.fields)
        raise DataError(f"{record.where}: no {what} field {name!r}{closest(name, have)}; the "
                        f"record has: {', '.join(map(str, have))}") from None
