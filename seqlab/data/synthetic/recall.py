"""Memory and recall generators: copy, selective copy, multi-query associative recall,
induction heads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from seqlab.data.synthetic.base import (SYNTHETIC, SyntheticGenerator, _classification,
                                        _positive, _random_subsets)
from seqlab.errors import ConfigError


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
