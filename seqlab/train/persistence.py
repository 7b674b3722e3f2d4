"""What a training run keeps and takes back: the weights it saves, its checkpoints, and
resuming from them (a mixin of the Trainer, which owns the loop).

A resumed run must build the same model as the one saved; a LoRA run keeps only what
trains (its base run holds the rest); a sharded (FSDP) run gathers whole weights for
rank 0 to write, and each checkpoint names the world size and every rank's RNG state.
"""

from __future__ import annotations

import logging

from seqlab.config import RunConfig
from seqlab.errors import ConfigError
from seqlab.io import atomic_write
from seqlab.models.lora import base_weights_digest
from seqlab.models.weights import check_model_tensors, load_model_tensors, model_tensors
from seqlab.rundir import CONFIG_FILE, WEIGHTS_FILE
from seqlab.train.distributed import (full_model_tensors, full_optimizer_state,
                                      load_full_model_tensors, load_full_optimizer_state)
from seqlab.train.runtime import rng_state, set_rng_state
from seqlab.weights_file import save_weights

logger = logging.getLogger("seqlab")


class RunPersistence:
    """Saving and resuming; the Trainer supplies ``run_dir``, ``config``, ``model``,
    ``optimizer``, ``objective``, ``checkpoints``, ``metrics``, ``ranks`` and its flags."""

    def _check_same_model(self) -> None:
        """A resumed run may change ``train`` and ``data`` settings, not what was built."""
        path = self.run_dir / CONFIG_FILE
        if not path.exists():
            return
        stored, current = RunConfig.from_yaml(path).to_dict(), self.config.to_dict()
        diffs = [f"task: run has {stored['task']!r}, config has {current['task']!r}"] \
            if stored["task"] != current["task"] else []
        for section in ("model", "task_options", "tokenizer", "lora"):
            old, new = stored[section], current[section]
            for key in sorted(set(old) | set(new)):
                if section == "tokenizer" and key == "path" and new.get(key) is None:
                    continue  # filled in when the run started (from init.run); resume reads the run's own
                if old.get(key) != new.get(key):
                    diffs.append(f"{section}.{key}: run has {old.get(key)!r}, config has "
                                 f"{new.get(key)!r}")
        if diffs:
            raise ConfigError(f"cannot resume {self.run_dir} with a different model or task ("
                              + "; ".join(diffs) + "); train.* and data.* may change on resume")

    def _restore(self) -> None:
        self._check_same_model()
        ckpt = self.checkpoints.load_latest(device="cpu")
        if bool(ckpt.state.get("fsdp")) != self.fsdp:
            raise ConfigError(f"cannot resume {self.run_dir} with train.fsdp "
                              f"{str(self.fsdp).lower()}: its checkpoint at step {ckpt.step} was "
                              f"written with train.fsdp {str(not self.fsdp).lower()}, and the "
                              "optimizer state is kept differently; keep train.fsdp as it was")
        if self.fsdp:
            check_model_tensors(self._whole, ckpt.model, source=str(ckpt.path))
            load_full_model_tensors(self.model, ckpt.model)
        elif self.lora:  # the base run is loaded already (init.run); this is what trained
            check_model_tensors({n: t for n, t in model_tensors(self.model).items() if n in self._kept},
                                ckpt.model, source=str(ckpt.path))
            self.model.load_state_dict(ckpt.model, strict=False)
        else:
            load_model_tensors(self.model, ckpt.model, source=str(ckpt.path))
        state = ckpt.state
        # Rates come from the config, which may change on resume; the rest from the checkpoint.
        base_lrs = [g["base_lr"] for g in self.optimizer.param_groups]
        try:
            if self.fsdp:
                load_full_optimizer_state(self.model, self.optimizer, state["optimizer"])
            else:
                self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as e:
            raise ConfigError(f"cannot resume {self.run_dir}: the checkpoint's optimizer does not "
                              f"fit this config's parameter groups ({e}); train.freeze and "
                              "train.param_groups must stay as they were") from None
        for group, base in zip(self.optimizer.param_groups, base_lrs):
            group["base_lr"] = base
        self.objective.load_data_state(state["data"])
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.ranks.world_size:
            raise ConfigError(
                f"cannot resume {self.run_dir} on {self.ranks.world_size} rank(s): its "
                f"checkpoint at step {state['step']} was written by {saved_world}. The batches "
                "would be the same, but each rank's random stream (dropout) cannot be carried "
                f"to another number of ranks; resume with torchrun --nproc-per-node "
                f"{saved_world} (or on one process when it was 1)")
        if self.restore_rng:
            set_rng_state(state["rng_ranks"][self.ranks.rank] if self.ranks.enabled else state["rng"])
        self.step = int(state["step"])
        self.best = _saved_best(state, self.config.train.best_metric)
        if self.is_main:
            self.metrics.truncate_after(self.step)
            atomic_write(self.run_dir / CONFIG_FILE, self.config.to_yaml())
        logger.info("resumed %s at step %d", self.run_dir, self.step)

    def _model_tensors(self) -> dict:
        """The whole weights; sharded, a collective after which rank 0 holds them."""
        tensors = (full_model_tensors(self.model, list(self._whole)) if self.fsdp
                   else model_tensors(self.model))
        if self.lora:
            tensors = {n: t for n, t in tensors.items() if n in self._kept}
        return tensors

    def _save_weights(self) -> None:
        tensors = self._model_tensors()
        if self.is_main:
            meta = {"step": str(self.step), "format": "seqlab"}
            if self.lora:
                meta.update(lora_base_sha256=base_weights_digest(self.config.init.run))
            save_weights(self.run_dir / WEIGHTS_FILE, tensors, meta)

    def _save_checkpoint(self) -> None:
        """Rank 0 writes the checkpoint, with every rank's RNG state; the others wait."""
        rngs = self.ranks.gather(rng_state())
        tensors = self._model_tensors()
        optimizer = full_optimizer_state(self.model, self.optimizer) if self.fsdp else None
        with self.ranks.together("saving a checkpoint"):
            if self.is_main:
                state = {"step": self.step, "optimizer": optimizer or self.optimizer.state_dict(),
                         "rng": rngs[0], "data": self.objective.data_state(),
                         "best": {"metric": self.config.train.best_metric, "value": self.best}}
                if self.ranks.enabled:
                    state.update(world_size=self.ranks.world_size, rng_ranks=rngs)
                    if self.fsdp:
                        state["fsdp"] = True
                self.checkpoints.save(self.step, model=tensors, state=state)


def _saved_best(state: dict, metric: str) -> float | None:
    """The best value a checkpoint holds for ``metric``; None when it ranked by another
    one (the next evaluation then sets it). Checkpoints written before
    ``train.best_metric`` existed hold ``best_val_loss``."""
    best = state.get("best")
    if isinstance(best, dict):
        return best["value"] if best.get("metric") == metric else None
    return state.get("best_val_loss") if metric == "val_loss" else None
