"""The Trainer: any Task, AdamW + warmup/cosine, accumulation, clipping, bf16 autocast,
evaluation, best/last checkpoints and exact resume.

It knows nothing of what is modelled: the Task provides the model, the batches (a
pure function of the step), the loss and the metrics.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from seqlab.config import RunConfig
from seqlab.errors import CheckpointError, ConfigError, TrainingError
from seqlab.io import atomic_write, remove_stale
from seqlab.models.weights import load_model_tensors, model_tensors
from seqlab.tasks import TASKS
from seqlab.tasks.base import Task, batch_to
from seqlab.train.checkpoint import CheckpointManager, save_weights
from seqlab.train.metrics import MetricsLog, plot_losses
from seqlab.train.schedule import warmup_cosine

logger = logging.getLogger("seqlab")

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    metrics: dict = field(default_factory=dict)  # last evaluation
    best_val_loss: float | None = None
    interrupted: bool = False
    seconds: float = 0.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available; use auto or cpu")
    return device


def no_decay_parameters(model: nn.Module) -> set[int]:
    """ids of parameters a module lists in its ``no_weight_decay`` attribute (names
    relative to that module), e.g. an SSM's A and dt, which decay must not pull to 0."""
    ids = set()
    for module in model.modules():
        for name in getattr(module, "no_weight_decay", ()):
            ids.add(id(module.get_parameter(name)))
    return ids


