"""The Trainer: any objective, AdamW + warmup/cosine, exact gradient accumulation,
clipping, bf16 autocast, named evaluators, best/last checkpoints, hooks, exact resume,
and several ranks under torchrun (DDP; see ``seqlab.train.distributed``).

It knows nothing of what is modelled: the objective provides the model, the batches (a
pure function of the step), the loss (a sum and a count) and the evaluators; hooks
(``seqlab.train.hooks``) add initialisation, frozen parameters, loss terms and further
evaluators.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from seqlab.errors import CheckpointError, ConfigError, TrainingError
from seqlab.io import atomic_write, remove_path, remove_stale
from seqlab.models.heads import LossSum
from seqlab.models.lora import apply_lora
from seqlab.models.weights import model_tensors
from seqlab.rundir import (CONFIG_FILE, FRESH_RUN_FILES, METRICS_FILE, PLOTS_DIR, TRAINER_DIR,
                           WEIGHTS_FILE)
from seqlab.tasks import OBJECTIVES
from seqlab.train.checkpoint import CheckpointManager
from seqlab.train.distributed import ObjectiveLoss, Ranks, fully_shard_model, seed_for_rank, shard
from seqlab.train.hooks import TrainerHook, config_hooks
from seqlab.train.metrics import MetricsLog
from seqlab.train.optim import build_optimizer
from seqlab.train.persistence import RunPersistence
from seqlab.train.run_plots import RunPlots
from seqlab.train.runtime import GracefulInterrupt, ProcessSettings, resolve_device
from seqlab.train.schedule import warmup_cosine

logger = logging.getLogger("seqlab")


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    metrics: dict = field(default_factory=dict)  # last evaluation
    best: float | None = None  # the best value of ``best_metric`` (the weights kept)
    best_metric: str = "val_loss"
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def best_val_loss(self) -> float | None:
        """The lowest validation loss, when the run keeps its weights by it."""
        return self.best if self.best_metric == "val_loss" else None


class Trainer(RunPersistence):
    """Train ``config`` into ``run_dir`` (a directory laid out as in ``seqlab.rundir``).

    Args:
        config: the run's config; the trainer works on its own copy.
        run_dir: where the run lives; must not already hold a run unless ``resume``.
        resume: continue from the newest complete checkpoint in ``run_dir/trainer``;
            ``"auto"``: resume when there is one, else start afresh (what a worker group
            that torchrun restarted does).
        restore_rng: restore the saved RNG state on resume (only tests turn this off).
        hooks: further hooks, run after the ones the config asks for.
    """

    def __init__(self, config, run_dir: str | Path, *, resume: bool | str = False,
                 restore_rng: bool = True, hooks: list[TrainerHook] | None = None):
        self.config = config.copy()
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.restore_rng = restore_rng
        self.checkpoints = CheckpointManager(self.run_dir / TRAINER_DIR,
                                             keep=self.config.train.keep_checkpoints)
        self.metrics = MetricsLog(self.run_dir / METRICS_FILE)
        self.objective = OBJECTIVES.get(self.config.task).cls(self.config)
        self.hooks = config_hooks(self.config) + list(hooks or [])
        self.ranks = Ranks()  # joined in fit(): torchrun's ranks, or this process alone
        self.plots = RunPlots(self.run_dir / PLOTS_DIR, self.metrics.read, self.objective.write_plots)

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run (rank 0, or the only process)."""
        return self.ranks.is_main

    @property
    def task(self):
        """The objective (its name when objectives were called tasks)."""
        return self.objective

    # -- set-up ------------------------------------------------------------------------
    def _check_run_dir(self) -> None:
        # A directory whose run never wrote weights holds nothing worth keeping.
        has_run = (self.run_dir / WEIGHTS_FILE).exists() or self.checkpoints.latest_step() is not None
        if self.resume == "auto":
            self.resume = self.checkpoints.latest_step() is not None
            logger.info("%s %s", "resuming" if self.resume else "starting", self.run_dir)
        if self.resume:
            if not self.run_dir.is_dir():
                raise CheckpointError(f"run directory {self.run_dir} does not exist; there is "
                                      "nothing to resume (drop --resume to start a new run)")
        elif has_run:
            raise CheckpointError(f"run directory {self.run_dir} already holds a run; pass "
                                  "--resume to continue it or --out to choose a new directory")
        elif self.run_dir.is_dir() and self.is_main:
            for name in FRESH_RUN_FILES:  # what an attempt that never saved left behind
                if (self.run_dir / name).exists():
                    remove_path(self.run_dir / name)

    def _setup(self):
        cfg = self.config.train
        self._check_run_dir()
        self.device = self.ranks.device(resolve_device(cfg.device))
        torch.manual_seed(self.config.seed)
        # Read the data before creating anything, so bad data leaves no empty run behind.
        self.objective.prepare(self.run_dir, resume=self.resume)
        self.best_mode = self.objective.selection(cfg.best_metric)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            self.checkpoints.clean_stale()
            for leftover in [*remove_stale(self.run_dir), *remove_stale(self.run_dir / PLOTS_DIR)]:
                logger.info("removed %s left by an interrupted write", leftover)
        self.model = self.objective.build_model().to(self.device)
        self.lora = bool(self.config.lora.rank)
        if self.lora and self.config.init.run is None:
            raise ConfigError("lora adapts a trained run: set init.run (or use seqlab finetune "
                              "--from RUN --mode lora)")
        if self.lora:  # before init loads the base run: the adapted modules keep its names
            lora = self.config.lora
            adapted = apply_lora(self.model, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
                                 targets=lora.targets, train=lora.train)
            logger.info("lora: rank-%d adapters on %d modules (%s)", lora.rank, len(adapted),
                        ", ".join(adapted[:4]) + (" ..." if len(adapted) > 4 else ""))
            asked = any("mixer" in target for target in lora.targets)
            if asked and not any(".mixer." in name for name in adapted):
                logger.warning("lora: the %s mixer has no Linear projections that lora.targets "
                               "match; only %s carry adapters", self.config.model.mixer,
                               ", ".join(sorted({name.rsplit(".", 1)[-1] for name in adapted})))
        if self.ranks.enabled:  # the same initial weights, then each rank its own dropout
            torch.manual_seed(seed_for_rank(self.config.seed, self.ranks.rank))
        if hasattr(self.model, "backbone"):
            self.model.backbone.checkpoint_blocks = cfg.activation_checkpointing
        elif cfg.activation_checkpointing or cfg.fsdp:
            raise ConfigError(f"train.{'fsdp' if cfg.fsdp else 'activation_checkpointing'} works on "
                              "single-stack models; encoder-decoders do not support it yet "
                              "(DDP does: leave train.fsdp false)")
        for hook in self.hooks:
            hook.setup(self, resume=self.resume)
        # A LoRA run keeps (in weights and checkpoints) only what trains; the rest is its base run's.
        self._kept = {n for n, p in self.model.named_parameters() if p.requires_grad} if self.lora else None
        self.fsdp = cfg.fsdp and self.ranks.enabled
        if cfg.fsdp and not self.fsdp:
            logger.info("train.fsdp: one process, nothing to shard")
        if self.fsdp:  # before the optimizer, which must hold the sharded parameters
            init = self.config.init
            if init.penalty or init.replay or init.ewc:
                raise ConfigError("init.penalty, init.replay and init.ewc do not work with "
                                  "train.fsdp yet (their terms read whole parameters, which FSDP "
                                  "shards); use DDP (train.fsdp: false) or drop them")
            self._whole = {k: t.to("meta") for k, t in model_tensors(self.model).items()}
            fully_shard_model(self.model)
        self.optimizer = build_optimizer(self.model, cfg)
        self.loss_module = ObjectiveLoss(self.objective, self.model)  # wrapped by _wrap()
        self.autocast = self._autocast_factory()
        self.objective.autocast = self.autocast
        self.step, self.best = 0, None
        if self.resume:
            self._restore()
        elif self.is_main:
            atomic_write(self.run_dir / CONFIG_FILE, self.config.to_yaml())
            self.objective.save_artifacts(self.run_dir)
            self.metrics.truncate_after(0)

    def _autocast_factory(self):
        if self.config.train.precision == "bf16":
            return lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        return None

    # -- the loop ----------------------------------------------------------------------
    def fit(self, *, until_step: int | None = None) -> TrainResult:
        """Train to ``train.steps`` (or stop early at ``until_step`` with a checkpoint,
        for time-boxed jobs; the schedule still follows ``train.steps``)."""
        start_time = time.perf_counter()
        cfg = self.config.train
        with ProcessSettings(num_threads=cfg.num_threads, flush_denormal=cfg.flush_denormal):
            self.ranks = Ranks.join(resolve_device(cfg.device), cfg.dist_timeout)
            try:
                with self.ranks.together("set-up"):
                    self._setup()
                self._wrap()
                result = TrainResult(self.run_dir, self.step, best=self.best,
                                     best_metric=cfg.best_metric)
                try:
                    for hook in self.hooks:
                        hook.on_start(self)
                    self._loop(result, until_step)
                finally:
                    for hook in self.hooks:
                        hook.teardown(self)
                if self.ranks.from_main(not (self.run_dir / WEIGHTS_FILE).exists()):
                    self._save_weights()  # no evaluation ran: the last weights are the ones to use
                if self.is_main:
                    self.plots.draw()
                self.ranks.barrier()
            finally:
                self.ranks.close()
        result.step, result.best = self.step, self.best
        result.seconds = time.perf_counter() - start_time
        return result

    def _wrap(self) -> None:
        """The module a training step calls: the objective's loss over the model, wrapped
        in DDP when there are several ranks (which then averages gradients in backward).
        Wrapping is a collective, so it waits until every rank's set-up succeeded."""
        if self.ranks.enabled and not self.fsdp:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            with self.ranks.talking():
                self.loss_module = DistributedDataParallel(self.loss_module, device_ids=device_ids,
                                                       forward_sync_buffers=False)
        if self.config.train.compile:
            # Compiled lazily at the first step; what torch cannot capture (its RNN
            # kernels) runs eagerly between graphs.
            self.loss_module = torch.compile(self.loss_module, backend=self.config.train.compile_backend)

    def _loop(self, result: TrainResult, until_step: int | None) -> None:
        cfg = self.config.train
        save_every = cfg.save_every or cfg.eval_every
        progress = self._progress()
        item = self.objective.item_name
        window = {"items": 0, "padded": 0, "start": time.perf_counter()}
        self.model.train()
        try:
            with GracefulInterrupt() as interrupt:
                while self.step < cfg.steps:
                    with self.ranks.talking(only_comm_errors=True):
                        loss, items, padded, stop = self._train_step(interrupt)
                    self.step += 1
                    window["items"] += items
                    window["padded"] += padded
                    if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                        now = time.perf_counter()
                        rate = window["items"] / max(now - window["start"], 1e-9)
                        record = {"step": self.step, "loss": loss, "lr": self._lr,
                                  f"{item}_per_s": round(rate, 1)}
                        if window["padded"]:
                            record["padding"] = round(window["padded"] / (window["padded"] + window["items"]), 4)
                        self._record(record)
                        window = {"items": 0, "padded": 0, "start": now}
                        if progress is not None:
                            progress.set_postfix({"loss": f"{loss:.3f}", f"{item}/s": f"{rate:,.0f}"})
                    if progress is not None:
                        progress.update(1)
                    last = self.step == cfg.steps
                    if self.step % cfg.eval_every == 0 or last:
                        result.metrics = self._evaluate()
                    saved = self.step % save_every == 0 or last
                    if saved:
                        self._save_checkpoint()
                    if (stop or self.step == until_step) and not last:
                        if stop:
                            logger.warning("%s at step %d; saving a checkpoint",
                                           interrupt.signal_name or "another rank was interrupted",
                                           self.step)
                        if not saved:
                            self._save_checkpoint()
                        result.interrupted = stop
                        break
        finally:
            if progress is not None:
                progress.close()

    def _train_step(self, interrupt: GracefulInterrupt | None = None) -> tuple[float, int, int, bool]:
        """One optimizer step. The micro-batches' loss sums are backpropagated as they
        come and the gradients divided by the step's total count afterwards, so the step
        follows the exact mean over every counted item, however padding falls.

        Returns the loss, real and padded positions, and whether to stop after this step
        (a signal reached ``interrupt``). With several ranks, each runs its share of every
        micro-batch; the sums, counts and stop requests are added up over the ranks in
        one collective, so every rank takes the same step and the same decision to stop."""
        cfg = self.config.train
        factor = warmup_cosine(self.step, lr=1.0, warmup_steps=cfg.warmup_steps,
                               total_steps=cfg.steps, min_lr_ratio=cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self._lr = cfg.lr * factor
        total, count, items, padded = 0.0, 0.0, 0, 0
        for micro in range(cfg.grad_accum):
            whole = self.objective.train_batch(self.step, micro)
            batch = self.ranks.shard(whole)
            idle = batch.size == 0
            if idle:  # fewer rows than ranks: run one row, count nothing, join the reduction
                batch = shard(whole, 0, whole.size)
            else:
                items, padded = items + self.objective.items(batch), padded + batch.n_padded
            batch = batch.to(self.device)
            # Gradients are averaged over the ranks in the last micro-batch's backward only.
            last = micro == cfg.grad_accum - 1
            with self._gradient_sync(last):
                with self.autocast() if self.autocast else contextlib.nullcontext():
                    result = self.loss_module(batch)
                if idle:
                    result = LossSum(result.total * 0.0, 0.0)
                result.total.backward()
            total = total + result.total.detach()
            count = count + result.count
        total, count, items, padded, stops = self.ranks.sum(
            [float(total), float(count), items, padded, float(bool(interrupt and interrupt.requested))])
        loss = total / count if count else float("nan")
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if count and grads:  # DDP left the mean over ranks: make it the mean over items
            torch._foreach_div_(grads, count / self.ranks.world_size)
        for hook in self.hooks:
            term = hook.loss_term(self)
            if term is not None:
                term.backward()
                loss += float(term.detach())
        if not math.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            latest = self.checkpoints.latest_step()
            kept = f"the checkpoint at step {latest} is intact" if latest is not None else "no checkpoint was written"
            raise TrainingError(f"loss became {loss} at step {self.step + 1}; training "
                                f"stopped before updating the weights ({kept}). Try a lower "
                                "train.lr, train.grad_clip, or precision fp32")
        if cfg.grad_clip and cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None],
                                           cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, int(items), int(padded), stops > 0

    def _gradient_sync(self, sync: bool):
        """A context in which backward averages gradients over the ranks only if ``sync``."""
        if not self.ranks.enabled or sync:
            if self.fsdp:
                self.model.set_requires_gradient_sync(True)
            return contextlib.nullcontext()
        if self.fsdp:
            self.model.set_requires_gradient_sync(False)
            return contextlib.nullcontext()
        return self.loss_module.no_sync()

    def _evaluate(self) -> dict:
        """Rank 0 evaluates (and keeps the best weights); the others wait and take its
        metrics. Sharded (FSDP), every forward pass is a collective, so every rank
        evaluates the same batches and reaches the same metrics."""
        if self.fsdp:
            return self._evaluate_here()
        metrics = None
        with self.ranks.together("evaluation"):
            if self.is_main:
                metrics = self._evaluate_here()
        metrics, self.best = self.ranks.from_main((metrics, self.best))
        return metrics

    def _evaluate_here(self) -> dict:
        metrics: dict[str, float] = {}
        evaluators = dict(self.objective.evaluators())
        for hook in self.hooks:
            evaluators.update(hook.evaluators(self))
        for name, evaluate in evaluators.items():
            found = evaluate(self.model)
            if name == "val":
                metrics.update(found)
            else:
                metrics.update({f"{name}/{key.removeprefix('val_')}": v for key, v in found.items()})
        self._record({"step": self.step, **metrics})
        logger.info("step %d: %s", self.step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        value = metrics.get(self.config.train.best_metric)
        if value is not None and math.isfinite(value) and (
                self.best is None or (value > self.best if self.best_mode == "max" else value < self.best)):
            self.best = value
            self._save_weights()
        if self.is_main:
            self.plots.evaluated_now()
        return metrics

    def _record(self, record: dict) -> None:
        """One line of ``metrics.jsonl``, then every hook's ``on_record`` (rank 0 only)."""
        if not self.is_main:
            return
        self.metrics.append(record)
        for hook in self.hooks:
            hook.on_record(self, record)

    def _progress(self):
        if not self.config.train.progress or not self.is_main:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.config.train.steps, initial=self.step, desc="train",
                    unit="step", dynamic_ncols=True, mininterval=0.5)
