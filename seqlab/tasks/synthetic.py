"""Synthetic long-range tasks (copy, selective copy, MQAR, induction, adding, ListOps)
as a Trainer task: a backbone, an output head read at the scored positions, and
accuracy at the training length and at any other lengths.

Options come from ``task_options`` as one flat mapping: the keys of
``SyntheticOptions`` plus the knobs of the chosen generator
(``seqlab.data.synthetic``), e.g. ``{name: copy, length: 256, n_copy: 10}``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from seqlab.config import RunConfig, convert
from seqlab.data.synthetic import SYNTHETIC, SyntheticGenerator
from seqlab.errors import ConfigError, DataError
from seqlab.models.build import OutputHead, build_backbone
from seqlab.models.model import SequenceModel
from seqlab.registry import closest
from seqlab.tasks.base import TASKS, Task

logger = logging.getLogger("seqlab")


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
    """

    name: str = "copy"
    length: int = 256
    eval_lengths: list[int] | None = None
    eval_examples: int = 256
    eval_tokens: int | None = None

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


def parse_options(data: dict, source: str = "config"
                  ) -> tuple[SyntheticOptions, SyntheticGenerator]:
    """Split flat ``task_options`` into ``SyntheticOptions`` and the generator's knobs."""
    data = dict(data or {})
    own = [f.name for f in dataclasses.fields(SyntheticOptions)]
    options = convert(SyntheticOptions, {k: v for k, v in data.items() if k in own},
                      "task_options", source)
    cls = SYNTHETIC.get(options.name)
    knobs = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in own and key not in knobs:
            raise ConfigError(f"{source}: unknown config key 'task_options.{key}'"
                              f"{closest(key, own + knobs)}; valid keys for synthetic task "
                              f"{options.name!r}: {', '.join(own + knobs)}")
    generator = convert(cls, {k: v for k, v in data.items() if k in knobs}, "task_options", source)
    for length in [options.length, *options.eval_lengths]:
        try:
            generator.check_length(length)
        except ConfigError as e:
            raise ConfigError(f"{source}: task_options: {e}") from None
    return options, generator


def sync_model_config(config: RunConfig, generator: SyntheticGenerator, max_length: int) -> None:
    """Fill the model's input size from the generator (vocabulary or feature count) and
    raise ``context_length`` to the longest length evaluated."""
    cfg = config.model
    if generator.input_dim is not None:
        if cfg.input_dim not in (None, generator.input_dim):
            raise ConfigError(f"model.input_dim is {cfg.input_dim} but synthetic task "
                              f"{type(generator).__name__} has {generator.input_dim} features")
        cfg.input, cfg.input_dim, cfg.vocab_size = "features", generator.input_dim, None
    else:
        if cfg.input != "tokens":
            raise ConfigError(f"synthetic task {type(generator).__name__} gives tokens; "
                              f"model.input must be 'tokens', got {cfg.input!r}")
        if cfg.vocab_size is None:
            cfg.vocab_size = generator.vocab_size
        elif cfg.vocab_size != generator.vocab_size:
            raise ConfigError(f"model.vocab_size is {cfg.vocab_size} but synthetic task "
                              f"{type(generator).__name__} has {generator.vocab_size} tokens "
                              "(leave model.vocab_size unset to take the task's)")
    if cfg.context_length < max_length:
        cfg.context_length = max_length


class SyntheticModel(SequenceModel):
    """Backbone + output head (classes, or one value for regression)."""

    def scored_logits(self, inputs: Tensor, scored: Tensor) -> Tensor:
        """Outputs at the scored positions only, (N, C) in row-major order: the head
        runs on N positions, not B x T."""
        hidden = self.backbone(inputs).hidden  # (B, T, D)
        return self.head(hidden[scored])  # (N, C)


def build_synthetic_model(config: RunConfig, generator: SyntheticGenerator) -> SyntheticModel:
    cfg = config.model
    backbone = build_backbone(cfg)
    tie = (backbone.embed if cfg.tie_embeddings and cfg.input == "tokens"
           and generator.n_classes == cfg.vocab_size else None)
    return SyntheticModel(backbone, OutputHead(cfg.d_model, generator.n_classes, tie_to=tie))


