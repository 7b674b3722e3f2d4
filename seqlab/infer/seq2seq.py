"""Decoding an encoder-decoder through its state: greedy, sampling and beam search.

A model needs ``start(source, source_mask) -> state`` (the source encoded once, the
decoder's cross-attention keys and values computed once) and ``model(ids, state) ->
.logits, .state``, with states that ``reorder(index)`` (``seqlab.models.seq2seq``).

Beam search is batched: every sentence's beams are rows of one batch. A sentence leaves
the batch as soon as it is done (its rows are dropped from the state), so its finished
hypotheses never cost the others a step. ``cache=False`` re-reads each hypothesis's
whole prefix at every step instead of continuing its state (the reference the cached
path is tested against, and the "without cache" speed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seqlab.infer.generate import SamplingConfig, next_token


@dataclass(frozen=True)
class Hypothesis:
    """One decoded target: its tokens (without ``<bos>``, with ``<eos>`` when it ended
    there), the sum of their log-probabilities, and its rank score (that sum divided by
    ``len(tokens) ** length_penalty`` in beam search; by ``len(tokens)`` from ``decode``)."""

    tokens: list[int]
    logprob: float
    score: float


@dataclass(frozen=True)
class BeamConfig:
    """``beam``: hypotheses kept per sentence; ``length_penalty``: the exponent of the
    length that a hypothesis's log-probability is divided by (0: raw sums, which favour
    short outputs; 1: the mean per token); ``early_stopping``: a sentence is done once
    ``beam`` hypotheses have ended (otherwise, once no live beam could still beat the
    worst of them); ``n_best``: hypotheses returned per sentence."""

    beam: int = 4
    length_penalty: float = 1.0
    early_stopping: bool = True
    n_best: int = 1

    def __post_init__(self):
        if self.beam < 1:
            raise ValueError(f"beam must be >= 1, got {self.beam}")
        if not 1 <= self.n_best <= self.beam:
            raise ValueError(f"n_best must be between 1 and the beam ({self.beam}), got {self.n_best}")


class _Stepper:
    """Next-token log-probabilities of each row, through the state or from scratch.

    With the cache, ``state`` is the decoder state after every token so far; without,
    it stays the state after the source alone and each step re-reads ``tokens``."""

    def __init__(self, model, source: Tensor, source_mask: Tensor | None, bos_id: int,
                 cache: bool):
        self.model, self.cache = model, cache
        self.state = model.start(source, source_mask)
        self.fresh = True  # nothing decoded yet
        B = source.shape[0]
        self.tokens = torch.full((B, 1), bos_id, dtype=torch.long, device=source.device)

    def logprobs(self) -> Tensor:
        if self.cache:
            out = self.model(self.tokens if self.fresh else self.tokens[:, -1:], self.state)
            self.state = out.state
        else:
            out = self.model(self.tokens, self.state)
        self.fresh = False
        return out.logits[:, -1].float().log_softmax(-1)

    def extend(self, new_tokens: Tensor) -> None:
        """Continue every row by its entry of ``new_tokens``."""
        self.tokens = torch.cat([self.tokens, new_tokens[:, None]], 1)

    def keep(self, rows: Tensor, new_tokens: Tensor | None = None, *,
             same_sources: bool = False) -> None:
        """Keep rows ``rows`` of the current batch (in that order, repeats allowed), each
        continued by its entry of ``new_tokens`` when given. ``same_sources``: every
        kept row reads the source of the row it replaces, so the memory stays."""
        self.tokens = self.tokens.index_select(0, rows)
        if new_tokens is not None:
            self.extend(new_tokens)
        moved = self.cache and not self.fresh
        self.state = self.state.reorder(rows, memory=not (same_sources and moved))


@torch.no_grad()
def decode(model, source: Tensor, source_mask: Tensor | None = None, *, bos_id: int,
           eos_id: int, max_length: int, sampling: SamplingConfig | None = None,
           seed: int | list[int] | None = None, cache: bool = True) -> list[Hypothesis]:
    """Greedy (``sampling`` None or greedy) or sampled decoding of each source row.

    ``seed``: one for the batch, or one per row (a row then samples what it would alone).
    Returns one Hypothesis per row, scored by its log-probability over its length (no
    length penalty: there is nothing to rank); a row stops at ``eos_id`` or after
    ``max_length`` tokens."""
    sampling = sampling or SamplingConfig(greedy=True)
    generator = None
    if isinstance(seed, list):
        generator = [torch.Generator(device=source.device) for _ in seed]
        for g, s in zip(generator, seed):
            g.manual_seed(s)
    elif seed is not None:
        generator = torch.Generator(device=source.device)
        generator.manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        B = source.shape[0]
        stepper = _Stepper(model, source, source_mask, bos_id, cache)
        logprob = torch.zeros(B, dtype=torch.float64, device=source.device)
        finished = torch.zeros(B, dtype=torch.bool, device=source.device)
        for _ in range(max_length):
            logp = stepper.logprobs()
            token = next_token(logp, sampling, generator)
            token = torch.where(finished, torch.full_like(token, eos_id), token)
            logprob += torch.where(finished, 0.0, logp.gather(1, token[:, None])[:, 0].double())
            stepper.extend(token)
            finished |= token == eos_id
            if bool(finished.all()):
                break
        out = []
        for row, lp in zip(stepper.tokens[:, 1:].tolist(), logprob.tolist()):
            tokens = row[:row.index(eos_id) + 1] if eos_id in row else row
            out.append(Hypothesis(tokens, lp, lp / max(len(tokens), 1)))
        return out
    finally:
        model.train(was_training)


@torch.no_grad()
def beam_search(model, source: Tensor, source_mask: Tensor | None = None, *, bos_id: int,
                eos_id: int, max_length: int, config: BeamConfig | None = None,
                cache: bool = True) -> list[list[Hypothesis]]:
    """The ``n_best`` hypotheses of each source row, best first."""
    config = config or BeamConfig()
    K, device = config.beam, source.device
    was_training = model.training
    model.eval()
    try:
        B = source.shape[0]
        stepper = _Stepper(model, source, source_mask, bos_id, cache)
        stepper.keep(torch.arange(B, device=device).repeat_interleave(K))
        # Only the first beam is live at the start, so the first step draws K distinct tokens.
        scores = torch.full((B, K), float("-inf"), dtype=torch.float64, device=device)
        scores[:, 0] = 0.0
        sentences = list(range(B))  # the sentence each group of K rows belongs to
        finished: list[list[Hypothesis]] = [[] for _ in range(B)]
        for length in range(1, max_length + 1):
            logp = stepper.logprobs().double()  # (n*K, V)
            n, V = len(sentences), logp.shape[-1]
            if K >= V:
                raise ValueError(f"beam {K} is not below the vocabulary's {V} tokens; a smaller "
                                 "beam keeps only real continuations")
            total = (scores[:, :, None] + logp.view(n, K, V)).view(n, K * V)
            top, flat = total.topk(min(2 * K, K * V), dim=1)  # (n, 2K), best first
            beam, token = flat // V, flat % V
            ended = token == eos_id
            last = length == max_length
            prefixes = stepper.tokens[:, 1:].view(n, K, -1)
            for i, j in ended.nonzero().tolist():
                if j < K:  # an ended candidate counts if it ranks among the beam's best
                    _add(finished[sentences[i]], prefixes[i, beam[i, j]].tolist() + [eos_id],
                         float(top[i, j]), config)
            live = ~ended & ((~ended).cumsum(1) <= K)
            pick = torch.sort((~live).to(torch.int8), dim=1, stable=True).indices[:, :K]  # (n, K)
            scores = top.gather(1, pick)
            beam, token = beam.gather(1, pick), token.gather(1, pick)
            if last:
                for i in range(n):
                    for j in range(K):
                        _add(finished[sentences[i]], prefixes[i, beam[i, j]].tolist() + [int(token[i, j])],
                             float(scores[i, j]), config)
                break
            done = [len(finished[s]) >= K and (config.early_stopping or _hopeless(
                finished[s], float(scores[i, 0]), length, max_length, config))
                for i, s in enumerate(sentences)]
            keep = [i for i, d in enumerate(done) if not d]
            if not keep:
                break
            if len(keep) == n:  # every sentence goes on: its beams reorder among themselves
                rows = (torch.arange(n, device=device)[:, None] * K + beam).flatten()
                stepper.keep(rows, token.flatten(), same_sources=True)
                continue
            keep_t = torch.tensor(keep, device=device)
            rows = (keep_t[:, None] * K + beam.index_select(0, keep_t)).flatten()
            stepper.keep(rows, token.index_select(0, keep_t).flatten())
            scores = scores.index_select(0, keep_t)
            sentences = [sentences[i] for i in keep]
        return [sorted(f, key=lambda h: -h.score)[:config.n_best] for f in finished]
    finally:
        model.train(was_training)


def _add(kept: list[Hypothesis], tokens: list[int], logprob: float, config: BeamConfig) -> None:
    """Keep a finished hypothesis among a sentence's best ``beam``."""
    kept.append(Hypothesis(tokens, logprob, logprob / len(tokens) ** config.length_penalty))
    if len(kept) > config.beam:
        kept.remove(min(kept, key=lambda h: h.score))


def _hopeless(kept: list[Hypothesis], best_live: float, length: int, max_length: int,
              config: BeamConfig) -> bool:
    """Whether no continuation of the live beams can rank above the worst kept
    hypothesis. Log-probability sums only fall, so the best any continuation can score
    is the best live sum divided by the length that flatters it most: the longest
    possible with a positive length penalty, the shortest (one more token) otherwise."""
    penalty = config.length_penalty
    bound = best_live / (max_length if penalty > 0 else length + 1) ** penalty
    return bound <= min(h.score for h in kept)


__all__ = ["BeamConfig", "Hypothesis", "beam_search", "decode"]
