"""Decoding CTC outputs: per-step log-probabilities over tokens and a blank into token
sequences.

A CTC path emits a token or the blank at every step; its labelling merges repeated
tokens and then drops blanks (so "a a _ a" reads "aa"). ``greedy`` takes the most
likely token at each step and collapses the path. ``PrefixBeamSearch`` keeps the
``beam`` most probable labellings, each with the summed probability of every path
that ends in a blank and of every path that ends in its last token (Hannun et al.,
2014, without a language model); with a beam wide enough it returns each labelling's
exact probability. Both decoders advance step by step, so audio decoded in chunks
gives the labelling of one pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEG_INF = float("-inf")


def greedy(best: list[int], blank: int, previous: int | None = None) -> list[int]:
    """The labelling of the path ``best`` (the argmax token of each step): repeats merged,
    blanks dropped. ``previous``: the last step of an earlier chunk, so a token that
    continues across the boundary is not emitted twice."""
    out = []
    for token in best:
        if token != blank and token != previous:
            out.append(token)
        previous = token
    return out


class GreedyStream:
    """Greedy decoding of steps that arrive in chunks."""

    def __init__(self, blank: int):
        self.blank, self.previous, self.tokens = blank, None, []
        self.logprob = 0.0  # of the best path so far

    def advance(self, log_probs: np.ndarray) -> list[int]:
        """Add (T, V) steps; returns the tokens they emitted."""
        log_probs = np.asarray(log_probs, dtype=np.float64)
        best = log_probs.argmax(-1)
        self.logprob += float(log_probs[np.arange(len(best)), best].sum())
        best = best.tolist()
        new = greedy(best, self.blank, self.previous)
        if best:
            self.previous = best[-1]
        self.tokens += new
        return new


@dataclass(frozen=True)
class Labelling:
    tokens: tuple[int, ...]
    logprob: float  # log of the summed probability of every path that reads ``tokens``


class PrefixBeamSearch:
    """CTC prefix beam search over steps that may arrive in chunks (``advance``).

    Args:
        blank: the blank's index.
        beam: labellings kept after each step.
        top_k: tokens tried at each step (the most probable; None: all of them).
    """

    def __init__(self, blank: int, beam: int = 8, top_k: int | None = None):
        if beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        self.blank, self.beam, self.top_k = blank, beam, top_k
        # labelling -> (log prob of paths ending in blank, ... ending in its last token)
        self.beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}

    def advance(self, log_probs: np.ndarray) -> None:
        """Extend every kept labelling by the (T, V) steps' log-probabilities."""
        for row in np.asarray(log_probs, dtype=np.float64):
            self._step(row)

    def _step(self, lp: np.ndarray) -> None:
        blank = self.blank
        tokens = range(len(lp)) if self.top_k is None or self.top_k >= len(lp) else \
            np.argpartition(-lp, self.top_k - 1)[:self.top_k].tolist()
        nxt: dict[tuple[int, ...], list[float]] = {}

        def add(prefix, which, value):
            slot = nxt.setdefault(prefix, [NEG_INF, NEG_INF])
            slot[which] = np.logaddexp(slot[which], value)

        for prefix, (pb, pnb) in self.beams.items():
            total = np.logaddexp(pb, pnb)
            add(prefix, 0, total + lp[blank])
            for c in tokens:
                if c == blank:
                    continue
                if prefix and prefix[-1] == c:
                    add(prefix + (c,), 1, pb + lp[c])  # a repeat needs a blank between
                    add(prefix, 1, pnb + lp[c])  # the same token again merges
                else:
                    add(prefix + (c,), 1, total + lp[c])
        ranked = sorted(nxt.items(), key=lambda kv: -np.logaddexp(*kv[1]))[:self.beam]
        self.beams = {prefix: (pb, pnb) for prefix, (pb, pnb) in ranked}

    def best(self, n: int = 1) -> list[Labelling]:
        """The ``n`` most probable labellings so far, best first."""
        ranked = sorted(((p, float(np.logaddexp(*v))) for p, v in self.beams.items()),
                        key=lambda kv: -kv[1])
        return [Labelling(p, s) for p, s in ranked[:n]]


def decode(log_probs: np.ndarray, blank: int, *, beam: int = 1, n_best: int = 1,
           top_k: int | None = None) -> list[Labelling]:
    """The labellings of one utterance's (T, V) log-probabilities: greedy (``beam`` 1
    and ``n_best`` 1, scored by its path) or prefix beam search."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    if beam == 1 and n_best == 1:
        best = log_probs.argmax(-1)
        path = float(log_probs[np.arange(len(best)), best].sum()) if len(best) else 0.0
        return [Labelling(tuple(greedy(best.tolist(), blank)), path)]
    search = PrefixBeamSearch(blank, max(beam, n_best), top_k)
    search.advance(log_probs)
    return search.best(n_best)


__all__ = ["GreedyStream", "Labelling", "PrefixBeamSearch", "decode", "greedy"]
