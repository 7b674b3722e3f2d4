"""Synthetic long-range tasks: seeded generators of ``(inputs, targets, scored)`` batches.

Each generator isolates one ability that long sequences need (memorising, selecting,
recalling by key, copying a pattern, integrating a signal, parsing nested structure),
takes the sequence length as a knob, and draws every random number from the
``torch.Generator`` it is given, so a batch is a pure function of the caller's seed.

Conventions shared by all generators:

- ``inputs``: (B, T) token ids, or (B, T, F) float features (``adding``).
- ``targets``: (B, T); class ids with ``IGNORE`` (-100) on unscored positions, or float
  regression targets (0 on unscored positions).
- ``scored``: (B, T) bool, the positions whose output is scored.
- Targets never appear in the inputs at or after a scored position, so a bidirectional
  encoder cannot read the answer off the input and can be trained on every task too.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from seqlab.errors import ConfigError
from seqlab.registry import Registry

IGNORE = -100  # the ignore_index of F.cross_entropy

SYNTHETIC: Registry = Registry("synthetic task")


@dataclass
class SyntheticBatch:
    """One batch; see the module docstring for the meaning of each tensor.

    Shapes:
        inputs: (B, T) long, or (B, T, F) float.
        targets: (B, T) long (classification) or float (regression).
        scored: (B, T) bool.
    """

    inputs: Tensor
    targets: Tensor
    scored: Tensor


class SyntheticGenerator:
    """Base of the generators; subclasses are dataclasses whose fields are their knobs.

    Subclasses set ``vocab_size`` (token inputs) or ``input_dim`` (feature inputs),
    ``n_classes`` (1 for regression), ``chance`` (accuracy of the best guess that
    ignores the input) and ``min_length``, and implement ``_sample``.
    """

    regression: ClassVar[bool] = False
    input_dim: ClassVar[int | None] = None

    @property
    def vocab_size(self) -> int | None:
        return None

    @property
    def n_classes(self) -> int:
        raise NotImplementedError

    @property
    def chance(self) -> float:
        raise NotImplementedError

    @property
    def min_length(self) -> int:
        return 1

    def check_length(self, length: int) -> None:
        if length < self.min_length:
            raise ConfigError(f"{type(self).__name__} sequences need length >= {self.min_length} "
                              f"with these options, got {length}")

    def sample(self, batch_size: int, length: int, generator: torch.Generator) -> SyntheticBatch:
        """A batch of ``batch_size`` sequences of ``length`` steps drawn from ``generator``."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        self.check_length(length)
        return self._sample(batch_size, length, generator)

    def _sample(self, batch_size: int, length: int, generator: torch.Generator) -> SyntheticBatch:
        raise NotImplementedError


