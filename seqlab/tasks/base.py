"""The Objective interface: what one training objective adds to the shared core.

The core is the same for every objective: a data source (``seqlab.data``) yields
:class:`~seqlab.data.batch.Batch`es, an input adapter and a backbone turn them into hidden
states, and a head (``seqlab.models.heads``) owns the loss, as a sum and a count. An
objective names which sources it reads and which labels it needs, builds its head,
optionally transforms batches (masked LM masks them), accumulates its metrics, and
returns a pipeline for ``seqlab.load``.

The Trainer drives any objective without knowing what it models: it asks for the
model, for training batches by (step, micro-step), for a loss, and for named
evaluators. Objectives take the run config as an object and never import the config
module: the config layer sits above the components it describes.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from seqlab.data.batch import Batch
from seqlab.data.sources import DATA_SOURCES, DataSource, SourceContext
from seqlab.data.tokenizer_base import Tokenizer, load_tokenizer
from seqlab.data.tokenizers import TOKENIZERS, build_tokenizer
from seqlab.errors import ConfigError, DataError
from seqlab.models.build import build_backbone
from seqlab.models.heads import Head, LossSum
from seqlab.models.inputs import INPUTS
from seqlab.models.model import SequenceModel
from seqlab.registry import Registry
from seqlab.rundir import DATA_FILE, TOKENIZER_FILE, read_json, write_json
from seqlab.tasks.init_tokenizer import check_base_tokenizer

logger = logging.getLogger("seqlab")

Evaluator = Callable[[nn.Module], dict[str, float]]


@dataclass(frozen=True)
class ObjectiveEntry:
    """An objective and what it needs from the rest of the config.

    Attributes:
        cls: the Objective subclass.
        options: its ``task_options`` dataclass.
        sources: data sources it reads; the first is the default.
        label_kind: the labels the source must provide (None: unlabelled).
        modes: model modes it works with (``causal``, ``bidirectional``).
        model_defaults: model keys laid under the preset's and the user's (``causal``).
    """

    cls: type
    options: type
    sources: tuple[str, ...]
    label_kind: str | None = None
    modes: tuple[str, ...] = ("causal", "bidirectional")
    model_defaults: dict = field(default_factory=dict)


OBJECTIVES: Registry[ObjectiveEntry] = Registry("objective")
TASKS = OBJECTIVES  # the config key is ``task``


@dataclass
class NoOptions:
    """This objective takes no ``task_options``."""


def register_objective(name: str, options: type = NoOptions, *, sources: tuple[str, ...],
                       label_kind: str | None = None,
                       modes: tuple[str, ...] = ("causal", "bidirectional"),
                       model_defaults: dict | None = None):
    """Class decorator registering an Objective under ``name`` (the config's ``task``)."""

    def decorator(cls):
        OBJECTIVES.add(name, ObjectiveEntry(cls, options, tuple(sources), label_kind,
                                            tuple(modes), dict(model_defaults or {})))
        cls.name = name
        return cls

    return decorator


class Metric(ABC):
    """Accumulates one objective's metrics over evaluation batches.

    ``directions``: the metrics of ``compute`` that a run may keep its best weights by
    (``train.best_metric``), each ``"max"`` (higher is better) or ``"min"``.
    """

    directions: dict[str, str] = {}

    @abstractmethod
    def update(self, result: LossSum, batch: Batch) -> None:
        """Add one batch; ``result.outputs`` holds what the head computed."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The metrics of everything added."""


class Objective:
    """One objective. Subclasses register with ``@register_objective`` and implement
    ``build_head`` and ``metric``; see the module docstring."""

    name = "objective"
    item_name = "tokens"  # what throughput counts (real positions of the inputs)
    needs_mask_token = False  # ask the tokenizer for <mask>
    text_outputs = False  # a tokenizer for the outputs, even when the inputs are features

    def __init__(self, config):
        self.config = config
        self.options = config.task_options
        self.entry: ObjectiveEntry = OBJECTIVES.get(config.task)
        self.autocast = None  # set by the Trainer: a context-manager factory or None
        self.tokenizer: Tokenizer | None = None
        self.last_metrics: dict[str, Metric] = {}
        self.source: DataSource = self.make_source()

    # -- set-up -------------------------------------------------------------------------
    def context(self) -> SourceContext:
        cfg = self.config
        eval_batches = cfg.train.eval_batches
        if eval_batches is None:
            eval_batches = DATA_SOURCES.get(cfg.data.source).cls.default_eval_batches
        return SourceContext(seed=cfg.seed, batch_size=cfg.train.batch_size,
                             grad_accum=cfg.train.grad_accum, eval_batches=eval_batches,
                             max_length=cfg.model.context_length, label_kind=self.entry.label_kind,
                             add_bos=self.adds_bos())

    def adds_bos(self) -> bool:
        """Whether token examples start with ``<bos>`` (a slot for ``first`` pooling)."""
        return False

    def make_source(self) -> DataSource:
        return DATA_SOURCES.get(self.config.data.source).cls(self.config.data, self.context())

    def prepare(self, run_dir: Path | None, *, resume: bool = False) -> None:
        """Build (or, resuming, reload) the tokenizer, read the data, fit the labels, and
        fill the derived model config (vocabulary size, input width, outputs)."""
        saved = run_dir if resume else None
        fitted = self._fitted(saved)
        self.tokenizer = self._tokenizer(saved)
        self.source.load(self.tokenizer, fitted)
        self.sync_model()
        logger.info("data: %s%s", self.source.describe(),
                    f" ({self.tokenizer.kind} tokenizer, vocab {self.tokenizer.vocab_size})"
                    if self.tokenizer is not None else "")

    def restore(self, run_dir: Path) -> None:
        """Take a trained run's tokenizer and fitted data state, reading no data."""
        self.tokenizer = self._tokenizer(run_dir)
        self.source.attach(self.tokenizer, self._fitted(run_dir))
        self.sync_model()

    def build_tokenizer(self) -> Tokenizer | None:
        """The tokenizer a new run of this config uses (learning a vocabulary from the
        training texts when its kind does); None for feature inputs."""
        return self._tokenizer(None)

    def _fitted(self, run_dir: Path | None) -> dict | None:
        if run_dir is None or not (run_dir / DATA_FILE).exists():
            return None
        return read_json(run_dir / DATA_FILE).get("source")

    def _tokenizer(self, run_dir: Path | None) -> Tokenizer | None:
        if self.source.input_kind != "tokens" and not self.text_outputs:
            return None
        cfg = self.config.tokenizer
        if run_dir is not None and (run_dir / TOKENIZER_FILE).exists():
            tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
            if cfg.path is None:
                self._expected_kind = (cfg.kind, run_dir / TOKENIZER_FILE)
            return tokenizer
        provided = self.source.tokenizer_file()
        if provided is not None:  # the data was encoded already: its ids, its tokenizer
            if cfg.path is not None and Path(cfg.path).resolve() != Path(provided).resolve():
                raise ConfigError(f"tokenizer.path is {cfg.path}, but data {self.config.data.path} "
                                  f"was encoded with {provided}; leave tokenizer.path unset")
            cfg.path = str(provided)
        init = self.config.init.run
        if init is not None:
            check_base_tokenizer(cfg, init)
        if cfg.path is None and init is not None and (Path(init) / TOKENIZER_FILE).exists():
            # A model initialised from a run reads that run's token ids.
            cfg.path = str(Path(init) / TOKENIZER_FILE)
        if cfg.path:
            tokenizer = load_tokenizer(cfg.path)
            if self.needs_mask_token and tokenizer.mask_id is None:
                raise ConfigError(f"tokenizer.path {cfg.path} has no <mask> token, which "
                                  f"{self.name} needs (it was written before masked LM existed "
                                  "or for another objective); leave tokenizer.path unset")
            return tokenizer
        learns = TOKENIZERS.get(cfg.kind).learns_vocabulary
        return build_tokenizer(cfg.kind, self.source.texts() if learns else (),
                               mask=self.needs_mask_token, **cfg.options())

    def sync_model(self) -> None:
        """Fill ``model.input``, ``vocab_size``/``input_dim`` from the data, or refuse a
        config that disagrees with it."""
        cfg = self.config.model
        kind = self.source.input_kind
        needs = "vocab_size" if kind == "tokens" else "input_dim"
        if cfg.input is not None and INPUTS.get(cfg.input).needs != needs:
            raise ConfigError(f"model.input is {cfg.input!r} but data source "
                              f"{self.config.data.source!r} gives {kind}; leave model.input unset")
        cfg.input = cfg.input or kind
        if kind == "tokens":
            size = self.tokenizer.vocab_size if self.tokenizer is not None else None
            _fill(cfg, "vocab_size", size, f"the {getattr(self.tokenizer, 'kind', '')} tokenizer "
                                           f"has {size} tokens")
            expected = getattr(self, "_expected_kind", None)
            if expected is not None and self.tokenizer.kind != expected[0]:
                raise ConfigError(f"{expected[1]} is a {self.tokenizer.kind} tokenizer, but the run "
                                  f"was trained with tokenizer.kind {expected[0]!r}")
        else:
            _fill(cfg, "input_dim", self.source.input_dim,
                  f"the data has {self.source.input_dim} features")

    # -- the model ------------------------------------------------------------------------
    def build_model(self) -> SequenceModel:
        backbone = build_backbone(self.config.model)
        return SequenceModel(backbone, self.build_head(backbone))

    @abstractmethod
    def build_head(self, backbone: nn.Module) -> Head:
        """The head for this objective over ``backbone``."""

    # -- training -------------------------------------------------------------------------
    def transform(self, batch: Batch, *, key: tuple[int, ...]) -> Batch:
        """Turn a source batch into this objective's batch (e.g. mask it); ``key`` names
        the batch uniquely, so any randomness is a pure function of it."""
        return batch

    def train_batch(self, step: int, micro: int) -> Batch:
        return self.transform(self.source.train_batch(step, micro), key=(0, step, micro))

    def items(self, batch: Batch) -> int:
        """How many ``item_name`` a batch holds, for throughput: its real positions."""
        return batch.n_positions

    def loss(self, model: SequenceModel, batch: Batch) -> LossSum:
        return model.loss(batch.inputs, batch.targets, batch.padding_mask, **batch.extras)

    # -- evaluation -----------------------------------------------------------------------
    @abstractmethod
    def metric(self) -> Metric:
        """A fresh accumulator of this objective's metrics."""

    def selection(self, name: str) -> str:
        """``"min"`` or ``"max"``: how ``train.best_metric`` = ``name`` ranks evaluations.

        Raises:
            ConfigError: ``name`` is not one of this objective's selectable metrics.
        """
        directions = {"val_loss": "min", **self.metric().directions}
        if name not in directions:
            raise ConfigError(f"train.best_metric {name!r} is not a metric of {self.name}; "
                              f"valid: {', '.join(sorted(directions))}")
        return directions[name]

    def evaluators(self) -> dict[str, Evaluator]:
        """Named evaluators, ``val`` first; the trainer logs every other one under its name."""
        return {name: (lambda model, b=batches, n=name: self.evaluate_batches(model, b(), name=n))
                for name, batches in self.source.eval_sets().items()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Metrics on the validation set; includes ``val_loss`` (lower is better)."""
        return self.evaluators()["val"](model)

    @torch.no_grad()
    def evaluate_batches(self, model: nn.Module, batches: Iterable[Batch], *,
                         name: str = "val") -> dict[str, float]:
        """``val_loss`` (the head's loss over every counted item) and the metrics; the
        accumulator stays in ``last_metrics[name]`` for plots."""
        device = next(model.parameters()).device
        metric, total, count = self.metric(), 0.0, 0.0
        self.last_metrics[name] = metric
        was_training = model.training
        model.eval()
        try:
            for i, batch in enumerate(batches):
                batch = self.transform(batch, key=(1, i)).to(device)
                with self.autocast() if self.autocast else contextlib.nullcontext():
                    result = self.loss(model, batch)
                total += float(result.total)
                count += float(result.count)
                metric.update(result, batch)
        finally:
            model.train(was_training)
        if count == 0:
            raise DataError("the evaluation data has nothing to score (no labelled position)")
        return {"val_loss": total / count, **metric.compute()}

    # -- artifacts and resume -------------------------------------------------------------
    def save_artifacts(self, run_dir: Path) -> None:
        """Write what using the trained model needs: tokenizer.json and data.json."""
        if self.tokenizer is not None:
            self.tokenizer.save(run_dir / TOKENIZER_FILE)
        fitted = self.source.fitted()
        if fitted:
            write_json(run_dir / DATA_FILE, {"source": fitted})

    def data_state(self) -> dict:
        return self.source.state_dict()

    def load_data_state(self, state: dict) -> None:
        self.source.load_state_dict(state)

    def sample(self, model: nn.Module) -> str | None:
        """A short qualitative sample for the log, or None."""
        return None

    def write_plots(self, plots_dir: Path) -> None:
        """Write the objective's plots of the last evaluation (e.g. a confusion matrix)."""

    def pipeline(self, model: SequenceModel, run_dir: Path | None = None) -> Any:
        """What ``seqlab.load`` returns for this objective."""
        from seqlab.tasks.pipeline import Pipeline

        return Pipeline(self, model, run_dir)


def _fill(cfg, key: str, value: int | None, what: str) -> None:
    current = getattr(cfg, key)
    if current is None:
        setattr(cfg, key, value)
    elif value is not None and current != value:
        raise ConfigError(f"model.{key} is {current} but {what}; they must agree "
                          f"(leave model.{key} unset to take the data's)")


def class_weights(spec, names: list, counts: torch.Tensor | None) -> torch.Tensor | None:
    """Per-class loss weights from ``class_weights``: None, ``balanced`` (inverse class
    frequency, n / (k * count), as scikit-learn), a list in class order, or a mapping of
    class name to weight (absent classes weigh 1)."""
    if spec is None:
        return None
    if spec == "balanced":
        if counts is None:
            return None  # filled from the training labels by the caller
        counts = counts.float()
        return counts.sum() / (len(names) * counts.clamp(min=1))
    if isinstance(spec, list):
        if len(spec) != len(names):
            raise ConfigError(f"task_options.class_weights lists {len(spec)} weights for "
                              f"{len(names)} classes ({', '.join(map(str, names))})")
        return torch.tensor(spec, dtype=torch.float)
    if isinstance(spec, dict):
        known = {str(n) for n in names}
        unknown = [k for k in spec if k not in known]
        if unknown:
            raise ConfigError(f"task_options.class_weights names unknown classes "
                              f"{', '.join(unknown)}; the classes are {', '.join(sorted(known))}")
        return torch.tensor([float(spec.get(str(n), 1.0)) for n in names])
    raise ConfigError(f"task_options.class_weights must be 'balanced', a list or a mapping, "
                      f"got {spec!r}")


__all__ = ["Batch", "Evaluator", "Metric", "NoOptions", "OBJECTIVES", "Objective",
           "ObjectiveEntry", "TASKS", "class_weights", "register_objective"]
