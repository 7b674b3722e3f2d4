"""Which examples make up each batch: a pure function of (seed, step, micro-step).

Training walks the examples in epochs. Epoch ``e`` is a permutation of all examples
drawn from its own seeded stream; batch ``k`` of the epoch is a slice of it. The batch
for any step is computed directly, so exact resume restores the data position without
replaying anything, and only one epoch's index plan (N integers) is ever held.

With bucketing, each pool of ``batch_size * bucket_span`` consecutive examples of the
permutation is sorted by length before it is cut into batches, and the batches of the
epoch are then shuffled, so a batch holds examples of similar length (little padding)
while every epoch still sees every example once in a random order.
"""

from __future__ import annotations

import numpy as np

from seqlab.errors import DataError


def seeded_rng(*entropy: int) -> np.random.Generator:
    """A generator seeded by hashing ``entropy`` (NumPy's SeedSequence), so nearby tuples
    such as (seed, epoch) and (seed, epoch + 1) give unrelated streams."""
    return np.random.default_rng(np.random.SeedSequence([int(e) & 0xFFFFFFFF for e in entropy]))


TRAIN_STREAM, ORDER_STREAM, EVAL_STREAM = 11, 12, 13


class ExampleSampler:
    """Training batches of example indices.

    Args:
        lengths: (N,) length of every training example.
        batch_size: examples per batch (the last batch of an epoch may be smaller).
        seed: run seed.
        grad_accum: micro-batches per optimizer step; batch ``step * grad_accum + micro``
            of the epoch sequence is the one for ``(step, micro)``.
        bucket: group examples of similar length (see the module docstring).
        bucket_span: batches per sorted pool when bucketing.
    """

    def __init__(self, lengths: np.ndarray, *, batch_size: int, seed: int, grad_accum: int = 1,
                 bucket: bool = False, bucket_span: int = 50):
        if len(lengths) == 0:
            raise DataError("there are no training examples")
        if batch_size < 1 or grad_accum < 1 or bucket_span < 1:
            raise ValueError("batch_size, grad_accum and bucket_span must be positive")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.grad_accum = batch_size, seed, grad_accum
        self.bucket, self.bucket_span = bucket, bucket_span
        self.batches_per_epoch = -(-len(self.lengths) // batch_size)
        self._plan: tuple[int, list[np.ndarray]] | None = None

    def _epoch(self, epoch: int) -> list[np.ndarray]:
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        order = seeded_rng(self.seed, TRAIN_STREAM, epoch).permutation(len(self.lengths))
        bs = self.batch_size
        if not self.bucket:
            batches = [order[i:i + bs] for i in range(0, len(order), bs)]
        else:
            pool = bs * self.bucket_span
            batches = []
            for start in range(0, len(order), pool):
                chunk = order[start:start + pool]
                chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
                batches += [chunk[i:i + bs] for i in range(0, len(chunk), bs)]
            shuffle = seeded_rng(self.seed, ORDER_STREAM, epoch).permutation(len(batches))
            batches = [batches[i] for i in shuffle]
        self._plan = (epoch, batches)
        return batches

    def indices(self, step: int, micro: int = 0) -> np.ndarray:
        """Example indices of the batch for optimizer step ``step``, micro-batch ``micro``."""
        if step < 0 or not 0 <= micro < self.grad_accum:
            raise ValueError(f"step must be >= 0 and micro in [0, {self.grad_accum}), "
                             f"got {step} and {micro}")
        index = step * self.grad_accum + micro
        epoch, k = divmod(index, self.batches_per_epoch)
        return self._epoch(epoch)[k]

    def state_dict(self) -> dict:
        return {"seed": self.seed, "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                "bucket": self.bucket, "bucket_span": self.bucket_span,
                "n_examples": len(self.lengths), "n_positions": int(self.lengths.sum())}

    def load_state_dict(self, state: dict) -> None:
        """Restore the seed; refuse a position saved for other data or batch settings."""
        self.seed = restored_seed(state, self.state_dict(), "the same data and batch settings")
        self._plan = None


def restored_seed(saved: dict, current: dict, same: str) -> int:
    """The seed of a saved data position, after checking that every other entry matches
    this run's (a batch is a function of all of them).

    Raises:
        DataError: a key is missing or differs, naming both values and what to keep.
    """
    for key in current:
        if key not in saved:
            raise DataError(f"saved data state has no {key!r}")
        if key != "seed" and saved[key] != current[key]:
            raise DataError(f"saved data state has {key} {saved[key]} but this run has "
                            f"{current[key]}; resume with {same}")
    return int(saved["seed"])


def eval_plan(lengths: np.ndarray, *, batch_size: int, max_batches: int | None,
              seed: int) -> list[np.ndarray]:
    """Evaluation batches: every example once (or, with ``max_batches``, a fixed seeded
    subset of ``max_batches * batch_size`` examples, the same at every evaluation),
    sorted by length so batches carry little padding."""
    index = np.arange(len(lengths))
    if max_batches is not None and len(index) > max_batches * batch_size:
        index = np.sort(seeded_rng(seed, EVAL_STREAM).permutation(len(index))[: max_batches * batch_size])
    index = index[np.argsort(np.asarray(lengths)[index], kind="stable")]
    return [index[i:i + batch_size] for i in range(0, len(index), batch_size)]