def scored_loss(model: SyntheticModel, generator: SyntheticGenerator, inputs: Tensor,
                targets: Tensor, scored: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean loss over scored positions (cross-entropy, or MSE for regression), the
    per-position correctness (N,) and squared errors (N,) (zeros for classification)."""
    out = model.scored_logits(inputs, scored).float()  # (N, C)
    wanted = targets[scored]  # (N,)
    if generator.regression:
        error = out[:, 0] - wanted.float()
        return (error ** 2).mean(), error.abs() < generator.tolerance, error ** 2
    loss = F.cross_entropy(out, wanted)
    return loss, out.argmax(-1) == wanted, torch.zeros_like(wanted, dtype=torch.float)


@torch.no_grad()
def evaluate_batches(model: SyntheticModel, generator: SyntheticGenerator, batches, *,
                     device, autocast=None) -> dict[str, float]:
    """Loss (mean over scored positions), accuracy and, for regression, MSE."""
    was_training = model.training
    model.eval()
    loss_sum, correct, sq_sum, n = 0.0, 0, 0.0, 0
    try:
        for inputs, targets, scored in batches:
            inputs, targets, scored = inputs.to(device), targets.to(device), scored.to(device)
            with autocast() if autocast else contextlib.nullcontext():
                loss, ok, sq = scored_loss(model, generator, inputs, targets, scored)
            count = int(scored.sum())
            loss_sum += float(loss) * count
            correct += int(ok.sum())
            sq_sum += float(sq.sum())
            n += count
    finally:
        model.train(was_training)
    if n == 0:
        raise DataError("no scored positions to evaluate")
    metrics = {"loss": loss_sum / n, "accuracy": correct / n}
    if generator.regression:
        metrics["mse"] = sq_sum / n
    return metrics


def torch_generator(*entropy: int) -> torch.Generator:
    """A generator seeded by hashing ``entropy`` (numpy's SeedSequence), so nearby
    tuples such as (seed, step) and (seed, step + 1) give unrelated streams."""
    words = [int(e) & 0xFFFFFFFFFFFFFFFF for e in entropy]
    seed = int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) >> 1
    return torch.Generator().manual_seed(seed)


TRAIN_STREAM, EVAL_STREAM = 0, 1


def eval_batches(generator: SyntheticGenerator, length: int, examples: int, batch_size: int,
                 seed: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """A fixed held-out set at ``length``: its own seeded stream, never a training batch."""
    batches, done = [], 0
    while done < examples:
        size = min(batch_size, examples - done)
        b = generator.sample(size, length, torch_generator(seed, EVAL_STREAM, length, len(batches)))
        batches.append((b.inputs, b.targets, b.scored))
        done += size
    return batches


@TASKS.register("synthetic")
class SyntheticTask(Task):
    """Train a backbone on one synthetic generator; report ``val_loss``, ``accuracy``
    (over scored positions; for ``adding`` the rate of ``|error| < 0.04``, and ``mse``)
    and ``accuracy@L`` at each of ``eval_lengths``."""

    item_name = "tokens"

    def __init__(self, config: RunConfig):
        super().__init__(config)
        self.options, self.generator = parse_options(config.task_options)
        self.seed = config.seed
        self._eval_sets: dict[int, list] = {}

    @property
    def max_length(self) -> int:
        return max([self.options.length, *self.options.eval_lengths])

    def prepare(self, run_dir: Path | None, *, resume: bool = False) -> None:
        sync_model_config(self.config, self.generator, self.max_length)
        logger.info("synthetic task %s at length %d (chance accuracy %.3f)", self.options.name,
                    self.options.length, self.generator.chance)

    def build_model(self) -> SyntheticModel:
        return build_synthetic_model(self.config, self.generator)

    def train_batch(self, step: int, micro: int):
        b = self.generator.sample(self.config.train.batch_size, self.options.length,
                                  torch_generator(self.seed, TRAIN_STREAM, step, micro))
        return b.inputs, b.targets, b.scored

    def loss(self, model: SyntheticModel, batch) -> tuple[Tensor, int]:
        inputs, targets, scored = batch
        loss, _, _ = scored_loss(model, self.generator, inputs, targets, scored)
        return loss, inputs.shape[0] * inputs.shape[1]

    def _eval_set(self, length: int) -> list:
        if length not in self._eval_sets:
            # as many tokens per batch as in training, whatever the length
            tokens = self.config.train.batch_size * self.options.length
            batch_size = max(1, tokens // length)
            self._eval_sets[length] = eval_batches(self.generator, length,
                                                   self.options.examples_at(length),
                                                   batch_size, self.seed)
        return self._eval_sets[length]

    def evaluate(self, model: SyntheticModel) -> dict[str, float]:
        device = next(model.parameters()).device
        results = {length: evaluate_batches(model, self.generator, self._eval_set(length),
                                             device=device, autocast=self.autocast)
                   for length in sorted({self.options.length, *self.options.eval_lengths})}
        own = results[self.options.length]
        metrics = {"val_loss": own["loss"], "accuracy": own["accuracy"]}
        if "mse" in own:
            metrics["mse"] = own["mse"]
        for length in self.options.eval_lengths:
            metrics[f"accuracy@{length}"] = results[length]["accuracy"]
        return metrics

    def data_state(self) -> dict:
        return {"seed": self.seed, "name": self.options.name, "length": self.options.length,
                "batch_size": self.config.train.batch_size,
                "generator": dataclasses.asdict(self.generator)}

    def load_data_state(self, state: dict) -> None:
        current = self.data_state()
        for key in current:
            if key not in state:
                raise DataError(f"saved data state has no {key!r}")
            if key != "seed" and state[key] != current[key]:
                raise DataError(f"saved data state has {key} {state[key]} but this run has "
                                f"{current[key]}; resume with the same task options")
        self.seed = int(state["seed"])

    @classmethod
    def load_pipeline(cls, run_dir: Path, config: RunConfig, *, device: str = "cpu"):
        from seqlab.api import load_weights_into

        options, generator = parse_options(config.task_options, str(run_dir))
        sync_model_config(config, generator, max([options.length, *options.eval_lengths]))
        model = build_synthetic_model(config, generator)
        load_weights_into(model, run_dir)
        return SyntheticPipeline(model.to(device).eval(), config, generator, options, run_dir)


@dataclass
class SyntheticPipeline:
    """A trained synthetic-task model (what ``seqlab.load`` returns for these runs)."""

    model: SyntheticModel
    config: RunConfig
    generator: SyntheticGenerator
    options: SyntheticOptions
    run_dir: Path | None = None

    def evaluate(self, length: int | None = None, *, examples: int = 256, batch_size: int = 16,
                 seed: int = 0) -> dict[str, float]:
        """Loss and accuracy on fresh sequences of ``length`` (default: the training length)."""
        batches = eval_batches(self.generator, length or self.options.length, examples,
                               batch_size, seed)
        device = next(self.model.parameters()).device
        return evaluate_batches(self.model, self.generator, batches, device=device)
