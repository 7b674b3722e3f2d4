"""Generators that integrate or parse: the adding problem and ListOps."""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import ClassVar

import torch

from seqlab.data.synthetic.base import (SYNTHETIC, SyntheticBatch, SyntheticGenerator,
                                        _classification, _positive)
from seqlab.errors import ConfigError


@SYNTHETIC.register("adding")
@dataclass
class Adding(SyntheticGenerator):
    """The adding problem (Hochreiter & Schmidhuber 1997, §5.4; the variant of Le et al.
    2015, "IRNN"): two features per step, a value in [0, 1] and a marker; exactly one
    marker lies in each half. Target: the sum of the two marked values, at the last step.

    Regression; a prediction is correct when ``|error| < tolerance`` (0.04, the 1997
    paper's criterion). Chance: always answering 1.0 (the mean) is correct with
    probability ``2 tol - tol**2`` (0.078) on the triangular sum, with MSE 1/6.
    """

    tolerance: float = 0.04
    regression: ClassVar[bool] = True
    input_dim: ClassVar[int] = 2
    baseline_mse: ClassVar[float] = 1.0 / 6.0

    def __post_init__(self):
        if not 0.0 < self.tolerance < 1.0:
            raise ConfigError(f"Adding.tolerance must be in (0, 1), got {self.tolerance}")

    n_classes = property(lambda self: 1)
    chance = property(lambda self: 2 * self.tolerance - self.tolerance ** 2)
    min_length = property(lambda self: 2)

    def _sample(self, batch_size, length, generator):
        values = torch.rand(batch_size, length, generator=generator)
        half = length // 2
        first = torch.randint(0, half, (batch_size, 1), generator=generator)
        second = torch.randint(half, length, (batch_size, 1), generator=generator)
        markers = torch.zeros(batch_size, length)
        markers.scatter_(1, first, 1.0)
        markers.scatter_(1, second, 1.0)
        inputs = torch.stack([values, markers], dim=-1)  # (B, T, 2)
        targets = torch.zeros(batch_size, length)
        targets[:, -1] = (values * markers).sum(1)
        scored = torch.zeros(batch_size, length, dtype=torch.bool)
        scored[:, -1] = True
        return SyntheticBatch(inputs, targets, scored)


LISTOPS_OPS = ("[MAX", "[MIN", "[MED", "[SM")


def listops_value(op: str, args: list[int]) -> int:
    """The value of one ListOps operator; ``[MED`` is ``int(median)`` as in LRA."""
    if op == "[MAX":
        return max(args)
    if op == "[MIN":
        return min(args)
    if op == "[MED":
        return int(statistics.median(args))
    if op == "[SM":
        return sum(args) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


@SYNTHETIC.register("listops")
@dataclass
class ListOps(SyntheticGenerator):
    """ListOps (Nangia & Bowman 2018; the long version of Tay et al. 2021, "Long Range
    Arena", §2.2.1): a nested expression of MAX, MIN, MED (int median) and SM (sum mod 10)
    over digits, e.g. ``[MAX 4 3 [MIN 2 3 ] 1 0 ]``; predict its value (0-9). Solving it
    needs the hierarchical structure, not just long memory.

    The length knob is the maximum sequence length: each expression fills at most a
    token budget drawn uniformly from [``min_fraction`` T, T] (nesting at most
    ``max_depth``, at most ``max_args`` arguments, as in LRA; with the defaults it
    takes 0.3 T to 0.85 T, 0.6 T on average) and is left-padded, so the answer is always
    read at the last position (a closing bracket, or a lone digit when T < 4).

    Tokens: 0 pad, 1 .. 10 digits 0 .. 9, 11 .. 14 operators (``LISTOPS_OPS``), 15 ``]``.
    Targets: classes 0 .. 9. Chance: the answers are not uniform (MAX pushes towards 9,
    MIN towards 0), so always answering the majority class scores 0.16 - 0.18 (measured
    at T = 64 .. 1024), not 0.1; ``chance`` reports 0.18.
    """

    max_depth: int = 10
    max_args: int = 10
    min_fraction: float = 0.5
    PAD: ClassVar[int] = 0
    DIGIT: ClassVar[int] = 1  # digit d is token 1 + d
    OP: ClassVar[int] = 11  # LISTOPS_OPS[i] is token 11 + i
    CLOSE: ClassVar[int] = 15

    def __post_init__(self):
        _positive(self, max_depth=self.max_depth)
        if self.max_args < 2:
            raise ConfigError(f"ListOps.max_args must be >= 2, got {self.max_args}")
        if not 0.0 < self.min_fraction <= 1.0:
            raise ConfigError(f"ListOps.min_fraction must be in (0, 1], got {self.min_fraction}")

    vocab_size = property(lambda self: 16)
    n_classes = property(lambda self: 10)
    chance = property(lambda self: 0.18)
    min_length = property(lambda self: 1)

    def _expression(self, rng: random.Random, budget: int, depth: int) -> tuple[list[int], int]:
        """Tokens (at most ``budget``) and value of a random expression."""
        if budget < 4 or depth >= self.max_depth:
            digit = rng.randrange(10)
            return [self.DIGIT + digit], digit
        op = rng.randrange(len(LISTOPS_OPS))
        inner = budget - 2  # the operator and its closing bracket
        n = rng.randint(2, min(self.max_args, inner))
        cuts = sorted(rng.sample(range(1, inner), n - 1))
        tokens, args = [self.OP + op], []
        for lo, hi in zip([0] + cuts, cuts + [inner]):
            sub, value = self._expression(rng, hi - lo, depth + 1)
            tokens += sub
            args.append(value)
        return tokens + [self.CLOSE], listops_value(LISTOPS_OPS[op], args)

    def _sample(self, batch_size, length, generator):
        seeds = torch.randint(0, 2 ** 62, (batch_size,), generator=generator).tolist()
        inputs = torch.full((batch_size, length), self.PAD, dtype=torch.long)
        answers = torch.empty(batch_size, 1, dtype=torch.long)
        low = max(1, int(self.min_fraction * length))
        for b, seed in enumerate(seeds):
            rng = random.Random(seed)
            tokens, value = self._expression(rng, rng.randint(low, length), 0)
            inputs[b, length - len(tokens):] = torch.tensor(tokens)
            answers[b, 0] = value
        scored = torch.zeros(batch_size, length, dtype=torch.bool)
        scored[:, -1] = True
        return _classification(inputs, scored, answers)
