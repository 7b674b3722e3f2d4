"""The ``synthetic`` source: batches drawn from a synthetic generator.

The generator and its lengths are the ``synthetic`` objective's options, so the source's
own options are empty. Training batch ``(step, micro)`` is drawn from a stream seeded by
hashing ``(seed, step, micro)``; evaluation sets at each length from their own streams,
never a training batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from seqlab.data.batch import Batch
from seqlab.data.sampling import restored_seed
from seqlab.data.sources import Batches, DataSource, SourceContext, register_source
from seqlab.data.synthetic import SyntheticGenerator
from seqlab.errors import DataError

TRAIN_STREAM, EVAL_STREAM = 0, 1


def torch_generator(*entropy: int) -> torch.Generator:
    """A generator seeded by hashing ``entropy`` (numpy's SeedSequence), so nearby
    tuples such as (seed, step) and (seed, step + 1) give unrelated streams."""
    words = [int(e) & 0xFFFFFFFFFFFFFFFF for e in entropy]
    seed = int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) >> 1
    return torch.Generator().manual_seed(seed)


@dataclass
class SyntheticSourceOptions:
    """No options: the ``synthetic`` objective's ``task_options`` name the generator."""

    source: str = "synthetic"


def _batch(b) -> Batch:
    return Batch(b.inputs, b.targets, extras={"scored": b.scored})


@register_source("synthetic", SyntheticSourceOptions, labels=("scored",), inputs="tokens")
class SyntheticSource(DataSource):
    """Sequences from ``generator`` at the training ``length``.

    Args:
        generator: the synthetic task.
        length: training sequence length.
    """

    def __init__(self, options: SyntheticSourceOptions, ctx: SourceContext, *,
                 generator: SyntheticGenerator, length: int):
        super().__init__(options, ctx)
        self.generator, self.length = generator, length
        self.input_kind = "features" if generator.input_dim is not None else "tokens"
        self.seed = ctx.seed

    @property
    def input_dim(self) -> int | None:
        return self.generator.input_dim

    def load(self, tokenizer=None, fitted=None) -> None:
        self.attach(tokenizer, fitted)

    def train_batch(self, step: int, micro: int) -> Batch:
        b = self.generator.sample(self.ctx.batch_size, self.length,
                                  torch_generator(self.seed, TRAIN_STREAM, step, micro))
        return _batch(b)

    def held_out(self, length: int, examples: int, batch_size: int, seed: int | None = None
                 ) -> list[Batch]:
        """A fixed held-out set at ``length``, from its own seeded stream."""
        seed = self.seed if seed is None else seed
        batches, done = [], 0
        while done < examples:
            size = min(batch_size, examples - done)
            b = self.generator.sample(size, length,
                                      torch_generator(seed, EVAL_STREAM, length, len(batches)))
            batches.append(_batch(b))
            done += size
        return batches

    def eval_sets(self) -> dict[str, Batches]:
        raise DataError("synthetic evaluation sets are per length (see SyntheticObjective)")

    def state_dict(self) -> dict:
        return {"seed": self.seed, "length": self.length, "batch_size": self.ctx.batch_size,
                "generator": dataclasses.asdict(self.generator)}

    def load_state_dict(self, state: dict) -> None:
        self.seed = restored_seed(state, self.state_dict(), "the same task options")
