"""Trainer hooks: how fine-tuning, regularisers and extra evaluations plug into training
without the Trainer knowing about any of them.

A hook may act once the model is built (``setup``: load weights, freeze parameters),
add a term to every step's loss (``loss_term``: a penalty toward reference weights), and
add named evaluators (``evaluators``: each logged under its own name). The Trainer builds
the hooks a config asks for (``init``, ``train.freeze``) and takes any others a Python
caller passes (``Trainer(config, run_dir, hooks=[...])``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from seqlab.errors import CheckpointError, ConfigError, DataError, SeqlabError
from seqlab.models.model import SequenceModel
from seqlab.models.weights import load_model_tensors, model_tensors
from seqlab.rundir import (CONFIG_FILE, EWC_FILE, FORGETTING_FILE, INIT_REPORT_FILE,
                           TENSORBOARD_DIR, WEIGHTS_FILE, check_run_dir, read_json, read_weights,
                           write_json)
from seqlab.weights_file import load_weights, save_weights
from seqlab.train.optim import check_patterns, matches

logger = logging.getLogger("seqlab")


class TrainerHook:
    """Base class: override what the hook needs; every method is optional."""

    def setup(self, trainer, *, resume: bool) -> None:
        """Called once the model is built, before the optimizer is (and, on resume,
        before the checkpoint is loaded into the model)."""

    def loss_term(self, trainer) -> Tensor | None:
        """A term added to the step's loss (after the data loss is averaged), or None."""
        return None

    def evaluators(self, trainer) -> dict[str, Callable[[nn.Module], dict[str, float]]]:
        """Extra named evaluators; their metrics are logged as ``name/metric``."""
        return {}

    def on_start(self, trainer) -> None:
        """Called once training is about to start: after set-up and, on resume, once the
        checkpoint is restored (``trainer.step`` is the step training continues from)."""

    def on_record(self, trainer, record: dict) -> None:
        """Called with every record written to ``metrics.jsonl`` (training log lines and
        evaluations), after it is written."""

    def teardown(self, trainer) -> None:
        """Called when ``fit`` ends, normally or not."""


