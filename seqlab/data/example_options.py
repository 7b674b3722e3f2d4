"""The options of the ``examples`` and ``features`` sources (the config's ``data``
section when ``data.source`` names one of them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from seqlab.data.examples import UNKNOWN_POLICIES
from seqlab.data.records import FORMATS
from seqlab.data.sources import FileOptions
from seqlab.errors import ConfigError

__all__ = ["ExampleOptions", "ExamplesOptions", "FeaturesOptions"]


@dataclass
class ExampleOptions(FileOptions):
    """``label_field``: the field holding the label (for several regression targets, a
    list of fields, or one field holding a list of numbers). ``max_length``: longer
    examples are cut (default: ``model.context_length``). ``bucket``: batch examples of
    similar length together, ``bucket_span`` batches per sorted pool."""

    val_fraction: float = 0.1
    label_field: Union[str, list[str]] = "label"
    max_length: int | None = None
    bucket: bool = False
    bucket_span: int = 50

    def __post_init__(self):
        super().__post_init__()
        if self.max_length is not None and self.max_length <= 0:
            raise ConfigError(f"data.max_length must be positive, got {self.max_length}")
        if self.bucket_span <= 0:
            raise ConfigError(f"data.bucket_span must be positive, got {self.bucket_span}")
        if isinstance(self.label_field, list) and not self.label_field:
            raise ConfigError("data.label_field is an empty list")


@dataclass
class ExamplesOptions(ExampleOptions):
    """``format``: ``auto`` (by extension), ``jsonl``, ``csv``, ``tsv``, ``fasta`` or
    ``fastq``. ``text_field``: the text; or ``tokens_field``: pre-tokenised ids (with
    ``tokenizer.kind: ids``).

    Labels kept apart from the examples (sequence files have no label column):
    ``header_label``, a regular expression whose first group finds the label in each
    record's ``description`` (a FASTA header); ``labels``, a CSV/TSV/JSONL file giving
    each record's ``label_field`` by ``id_field``; ``tags_path``, a FASTA file whose
    records (the same ids) spell each example's per-position tags, one letter per
    residue (secondary structure files are laid out so). Tags are one per token, or one
    per character of the text when the tokenizer reads several characters as one token
    (bpe, kmer) or one character as several (bytes of non-ASCII text): each token then
    takes the tag of its first character that is not whitespace
    (``seqlab.data.examples.align_tags``). A labels or tags file covers
    the records of ``path``, ``val_path`` and ``eval_sets`` alike, so its ids that name
    no record of one of them are not an error; a record without an entry is.

    ``unknown``: letters outside a protein, dna, rna or kmer tokenizer's alphabet read
    as ``<unk>`` with one warning per file (``warn``), or stop with an error naming the
    record (``error``)."""

    format: str = "auto"
    text_field: str = "text"
    tokens_field: str | None = None
    header_label: str | None = None
    labels: str | None = None
    labels_format: str = "auto"
    id_field: str = "id"
    tags_path: str | None = None
    # DNA/RNA: each training example reads as its reverse complement with probability
    # 1/2 (a choice seeded by step, so resume stays exact).
    reverse_complement: bool = False
    unknown: str = "warn"

    def __post_init__(self):
        super().__post_init__()
        if self.format not in ("auto", *FORMATS):
            raise ConfigError(f"data.format must be one of auto, {', '.join(FORMATS)}, "
                              f"got {self.format!r}")
        if self.unknown not in UNKNOWN_POLICIES:
            raise ConfigError(f"data.unknown must be one of {', '.join(UNKNOWN_POLICIES)}, got "
                              f"{self.unknown!r}")


@dataclass
class FeaturesOptions(ExampleOptions):
    """``labels``: a CSV/TSV/JSONL file naming each sequence's label by ``id_field``
    (otherwise labels come from the ``labels_key`` array of ``.npz`` files).
    ``normalize``: ``dataset`` (or true) standardises each channel with the training
    split's mean and std; ``sequence`` standardises each sequence's channels by its own
    mean and std (instance normalisation: for signals whose gain and offset vary from one
    recording to the next and carry no meaning); ``none`` (or false) reads the values as
    stored."""

    labels: str | None = None
    labels_format: str = "auto"
    id_field: str = "id"
    features_key: str = "features"
    lengths_key: str = "lengths"
    labels_key: str = "labels"
    normalize: Union[bool, str] = "dataset"

    NORMALIZE = ("dataset", "sequence", "none")

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.normalize, bool):
            self.normalize = "dataset" if self.normalize else "none"
        if self.normalize not in self.NORMALIZE:
            raise ConfigError(f"data.normalize must be one of {', '.join(self.NORMALIZE)} (or "
                              f"true/false), got {self.normalize!r}")
