"""Data sources: where batches come from, in a registry (``data.source`` in a config).

Every source has typed options (a dataclass converted when the config is read, so a
misspelt key fails before any data is touched) and turns files into :class:`Batch`es.
Training batches are a pure function of ``(seed, step, micro)``, so exact resume
restores the data position directly; nothing materialises all batches in memory.

A source's life: built from its options and a :class:`SourceContext` (what the run
decides: seed, batch size, longest example, the kind of labels the objective needs);
``texts()`` gives the training text when a tokenizer must learn a vocabulary; ``load``
reads and encodes everything with the tokenizer, fitting what the data teaches (label
names, feature statistics: ``fitted()``, saved in the run directory); then
``train_batch``, ``eval_sets`` and ``read`` serve the objective. A trained run's source
skips the reading: ``attach`` gives it the tokenizer and the saved ``fitted()``, and
``read`` then encodes new files for evaluation or prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Union

from seqlab.data.batch import Batch
from seqlab.data.labels import LabelSpace
from seqlab.data.tokenizer_base import Tokenizer
from seqlab.errors import ConfigError
from seqlab.registry import Registry

Batches = Callable[[], Iterable[Batch]]  # a re-iterable evaluation set
PathSpec = Union[str, list[str], None]


@dataclass(frozen=True)
class SourceContext:
    """What the run tells a source.

    Args:
        seed: run seed.
        batch_size: examples (or blocks) per batch.
        grad_accum: micro-batches per optimizer step.
        eval_batches: at most this many batches per evaluation set (None: all of it).
        max_length: the longest example or block, in tokens or frames.
        label_kind: ``class``, ``tags``, ``number`` or None (unlabelled).
        add_bos: prepend ``<bos>`` to every token example (the slot ``first`` pooling reads).
    """

    seed: int
    batch_size: int
    grad_accum: int = 1
    eval_batches: int | None = None
    max_length: int = 256
    label_kind: str | None = None
    add_bos: bool = False


@dataclass
class FileOptions:
    """Options every file-based source shares.

    ``path`` and ``val_path``: a file, a folder, a glob, or a list of them. Without a
    ``val_path`` the last ``val_fraction`` of the training data (text), or a seeded
    ``val_fraction`` of its examples, is held out. ``eval_sets`` names further
    validation sets, each evaluated and logged under its own name (``ood/accuracy``).
    """

    source: str = ""
    path: PathSpec = None
    val_path: PathSpec = None
    val_fraction: float = 0.05
    eval_sets: dict[str, Union[str, list[str]]] = field(default_factory=dict)

    def __post_init__(self):
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be between 0 and 1, got {self.val_fraction}")
        for name in self.eval_sets:
            if not name or "/" in name or name == "val":
                raise ConfigError(f"data.eval_sets: {name!r} cannot name an evaluation set "
                                  "(use a word without '/', other than 'val')")


class DataSource:
    """Base class of data sources (see the module docstring for the life cycle)."""

    input_kind = "tokens"  # "tokens" or "features": what ``inputs`` hold
    default_eval_batches: int | None = None  # a training run's cap when train.eval_batches is unset

    def __init__(self, options, ctx: SourceContext):
        self.options, self.ctx = options, ctx
        self.labels: LabelSpace | None = None
        self.tokenizer: Tokenizer | None = None

    @property
    def input_dim(self) -> int | None:
        """Feature width for feature sources (known after ``load``)."""
        return None

    def tokenizer_file(self):
        """The tokenizer file the data was encoded with (prepared shards), or None: the
        run's tokenizer comes from the config."""
        return None

    def texts(self) -> Iterator[str]:
        """The training texts, for tokenizers that learn a vocabulary (char, ids)."""
        return iter(())

    def attach(self, tokenizer: Tokenizer | None, fitted: dict | None = None) -> None:
        """Take the tokenizer and what an earlier training fitted (``fitted()``: label
        names, feature statistics) without reading any data: enough for ``read``, which
        is how a trained run evaluates and predicts on new files."""
        self.tokenizer = tokenizer

    def load(self, tokenizer: Tokenizer | None, fitted: dict | None = None) -> None:
        """Read and encode the training and evaluation data; ``fitted`` is None on a
        fresh run (fit on the training split) and the saved ``fitted()`` on a resume."""
        raise NotImplementedError

    def fitted(self) -> dict:
        """What this source learned from the training data and a trained model needs
        again (label names, feature statistics); JSON-able."""
        return {}

    def train_batch(self, step: int, micro: int) -> Batch:
        raise NotImplementedError

    def eval_sets(self) -> dict[str, Batches]:
        """Named evaluation sets, ``val`` first."""
        raise NotImplementedError

    def read(self, path: PathSpec, *, labelled: bool = True,
             max_batches: int | None = None) -> Batches:
        """An evaluation (or, unlabelled, prediction) set from other files, read the same
        way as the training data; ``max_batches`` caps it (None: everything)."""
        raise NotImplementedError

    def names(self, path: PathSpec) -> list[str]:
        """Where each example of ``read(path)`` came from, in index order (for predictions)."""
        return []

    def state_dict(self) -> dict:
        """JSON-able description of the data position, checked on resume."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore (and check) the data position saved by ``state_dict``."""

    def describe(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class SourceEntry:
    cls: type
    options: type
    labels: tuple  # label kinds it can provide; None = unlabelled
    inputs: str  # "tokens" or "features"


DATA_SOURCES: Registry[SourceEntry] = Registry("data source")


def register_source(name: str, options: type, *, labels: tuple, inputs: str):
    """Class decorator: register a DataSource subclass under ``name`` with its options."""

    def decorator(cls):
        DATA_SOURCES.add(name, SourceEntry(cls, options, tuple(labels), inputs))
        return cls

    return decorator