class TensorBoardLog(TrainerHook):
    """``train.tensorboard``: every number of ``metrics.jsonl`` also as a TensorBoard
    scalar under the same name, in ``RUN/tensorboard/``. On resume, events past the
    resumed step are purged, as the metrics log drops its lines past it, so curves never
    hold a step twice. Needs the ``tensorboard`` package."""

    def __init__(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("train.tensorboard needs the tensorboard package: pip install "
                              "tensorboard (or pip install 'seqlab[tensorboard]')") from None
        self._writer_class = SummaryWriter
        self.writer = None

    def on_start(self, trainer) -> None:
        if not trainer.is_main:
            return  # rank 0 writes the run; on_record is called there only
        # Events at later steps than the one training continues from are hidden (a fresh
        # run: every event a crashed earlier attempt left).
        purge = trainer.step + 1 if trainer.step else 0
        self.writer = self._writer_class(str(trainer.run_dir / TENSORBOARD_DIR), purge_step=purge)

    def on_record(self, trainer, record: dict) -> None:
        step = record.get("step", 0)
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)

    def teardown(self, trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class InitFromRun(TrainerHook):
    """Initialise from another run's weights: take every tensor whose name matches
    ``include`` (default: all), not ``exclude``, and whose shape fits; report what was
    loaded, what stays newly initialised and what was dropped (and why) in the log and in
    ``init.json``. With ``penalty`` > 0 it adds ``penalty * sum ||w - w_loaded||^2`` over
    the loaded parameters to the loss (L2-SP, Li et al. 2018), keeping fine-tuning close
    to what was learned before."""

    def __init__(self, run: str, *, include: list[str] | None = None,
                 exclude: list[str] | None = None, penalty: float = 0.0):
        self.run, self.include, self.exclude = run, include, list(exclude or [])
        self.penalty = penalty
        self.reference: dict[str, Tensor] = {}
        self.report: dict = {}

    def _selected(self, name: str) -> bool:
        return (self.include is None or matches(name, self.include)) and not matches(name, self.exclude)

    def setup(self, trainer, *, resume: bool) -> None:
        try:
            run_dir = check_run_dir(self.run)
        except CheckpointError as e:
            raise CheckpointError(f"init.run: {e}") from None
        if not (run_dir / WEIGHTS_FILE).exists():
            raise CheckpointError(f"init.run: {run_dir} has no {WEIGHTS_FILE} to initialise from")
        tensors, source = read_weights(run_dir)
        model = trainer.model
        own = model_tensors(model)
        names = list(own)
        for key, patterns in (("init.include", self.include or []), ("init.exclude", self.exclude)):
            check_patterns(patterns, names + list(tensors), key)
        loaded, dropped = [], {}
        for name, t in tensors.items():
            if not self._selected(name):
                dropped[name] = "excluded"
            elif name not in own:
                dropped[name] = "not in this model"
            elif tuple(t.shape) != tuple(own[name].shape):
                dropped[name] = f"shape {tuple(t.shape)}, this model has {tuple(own[name].shape)}"
            else:
                loaded.append(name)
        new = [n for n in names if n not in loaded]
        # Also on resume: a checkpoint may hold only what trained (LoRA), not the base.
        with torch.no_grad():
            for name in loaded:
                own[name].copy_(tensors[name].to(own[name].dtype))
        params = dict(model.named_parameters())
        self.reference = {n: tensors[n].to(params[n].device, params[n].dtype)
                          for n in loaded if n in params and params[n].requires_grad}
        self.report = {"run": str(run_dir), "loaded": loaded, "new": new, "dropped": dropped}
        if not resume:
            write_json(trainer.run_dir / INIT_REPORT_FILE, self.report)
            logger.info("initialised from %s: %d tensors loaded, %d new (%s), %d dropped%s",
                        source, len(loaded), len(new), ", ".join(new[:6]) + (" ..." if len(new) > 6 else ""),
                        len(dropped), "".join(f"; {n}: {why}" for n, why in list(dropped.items())[:6]))

    def loss_term(self, trainer) -> Tensor | None:
        if not self.penalty or not self.reference:
            return None
        params = dict(trainer.model.named_parameters())
        total = sum((params[n] - ref).float().square().sum() for n, ref in self.reference.items()
                    if params[n].requires_grad)
        return self.penalty * total


class PretrainingObjective(TrainerHook):
    """The init run's own objective, kept beside fine-tuning: it is scored through the
    current backbone and the init run's head (fixed, a probe) on the init run's own data.

    - ``measure`` (``init.measure_forgetting``, on by default): the loss on the init
      run's validation data before training is the baseline; every evaluation logs
      ``pretrain/loss`` (with the objective's other metrics) and ``pretrain/forgetting``,
      the rise over the baseline. Without the init run's data a warning says so and
      nothing is measured.
    - ``replay`` (``init.replay``): every step adds ``replay`` times the init objective's
      mean loss on one of its own training batches (drawn by step, so resume stays
      exact), which keeps the backbone able to do the old task.
    - ``ewc`` (``init.ewc``, Kirkpatrick et al., 2017): a penalty ``ewc * sum F (w -
      w*)^2`` over the loaded weights, with ``F`` the diagonal empirical Fisher: the
      squared gradient of each example's own loss (its mean over the example's counted
      tokens, so ``ewc`` does not scale with length), averaged over the examples of
      ``ewc_batches`` of the init objective's training batches, at the loaded weights.
      Per example, not per batch: the square of a batch's mean gradient is about
      1/batch of that, and near a minimum far less. ``F`` is computed once and kept in
      ``RUN/ewc.safetensors``.
    """

    def __init__(self, run: str, *, measure: bool = True, replay: float = 0.0, ewc: float = 0.0,
                 ewc_batches: int = 8):
        self.run = Path(run)
        self.measure, self.replay, self.ewc, self.ewc_batches = measure, replay, ewc, ewc_batches
        self.objective = None
        self.baseline: float | None = None
        self.fisher: dict[str, Tensor] = {}
        self.reference: dict[str, Tensor] = {}

    def setup(self, trainer, *, resume: bool) -> None:
        from seqlab.config import RunConfig
        from seqlab.tasks import OBJECTIVES

        try:
            config = RunConfig.from_yaml(self.run / CONFIG_FILE)
            objective = OBJECTIVES.get(config.task).cls(config)
            objective.prepare(self.run, resume=True)  # its tokenizer, its data
        except (SeqlabError, OSError) as e:
            reason = " ".join(str(e).split())
            if self.replay or self.ewc:
                raise DataError(f"init.replay and init.ewc need the data of {self.run}, which "
                                f"cannot be read: {reason}") from None
            logger.warning("forgetting is not measured: the data of %s cannot be read (%s)",
                           self.run, reason)
            return
        base = objective.build_model()
        tensors, source = read_weights(self.run)
        load_model_tensors(base, tensors, source=source)
        self.head = base.head.to(trainer.device).eval().requires_grad_(False)
        self.objective = objective
        path = trainer.run_dir / FORGETTING_FILE
        if resume and path.exists():
            self.baseline = read_json(path)["baseline"]
        if self.ewc:
            self._fisher(trainer, tensors, resume=resume)

    def _probe(self, model) -> SequenceModel:
        return SequenceModel(model.backbone, self.head)

    def _loss(self, model, step: int) -> Tensor:
        """The init objective's mean loss on its training batch for ``step``."""
        batch = self.objective.train_batch(step, 0).to(next(model.parameters()).device)
        result = self.objective.loss(self._probe(model), batch)
        return result.total / max(float(result.count), 1.0)

    def _fisher(self, trainer, tensors: dict[str, Tensor], *, resume: bool) -> None:
        params = {n: p for n, p in trainer.model.named_parameters()
                  if p.requires_grad and n in tensors and tuple(tensors[n].shape) == tuple(p.shape)}
        self.reference = {n: tensors[n].to(p.device, p.dtype) for n, p in params.items()}
        path = trainer.run_dir / EWC_FILE
        if resume and path.exists():
            self.fisher = {n: t.to(params[n].device) for n, t in load_weights(path)[0].items()}
            return
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        was_training = trainer.model.training
        trainer.model.eval()  # the Fisher of the model as it is, without dropout noise
        device, examples = next(trainer.model.parameters()).device, 0
        probe = self._probe(trainer.model)
        try:
            for k in range(self.ewc_batches):
                batch = self.objective.train_batch(k, 0).to(device)
                for i in range(batch.size):
                    result = self.objective.loss(probe, batch.row(i))
                    if float(result.count) == 0:  # nothing of this example is scored
                        continue
                    grads = torch.autograd.grad(result.total / float(result.count),
                                                list(params.values()), allow_unused=True)
                    for (name, _), g in zip(params.items(), grads):
                        if g is not None:
                            fisher[name] += g.detach().square()
                    examples += 1
        finally:
            trainer.model.train(was_training)
        self.fisher = {n: f / max(examples, 1) for n, f in fisher.items()}
        trainer.run_dir.mkdir(parents=True, exist_ok=True)
        save_weights(path, {n: t.cpu() for n, t in self.fisher.items()}, {"run": str(self.run)})
        logger.info("ewc: diagonal Fisher of %s over %d examples (%d batches), %d tensors",
                    self.run, examples, self.ewc_batches, len(fisher))

    def loss_term(self, trainer) -> Tensor | None:
        if self.objective is None or not (self.replay or self.ewc):
            return None
        term = 0.0
        if self.replay:
            term = term + self.replay * self._loss(trainer.model, trainer.step)
        if self.ewc:
            params = dict(trainer.model.named_parameters())
            term = term + self.ewc * sum((self.fisher[n] * (params[n] - ref).square()).sum()
                                         for n, ref in self.reference.items())
        return term

    def on_start(self, trainer) -> None:
        if self.objective is None:
            return
        self.objective.autocast = trainer.autocast
        if not self.measure or self.baseline is not None:
            return
        metrics = self.objective.evaluators()["val"](self._probe(trainer.model))
        self.baseline = metrics["val_loss"]
        if trainer.is_main:
            write_json(trainer.run_dir / FORGETTING_FILE, {"run": str(self.run), "baseline": self.baseline})
        logger.info("%s's objective before fine-tuning: loss %.4f", self.run, self.baseline)

    def evaluators(self, trainer):
        if self.objective is None or not self.measure:
            return {}

        def evaluate(model):
            metrics = self.objective.evaluators()["val"](self._probe(model))
            return {**metrics, "forgetting": metrics["val_loss"] - self.baseline}

        return {"pretrain": evaluate}


class Freeze(TrainerHook):
    """Keep the parameters whose names match any of ``patterns`` fixed (no gradient, not
    in the optimizer)."""

    def __init__(self, patterns: list[str]):
        self.patterns = list(patterns)

    def setup(self, trainer, *, resume: bool) -> None:
        named = list(trainer.model.named_parameters())
        check_patterns(self.patterns, [n for n, _ in named], "train.freeze")
        frozen = 0
        for name, param in named:
            if matches(name, self.patterns):
                param.requires_grad_(False)
                frozen += param.numel()
        total = sum(p.numel() for _, p in named)
        logger.info("froze %s of %s parameters (%s)", f"{frozen:,}", f"{total:,}",
                    ", ".join(self.patterns))


class ExtraEvaluators(TrainerHook):
    """Named evaluators given in Python (``name -> fn(model) -> metrics``)."""

    def __init__(self, evaluators: dict[str, Callable[[nn.Module], dict[str, float]]]):
        self._evaluators = dict(evaluators)

    def evaluators(self, trainer):
        return dict(self._evaluators)


def config_hooks(config) -> list[TrainerHook]:
    """The hooks a run config asks for: ``init`` and ``train.freeze``, in that order (so
    loaded weights can then be frozen), and ``train.tensorboard``."""
    hooks: list[TrainerHook] = []
    init = config.init
    if init.run is None and (init.include is not None or init.exclude or init.penalty
                             or init.replay or init.ewc):
        raise ConfigError("init.include, init.exclude, init.penalty, init.replay and init.ewc need "
                          "init.run (or seqlab finetune --from RUN)")
    if config.init.run is not None:
        hooks.append(InitFromRun(config.init.run, include=config.init.include,
                                 exclude=config.init.exclude, penalty=config.init.penalty))
        if init.measure_forgetting or init.replay or init.ewc:
            hooks.append(PretrainingObjective(init.run, measure=init.measure_forgetting,
                                              replay=init.replay, ewc=init.ewc,
                                              ewc_batches=init.ewc_batches))
    if config.train.freeze:
        hooks.append(Freeze(config.train.freeze))
    if config.train.tensorboard:
        hooks.append(TensorBoardLog())
    return hooks