def build_optimizer(model: nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not biases, norms, or parameters a
    module exempts), fused when offered."""
    params = [p for p in model.parameters() if p.requires_grad]
    exempt = no_decay_parameters(model)
    decay = [p for p in params if p.dim() >= 2 and id(p) not in exempt]
    no_decay = [p for p in params if p.dim() < 2 or id(p) in exempt]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, **kwargs)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Train ``config`` into ``run_dir`` (a directory laid out as in DESIGN.md §3).

    Args:
        config: the run's config.
        run_dir: where the run lives; must not already hold a run unless ``resume``.
        resume: continue from the newest complete checkpoint in ``run_dir/trainer``.
        restore_rng: restore the saved RNG state on resume (only tests turn this off).
    """

    def __init__(self, config: RunConfig, run_dir: str | Path, *, resume: bool = False,
                 restore_rng: bool = True):
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.restore_rng = restore_rng
        self.checkpoints = CheckpointManager(self.run_dir / "trainer",
                                             keep=config.train.keep_checkpoints)
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl")
        self.task: Task = TASKS.get(config.task)(config)

    # -- set-up ------------------------------------------------------------------------
    def _check_run_dir(self) -> None:
        # A directory whose run never wrote weights holds nothing worth keeping.
        has_run = (self.run_dir / WEIGHTS_FILE).exists() or self.checkpoints.latest_step() is not None
        if self.resume:
            if not self.run_dir.is_dir():
                raise CheckpointError(f"run directory {self.run_dir} does not exist; there is "
                                      "nothing to resume (drop --resume to start a new run)")
        elif has_run:
            raise CheckpointError(f"run directory {self.run_dir} already holds a run; pass "
                                  "--resume to continue it or --out to choose a new directory")

    def _setup(self):
        cfg = self.config.train
        self._check_run_dir()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints.clean_stale()
        for leftover in [*remove_stale(self.run_dir), *remove_stale(self.run_dir / "plots")]:
            logger.info("removed %s left by an interrupted write", leftover)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.device = resolve_device(cfg.device)
        torch.manual_seed(self.config.seed)
        self.task.prepare(self.run_dir, resume=self.resume)
        self.model = self.task.build_model().to(self.device)
        self.optimizer = build_optimizer(self.model, cfg)
        self.autocast = self._autocast_factory()
        self.task.autocast = self.autocast
        self.step, self.best = 0, None
        if self.resume:
            self._restore()
        else:
            atomic_write(self.run_dir / CONFIG_FILE, self.config.to_yaml())
            self.task.save_artifacts(self.run_dir)
            self.metrics.truncate_after(0)

    def _autocast_factory(self):
        if self.config.train.precision == "bf16":
            return lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        return None

    def _check_same_model(self) -> None:
        """A resumed run may change ``train`` and ``data`` settings, not what was built."""
        path = self.run_dir / CONFIG_FILE
        if not path.exists():
            return
        stored, current = RunConfig.from_yaml(path).to_dict(), self.config.to_dict()
        diffs = [f"task: run has {stored['task']!r}, config has {current['task']!r}"] \
            if stored["task"] != current["task"] else []
        for section in ("model", "task_options", "tokenizer"):
            old, new = stored[section], current[section]
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    diffs.append(f"{section}.{key}: run has {old.get(key)!r}, config has "
                                 f"{new.get(key)!r}")
        if diffs:
            raise ConfigError(f"cannot resume {self.run_dir} with a different model or task ("
                              + "; ".join(diffs) + "); train.* and data.* may change on resume")

    def _restore(self) -> None:
        self._check_same_model()
        ckpt = self.checkpoints.load_latest(device="cpu")
        load_model_tensors(self.model, ckpt.model, source=str(ckpt.path))
        state = ckpt.state
        self.optimizer.load_state_dict(state["optimizer"])
        self.task.load_data_state(state["data"])
        if self.restore_rng:
            set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best = state.get("best_val_loss")
        self.metrics.truncate_after(self.step)
        atomic_write(self.run_dir / CONFIG_FILE, self.config.to_yaml())
        logger.info("resumed %s at step %d", self.run_dir, self.step)

    # -- the loop ----------------------------------------------------------------------
    def fit(self, *, until_step: int | None = None) -> TrainResult:
        """Train to ``train.steps`` (or stop early at ``until_step`` with a checkpoint,
        for time-boxed jobs; the schedule still follows ``train.steps``)."""
        start_time = time.perf_counter()
        self._setup()
        cfg = self.config.train
        result = TrainResult(self.run_dir, self.step, best_val_loss=self.best)
        save_every = cfg.save_every or cfg.eval_every
        progress = self._progress()
        window_items, window_start = 0, time.perf_counter()
        self.model.train()
        flushing = cfg.flush_denormal and torch.set_flush_denormal(True)  # False: unsupported
        try:
            with GracefulInterrupt() as interrupt:
                while self.step < cfg.steps:
                    loss, items = self._train_step()
                    self.step += 1
                    window_items += items
                    if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                        now = time.perf_counter()
                        rate = window_items / max(now - window_start, 1e-9)
                        window_items, window_start = 0, now
                        self.metrics.append({"step": self.step, "loss": loss, "lr": self._lr,
                                             f"{self.task.item_name}_per_s": round(rate, 1)})
                        if progress is not None:
                            progress.set_postfix({"loss": f"{loss:.3f}",
                                                  f"{self.task.item_name}/s": f"{rate:,.0f}"})
                    if progress is not None:
                        progress.update(1)
                    last = self.step == cfg.steps
                    if self.step % cfg.eval_every == 0 or last:
                        result.metrics = self._evaluate()
                    if self.step % save_every == 0 or last:
                        self._save_checkpoint()
                    if (interrupt.requested or self.step == until_step) and not last:
                        if interrupt.requested:
                            logger.warning("interrupted at step %d; saving a checkpoint", self.step)
                        self._save_checkpoint()
                        result.interrupted = interrupt.requested
                        break
        finally:
            if flushing:
                torch.set_flush_denormal(False)  # torch's default
            if progress is not None:
                progress.close()
        if not (self.run_dir / WEIGHTS_FILE).exists():
            self._save_weights()  # no evaluation ran: the last weights are the ones to use
        plot_losses(self.metrics.read(), self.run_dir / "plots" / "loss.png")
        result.step, result.best_val_loss = self.step, self.best
        result.seconds = time.perf_counter() - start_time
        return result

    def _train_step(self) -> tuple[float, int]:
        cfg = self.config.train
        self._lr = warmup_cosine(self.step, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                                 total_steps=cfg.steps, min_lr_ratio=cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr
        total_loss, total_items = 0.0, 0
        for micro in range(cfg.grad_accum):
            batch = batch_to(self.task.train_batch(self.step, micro), self.device)
            with self.autocast() if self.autocast else contextlib.nullcontext():
                loss, items = self.task.loss(self.model, batch)
            (loss / cfg.grad_accum).backward()
            total_loss += float(loss.detach()) / cfg.grad_accum
            total_items += items
        if not math.isfinite(total_loss):
            self.optimizer.zero_grad(set_to_none=True)
            latest = self.checkpoints.latest_step()
            kept = f"the checkpoint at step {latest} is intact" if latest is not None else "no checkpoint was written"
            raise TrainingError(f"loss became {total_loss} at step {self.step + 1}; training "
                                f"stopped before updating the weights ({kept}). Try a lower "
                                "train.lr, train.grad_clip, or precision fp32")
        if cfg.grad_clip and cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total_loss, total_items

    def _evaluate(self) -> dict:
        metrics = self.task.evaluate(self.model)
        self.metrics.append({"step": self.step, **metrics})
        logger.info("step %d: %s", self.step,
                    ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        val = metrics.get("val_loss")
        if val is not None and math.isfinite(val) and (self.best is None or val < self.best):
            self.best = val
            self._save_weights()
        plot_losses(self.metrics.read(), self.run_dir / "plots" / "loss.png")
        return metrics

    def _save_weights(self) -> None:
        save_weights(self.run_dir / WEIGHTS_FILE, model_tensors(self.model),
                     {"step": str(self.step), "format": "seqlab"})

    def _save_checkpoint(self) -> None:
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "rng": rng_state(),
                 "data": self.task.data_state(), "best_val_loss": self.best}
        self.checkpoints.save(self.step, model=model_tensors(self.model), state=state)

    def _progress(self):
        if not self.config.train.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.config.train.steps, initial=self.step, desc="train",
                    unit="step", dynamic_ncols=True, mininterval=0.5)


class GracefulInterrupt:
    """Turn the first Ctrl-C into a request to stop after the current step, so the
    checkpoint saved then is consistent; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("stopping after this step (press Ctrl-C again to abort at once)")

    def __enter__(self) -> "GracefulInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> bool:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
