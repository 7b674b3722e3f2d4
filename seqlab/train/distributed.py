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
- With ``train.fsdp``, parameters, gradients and optimizer state are sharded instead of
  replicated (FSDP2, one unit per block); every rank then takes part in evaluation and
  in gathering the whole weights for a save, which rank 0 writes in the usual format.
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
from torch import Tensor, nn

from seqlab.data.batch import Batch
from seqlab.models.heads import LossSum
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
        timeout = datetime.timedelta(seconds=timeout_s)
        try:
            if "TORCHELASTIC_RUN_ID" in os.environ:
                dist.init_process_group(backend, store=_attempt_store(timeout), timeout=timeout,
                                        rank=int(os.environ["RANK"]),
                                        world_size=int(os.environ["WORLD_SIZE"]))
            else:
                dist.init_process_group(backend, timeout=timeout)
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
    def talking(self, *, only_comm_errors: bool = False):
        """Turn a collective that fails because another rank is gone into a TrainingError.
        ``only_comm_errors``: the block does more than talk (a training step, whose
        backward reduces gradients): only errors the transport raised are turned."""
        try:
            yield
        except SeqlabError:
            raise
        except (RuntimeError, dist.DistError) as e:
            if not self.enabled or (only_comm_errors and not _is_comm_error(e)):
                raise
            raise TrainingError(f"rank {self.rank} of {self.world_size} lost contact with the "
                                f"other ranks ({_first_line(e)}); one of them stopped or died: "
                                "see its log") from None


class ObjectiveLoss(nn.Module):
    """The objective's loss over the model as a module's ``forward``, which is what DDP
    wraps. A rank whose share of a batch is empty still runs a (zero) loss over every
    trainable parameter, so its gradient buckets take part in the reduction."""

    def __init__(self, objective, model: nn.Module):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch) -> LossSum:
        if batch.size == 0:
            zero = sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0
            return LossSum(zero, 0.0)
        return self.objective.loss(self.model, batch)


def _attempt_store(timeout: datetime.timedelta) -> dist.Store:
    """torchrun's key-value store, seen under a prefix of its own for each attempt.

    A worker group that torchrun restarts meets in the same store as the one that
    failed, whose keys (each rank's gloo address among them) are still there; without a
    prefix per attempt the new ranks find the dead ones' addresses and cannot connect.
    """
    hosted_by_agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          int(os.environ["WORLD_SIZE"]),
                          is_master=not hosted_by_agent and os.environ["RANK"] == "0",
                          timeout=timeout, multi_tenant=not hosted_by_agent)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"seqlab/attempt-{attempt}", store)


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


def _is_comm_error(error: BaseException) -> bool:
    """Whether ``error`` came from the transport between ranks (gloo raises plain
    RuntimeErrors, NCCL DistBackendErrors)."""
    return isinstance(error, dist.DistError) or any(
        mark in str(error) for mark in ("gloo", "Gloo", "NCCL", "Connection reset", "Connection closed"))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def seed_for_rank(seed: int, rank: int) -> int:
    """Rank ``rank``'s torch seed: its own random stream (dropout) after the shared
    initialisation, derived from the run's seed by hashing."""
    return int(seeded_rng(seed, 17, rank).integers(2**62))


# -- FSDP: parameters, gradients and optimizer state sharded over the ranks -------------------
def fully_shard_model(model: nn.Module) -> None:
    """Shard ``model`` over the ranks with FSDP2 (``fully_shard``): each block is one
    unit (its parameters gathered just before it runs and freed after), the rest
    (embedding, final norm, head) the root unit. ``model.loss`` triggers the gathering
    as ``forward`` does, so the objectives' losses and evaluations work unchanged."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    for block in model.backbone.blocks:
        fully_shard(block)
    fully_shard(model)
    register_fsdp_forward_method(model, "loss")


_FULL = dict(full_state_dict=True, cpu_offload=True)


def full_model_tensors(model: nn.Module, names: list[str]) -> dict[str, Tensor]:
    """The whole weights of a sharded model (a collective: every rank calls it; rank 0
    gets the tensors, the others an empty dict), under ``names``: those the unsharded
    model's ``model_tensors`` gives, so tied weights are stored once as usual."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    tensors = get_model_state_dict(model, options=StateDictOptions(**_FULL))
    return {name: tensors[name] for name in names if name in tensors}


def load_full_model_tensors(model: nn.Module, tensors: dict[str, Tensor]) -> None:
    """Load whole weights (as every rank read them from a checkpoint) into a sharded
    model; each rank keeps its own shard. Tied names absent from ``tensors`` are filled
    by their twin."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True, strict=False))


def full_optimizer_state(model: nn.Module, optimizer) -> dict:
    """The optimizer state of a sharded model, whole and keyed by parameter name (a
    collective; rank 0 gets it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(**_FULL))


def load_full_optimizer_state(model: nn.Module, optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state,
                             options=StateDictOptions(full_state_dict=True))
