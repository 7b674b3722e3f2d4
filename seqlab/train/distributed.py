"""Several training processes on PyTorch's own engine (``torch.distributed``).

seqlab launches nothing itself: ``torchrun`` starts one process per rank and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; the Trainer
sees them and joins the process group (gloo on CPU, NCCL on GPU). Without them it runs
alone and nothing here costs anything.

How the ranks split the work, so that N ranks train exactly as one does:

- ``train.batch_size`` is the *global* batch. Every rank computes the same global batch
  (a pure function of the seed, step and micro-step) and keeps its contiguous share of
  the rows (:func:`shard`), so a batch is a pure function of (seed, step, rank, world
  size), and the rows the ranks hold together are the one-process batch.
- Gradients are averaged by DDP; the Trainer sums the loss counts across ranks and
  divides by the global count, so a step follows the exact mean over every counted
  item of the global batch, as in one process.
- Rank 0 writes (config, metrics, weights, checkpoints) and evaluates; the others wait
  at a barrier and take its results. Checkpoints hold every rank's RNG state.
- Decisions (stop on a signal, set-up failed somewhere) are taken together through a
  collective, so no rank is left waiting in one that the others never enter.
"""

from __future__ import annotations

import datetime
import logging
import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

from seqlab.data.batch import Batch
from seqlab.data.sampling import seeded_rng
from seqlab.errors import SeqlabError, TrainingError

logger = logging.getLogger("seqlab")

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """Whether this process was started by torchrun (or a launcher setting its variables)
    as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def restarted() -> bool:
    """Whether torchrun restarted this worker group after a failure (elastic restart)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


class Ranks:
    """This process's place among the training processes, and the collectives the
    Trainer needs. ``Ranks()`` is one process alone: every method is then free."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, *,
                 owns_group: bool = False):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.owns_group = owns_group

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def join(cls, device: torch.device, timeout_s: float) -> "Ranks":
        """Join the process group torchrun describes (or use one the caller already
        initialised); ``Ranks()`` when this process runs alone.

        Raises:
            TrainingError: the group did not form within ``timeout_s`` seconds.
        """
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(),
                       int(os.environ.get("LOCAL_RANK", "0")))
        if not launched():
            return cls()
        missing = [name for name in LAUNCH_VARIABLES if name not in os.environ]
        if missing:
            raise TrainingError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but "
                                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                                "not set; start training with torchrun")
        backend = "nccl" if device.type == "cuda" else "gloo"
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, dist.DistError) as e:
            raise TrainingError(
                f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}: the process group "
                f"at {where} did not form within {timeout_s:g} s (train.dist_timeout): not "
                f"every rank joined, or the address is unreachable ({_first_line(e)})") from None
        ranks = cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                    owns_group=True)
        logger.info("rank %d of %d joined the %s process group at %s", ranks.rank,
                    ranks.world_size, backend, where)
        return ranks

    def device(self, device: torch.device) -> torch.device:
        """Each rank's own GPU (``LOCAL_RANK``) when training on CUDA."""
        if self.enabled and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    # -- the work each rank does ------------------------------------------------------
    def shard(self, batch: Batch) -> Batch:
        return shard(batch, self.rank, self.world_size) if self.enabled else batch

    # -- collectives --------------------------------------------------------------------
    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over the ranks (float64, so counts stay exact)."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64)
        with self.talking():
            dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order (on every rank)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        with self.talking():
            dist.all_gather_object(out, obj)
        return out

    def from_main(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        with self.talking():
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            with self.talking():
                dist.barrier()

    @contextmanager
    def together(self, what: str):
        """Run the block on every rank; if it fails on any, it fails on all: the rank
        that failed raises its own error, the others a TrainingError naming it."""
        if not self.enabled:
            yield
            return
        error = None
        try:
            yield
        except Exception as e:  # noqa: BLE001 - re-raised below, after the others know
            error = e
        failed = self.gather(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        culprits = [(r, msg) for r, msg in enumerate(failed) if msg is not None]
        if culprits:
            rank, msg = culprits[0]
            raise TrainingError(f"{what} failed on rank {rank}: {msg}")

    @contextmanager
    def talking(self):
        """Turn a collective that fails because another rank is gone into a TrainingError."""
        try:
            yield
        except SeqlabError:
            raise
        except (RuntimeError, dist.DistError) as e:
            raise TrainingError(f"rank {self.rank} of {self.world_size} lost contact with the "
                                f"other ranks ({_first_line(e)}); one of them stopped or died: "
                                "see its log") from None


def shard(batch: Batch, rank: int, world_size: int) -> Batch:
    """Rank ``rank``'s contiguous share of ``batch``'s rows (sizes differ by at most one).

    Shares are contiguous so that a length-bucketed batch stays bucketed on each rank.
    Every tensor keeps its width: which trailing dimensions run along the sequence is the
    objective's business (a regression target of K numbers is not), and padding never
    counts. A rank gets no row when the batch has fewer rows than there are ranks.
    """
    n = batch.size
    start, stop = n * rank // world_size, n * (rank + 1) // world_size

    def rows(t):
        return None if t is None else t[start:stop]

    return Batch(rows(batch.inputs), rows(batch.targets), rows(batch.padding_mask),
                 {k: rows(v) for k, v in batch.extras.items()}, rows(batch.index))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def seed_for_rank(seed: int, rank: int) -> int:
    """Rank ``rank``'s torch seed: its own random stream (dropout) after the shared
    initialisation, derived from the run's seed by hashing."""
    return int(seeded_rng(seed, 17, rank).integers(2**62))
