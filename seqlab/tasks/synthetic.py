"""Synthetic long-range tasks (copy, selective copy, MQAR, induction, adding, ListOps)
as an objective: the ``synthetic`` source draws batches from a generator, a ``scored``
head reads the scored positions only, and accuracy is reported at the training length
and at any other lengths.

Options come from ``task_options`` as one flat mapping: the keys of
``SyntheticOptions`` plus the knobs of the chosen generator
(``seqlab.data.synthetic``), e.g. ``{name: copy, length: 256, n_copy: 10}``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from torch import nn

from seqlab.data.batch import Batch
from seqlab.data.synthetic import SYNTHETIC, SyntheticGenerator
from seqlab.data.synthetic_source import SyntheticSource
from seqlab.errors import ConfigError
from seqlab.models.heads import LossSum, ScoredHead
from seqlab.registry import closest
from seqlab.tasks.base import Metric, Objective, register_objective
from seqlab.tasks.pipeline import Pipeline
from seqlab.typed import convert


@dataclass
class SyntheticOptions:
    """What to train on and how to evaluate it.

    Args:
        name: the generator (a key of ``seqlab.data.synthetic.SYNTHETIC``).
        length: the training sequence length.
        eval_lengths: lengths to report ``accuracy@L`` at (default ``[length]``); lengths
            beyond ``length`` measure extrapolation (e.g. induction at 2x, 4x, 8x).
        eval_examples: held-out sequences per evaluated length.
        eval_tokens: if set, at most ``eval_tokens // L`` sequences at length L (but 16
            when that is fewer), so evaluating far beyond the training length stays
            affordable.
        generator: the generator with its knobs (the other keys of ``task_options``).
    """

    name: str = "copy"
    length: int = 256
    eval_lengths: list[int] | None = None
    eval_examples: int = 256
    eval_tokens: int | None = None
    generator: SyntheticGenerator | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.name not in SYNTHETIC:
            raise ConfigError(f"task_options.name: unknown synthetic task {self.name!r}"
                              f"{closest(self.name, SYNTHETIC.names())}; valid: "
                              f"{', '.join(SYNTHETIC.names())}")
        if self.eval_lengths is None:
            self.eval_lengths = [self.length]
        checks = {"length": self.length, "eval_examples": self.eval_examples,
                  "eval_tokens": 1 if self.eval_tokens is None else self.eval_tokens}
        checks.update({f"eval_lengths[{i}]": v for i, v in enumerate(self.eval_lengths)})
        for key, value in checks.items():
            if value <= 0:
                raise ConfigError(f"task_options.{key} must be positive, got {value}")

    def examples_at(self, length: int) -> int:
        if self.eval_tokens is None:
            return self.eval_examples
        return min(self.eval_examples, max(16, self.eval_tokens // length))

    @property
    def max_length(self) -> int:
        return max([self.length, *self.eval_lengths])

    def to_dict(self) -> dict:
        """The flat ``task_options`` mapping these options were read from."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "generator"}
        return {**own, **dataclasses.asdict(self.generator)}


def parse_options(data: dict, source: str = "config") -> SyntheticOptions:
    """Split flat ``task_options`` into ``SyntheticOptions`` and the generator's knobs."""
    data = dict(data or {})
    own = [f.name for f in dataclasses.fields(SyntheticOptions) if f.name != "generator"]
    options = convert(SyntheticOptions, {k: v for k, v in data.items() if k in own},
                      "task_options", source)
    cls = SYNTHETIC.get(options.name)
    knobs = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in own and key not in knobs:
            raise ConfigError(f"{source}: unknown config key 'task_options.{key}'"
                              f"{closest(key, own + knobs)}; valid keys for synthetic task "
                              f"{options.name!r}: {', '.join(own + knobs)}")
    options.generator = convert(cls, {k: v for k, v in data.items() if k in knobs},
                                "task_options", source)
    for length in [options.length, *options.eval_lengths]:
        try:
            options.generator.check_length(length)
        except ConfigError as e:
            raise ConfigError(f"{source}: task_options: {e}") from None
    return options


class SyntheticMetric(Metric):
    """``accuracy`` over scored positions (for regression, the rate of
    ``|error| < tolerance``) and, for regression, ``mse``."""

    def __init__(self, generator: SyntheticGenerator):
        self.directions = {"accuracy": "max", **({"mse": "min"} if generator.regression else {})}
        self.generator = generator
        self.correct, self.n, self.sq = 0, 0, 0.0

    def update(self, result: LossSum, batch: Batch) -> None:
        out = result.outputs
        wanted = batch.targets[batch.extras["scored"]]
        if self.generator.regression:
            error = out[:, 0] - wanted.float()
            self.correct += int((error.abs() < self.generator.tolerance).sum())
            self.sq += float(error.square().sum())
        else:
            self.correct += int((out.argmax(-1) == wanted).sum())
        self.n += int(wanted.numel())

    def compute(self) -> dict[str, float]:
        out = {"accuracy": self.correct / max(self.n, 1)}
        if self.generator.regression:
            out["mse"] = self.sq / max(self.n, 1)
        return out