def _positive(owner: object, **values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ConfigError(f"{type(owner).__name__}.{name} must be positive, got {value}")


def _random_subsets(batch_size: int, n: int, k: int, generator: torch.Generator) -> Tensor:
    """(B, k) sorted positions: a uniform random k-subset of range(n) per row."""
    order = torch.rand(batch_size, n, generator=generator).argsort(dim=1)
    return order[:, :k].sort(dim=1).values


def _classification(inputs: Tensor, scored: Tensor, answers: Tensor) -> SyntheticBatch:
    targets = torch.full(scored.shape, IGNORE, dtype=torch.long)
    targets[scored] = answers.flatten()
    return SyntheticBatch(inputs, targets, scored)


@SYNTHETIC.register("copy")
@dataclass
class Copy(SyntheticGenerator):
    """Copy memory (Hochreiter & Schmidhuber 1997, §5.2; the layout of Arjovsky et al.
    2016, "Unitary Evolution RNNs", §4.1): remember ``n_copy`` tokens across a gap.

    Layout (T = length, K = n_copy)::

        x_1 .. x_K | blank * (T - 2K - 1) | delimiter | blank * K
        scored:                                         x_1 .. x_K

    Tokens: 0 blank, 1 delimiter, 2 .. n_tokens + 1 data. The gap grows with T, so only
    a model that keeps K tokens for T steps solves it. Chance: 1 / n_tokens.
    """

    n_tokens: int = 8
    n_copy: int = 10
    BLANK: ClassVar[int] = 0
    DELIMITER: ClassVar[int] = 1

    def __post_init__(self):
        _positive(self, n_tokens=self.n_tokens, n_copy=self.n_copy)

    vocab_size = property(lambda self: self.n_tokens + 2)
    n_classes = property(lambda self: self.n_tokens + 2)
    chance = property(lambda self: 1.0 / self.n_tokens)
    min_length = property(lambda self: 2 * self.n_copy + 1)

    def _sample(self, batch_size, length, generator):
        K = self.n_copy
        data = torch.randint(2, self.n_tokens + 2, (batch_size, K), generator=generator)
        inputs = torch.full((batch_size, length), self.BLANK, dtype=torch.long)
        inputs[:, :K] = data
        inputs[:, length - K - 1] = self.DELIMITER
        scored = torch.zeros(batch_size, length, dtype=torch.bool)
        scored[:, length - K:] = True
        return _classification(inputs, scored, data)


@SYNTHETIC.register("selective_copy")
@dataclass
class SelectiveCopy(SyntheticGenerator):
    """Selective copying (Gu & Dao 2023, "Mamba", §3.1 and §4.1.1): ``n_data`` tokens
    at random positions among noise, to be output in order at the end. Unlike ``copy``
    the spacing varies, so a time-invariant filter (a fixed convolution, an LTI SSM)
    cannot solve it; the model must select by content.

    Layout (T = length, K = n_data)::

        noise with K data tokens at random sorted positions (T - K steps) | marker * K
        scored:                                                            the K data tokens

    Tokens: 0 noise, 1 marker, 2 .. n_tokens + 1 data. Chance: 1 / n_tokens.
    """

    n_tokens: int = 16
    n_data: int = 16
    NOISE: ClassVar[int] = 0
    MARKER: ClassVar[int] = 1

    def __post_init__(self):
        _positive(self, n_tokens=self.n_tokens, n_data=self.n_data)

    vocab_size = property(lambda self: self.n_tokens + 2)
    n_classes = property(lambda self: self.n_tokens + 2)
    chance = property(lambda self: 1.0 / self.n_tokens)
    min_length = property(lambda self: 2 * self.n_data)

    def _sample(self, batch_size, length, generator):
        K = self.n_data
        data = torch.randint(2, self.n_tokens + 2, (batch_size, K), generator=generator)
        where = _random_subsets(batch_size, length - K, K, generator)  # (B, K) sorted
        inputs = torch.full((batch_size, length), self.NOISE, dtype=torch.long)
        inputs.scatter_(1, where, data)
        inputs[:, length - K:] = self.MARKER
        scored = torch.zeros(batch_size, length, dtype=torch.bool)
        scored[:, length - K:] = True
        return _classification(inputs, scored, data)


@SYNTHETIC.register("mqar")
@dataclass
class MQAR(SyntheticGenerator):
    """Multi-query associative recall (Arora et al. 2023, "Zoology", §3 and App. E):
    ``num_kv_pairs`` key-value pairs, then every key queried once, in random order, at
    positions drawn from a power law over distance (``power_a``; Zoology uses 0.01, which
    favours queries soon after the pairs) among filler tokens.

    Layout (T = length, N = num_kv_pairs)::

        k_1 v_1 .. k_N v_N | filler with the N keys at even offsets (T - 2N steps)
        scored: each query key's position, target its value

    The value is never shown after its query (Zoology shifts it into the labels).
    Tokens: 0 filler, 1 .. n_keys keys, n_keys + 1 .. n_keys + n_values values.
    Chance: 1 / n_values.
    """

    n_keys: int = 64
    n_values: int = 64
    num_kv_pairs: int = 8
    power_a: float = 0.01

    def __post_init__(self):
        _positive(self, n_keys=self.n_keys, n_values=self.n_values, num_kv_pairs=self.num_kv_pairs)
        if self.num_kv_pairs > self.n_keys:
            raise ConfigError(f"MQAR.num_kv_pairs ({self.num_kv_pairs}) cannot exceed n_keys "
                              f"({self.n_keys}): keys within a sequence are distinct")
        if not 0.0 < self.power_a <= 1.0:
            raise ConfigError(f"MQAR.power_a must be in (0, 1], got {self.power_a}")

    vocab_size = property(lambda self: 1 + self.n_keys + self.n_values)
    n_classes = property(lambda self: 1 + self.n_keys + self.n_values)
    chance = property(lambda self: 1.0 / self.n_values)
    min_length = property(lambda self: 4 * self.num_kv_pairs)

    def _sample(self, batch_size, length, generator):
        B, N = batch_size, self.num_kv_pairs
        keys = torch.rand(B, self.n_keys, generator=generator).argsort(dim=1)[:, :N] + 1  # (B, N)
        values = torch.randint(self.n_keys + 1, self.n_keys + self.n_values + 1, (B, N),
                               generator=generator)
        inputs = torch.zeros(B, length, dtype=torch.long)
        inputs[:, 0:2 * N:2], inputs[:, 1:2 * N:2] = keys, values
        slots = (length - 2 * N) // 2
        weights = torch.arange(1, slots + 1, dtype=torch.float64) ** (self.power_a - 1)
        gaps = torch.multinomial(weights.expand(B, slots), N, replacement=False,
                                 generator=generator)  # (B, N) distinct slots
        order = torch.rand(B, N, generator=generator).argsort(dim=1)  # which key each query asks
        where = 2 * N + 2 * gaps
        inputs.scatter_(1, where, keys.gather(1, order))
        answers = values.gather(1, order)
        # write answers in position order so they line up with the boolean mask
        where, sort = where.sort(dim=1)
        scored = torch.zeros(B, length, dtype=torch.bool)
        scored.scatter_(1, where, True)
        return _classification(inputs, scored, answers.gather(1, sort))


@SYNTHETIC.register("induction")
@dataclass
class Induction(SyntheticGenerator):
    """Induction heads (Olsson et al. 2022; the H3 paper's version, Fu et al. 2023, §3.1):
    random tokens hold one trigger followed by a target; the sequence ends with the
    trigger again, and the model must output the token that followed it before. Any
    length can be drawn, so a model trained at one length can be tested at longer ones.

    Layout (T = length): ``t_0 .. trigger x .. t_{T-2} | trigger``; scored: the last
    position, target ``x``. The first trigger sits uniformly in [0, T - 3].
    Tokens: 0 trigger, 1 .. n_tokens content. Chance: 1 / n_tokens.
    """

    n_tokens: int = 16
    TRIGGER: ClassVar[int] = 0

    def __post_init__(self):
        _positive(self, n_tokens=self.n_tokens)

    vocab_size = property(lambda self: self.n_tokens + 1)
    n_classes = property(lambda self: self.n_tokens + 1)
    chance = property(lambda self: 1.0 / self.n_tokens)
    min_length = property(lambda self: 3)

    def _sample(self, batch_size, length, generator):
        inputs = torch.randint(1, self.n_tokens + 1, (batch_size, length), generator=generator)
        where = torch.randint(0, length - 2, (batch_size, 1), generator=generator)
        inputs.scatter_(1, where, self.TRIGGER)
        inputs[:, -1] = self.TRIGGER
        answers = inputs.gather(1, where + 1)
        scored = torch.zeros(batch_size, length, dtype=torch.bool)
        scored[:, -1] = True
        return _classification(inputs, scored, answers)


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


def build_generator(name: str, options: dict | None = None) -> SyntheticGenerator:
    """The generator registered as ``name`` with its knobs set from ``options``."""
    from seqlab.config import convert

    return convert(SYNTHETIC.get(name), options or {}, f"synthetic.{name}", "config")