@register_objective("synthetic", SyntheticOptions, sources=("synthetic",))
class Synthetic(Objective):
    """Train a backbone on one synthetic generator; report ``val_loss``, ``accuracy``
    (over scored positions; for ``adding`` the rate of ``|error| < 0.04``, and ``mse``)
    and ``accuracy@L`` at each of ``eval_lengths``."""

    parse_options = staticmethod(parse_options)

    def __init__(self, config):
        self._eval_sets: dict[int, list[Batch]] = {}
        super().__init__(config)
        self.generator = self.options.generator

    def context(self):
        ctx = super().context()
        return dataclasses.replace(ctx, max_length=self.options.max_length, label_kind=None)

    def make_source(self) -> SyntheticSource:
        return SyntheticSource(self.config.data, self.context(), generator=self.options.generator,
                               length=self.options.length)

    def sync_model(self) -> None:
        """Fill the model's input size from the generator (vocabulary or feature count) and
        raise ``context_length`` to the longest length evaluated."""
        cfg, g = self.config.model, self.options.generator
        if g.input_dim is not None:
            if cfg.input_dim not in (None, g.input_dim):
                raise ConfigError(f"model.input_dim is {cfg.input_dim} but synthetic task "
                                  f"{type(g).__name__} has {g.input_dim} features")
            cfg.input, cfg.input_dim, cfg.vocab_size = "features", g.input_dim, None
        else:
            if cfg.input not in (None, "tokens"):
                raise ConfigError(f"synthetic task {type(g).__name__} gives tokens; "
                                  f"model.input must be 'tokens', got {cfg.input!r}")
            cfg.input = "tokens"
            if cfg.vocab_size is None:
                cfg.vocab_size = g.vocab_size
            elif cfg.vocab_size != g.vocab_size:
                raise ConfigError(f"model.vocab_size is {cfg.vocab_size} but synthetic task "
                                  f"{type(g).__name__} has {g.vocab_size} tokens "
                                  "(leave model.vocab_size unset to take the task's)")
        cfg.context_length = max(cfg.context_length, self.options.max_length)

    def build_head(self, backbone) -> ScoredHead:
        cfg, g = self.config.model, self.generator
        tie = (backbone.embed if cfg.tie_embeddings and isinstance(backbone.embed, nn.Embedding)
               and g.n_classes == cfg.vocab_size else None)
        return ScoredHead(cfg.d_model, g.n_classes, regression=g.regression, tie_to=tie)

    def metric(self) -> SyntheticMetric:
        return SyntheticMetric(self.generator)

    def _eval_set(self, length: int) -> list[Batch]:
        if length not in self._eval_sets:
            # as many tokens per batch as in training, whatever the length
            tokens = self.config.train.batch_size * self.options.length
            self._eval_sets[length] = self.source.held_out(
                length, self.options.examples_at(length), max(1, tokens // length))
        return self._eval_sets[length]

    def evaluators(self):
        return {"val": self.evaluate}

    def evaluate(self, model) -> dict[str, float]:
        lengths = sorted({self.options.length, *self.options.eval_lengths})
        results = {n: self.evaluate_batches(model, self._eval_set(n), name=f"L{n}") for n in lengths}
        own = results[self.options.length]
        metrics = {"val_loss": own["val_loss"], "accuracy": own["accuracy"]}
        if "mse" in own:
            metrics["mse"] = own["mse"]
        for n in self.options.eval_lengths:
            metrics[f"accuracy@{n}"] = results[n]["accuracy"]
        return metrics

    def load_data_state(self, state: dict) -> None:
        super().load_data_state(state)
        self._eval_sets.clear()

    def pipeline(self, model, run_dir=None) -> "SyntheticPipeline":
        return SyntheticPipeline(self, model, run_dir)


class SyntheticPipeline(Pipeline):
    """A trained synthetic-task model (what ``seqlab.load`` returns for these runs)."""

    @property
    def generator(self) -> SyntheticGenerator:
        return self.objective.generator

    @property
    def options(self) -> SyntheticOptions:
        return self.objective.options

    def evaluate(self, length: int | None = None, *, examples: int = 256, batch_size: int = 16,
                 seed: int = 0, max_batches: int | None = None) -> dict[str, float]:
        """Loss and accuracy on fresh sequences of ``length`` (default: the training length)."""
        if length is not None and not isinstance(length, int):
            raise ConfigError("a synthetic run evaluates on fresh sequences it draws itself; "
                              "give a length, not data")
        batches = self.objective.source.held_out(length or self.options.length, examples,
                                                 batch_size, seed)
        result = self.objective.evaluate_batches(self.model, batches, name="eval")
        return {"loss": result.pop("val_loss"), **result}


SyntheticTask = Synthetic  # the class's name before objectives had a registry
