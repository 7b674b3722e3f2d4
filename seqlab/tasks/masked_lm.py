"""Masked language modeling (Devlin et al. 2019, "BERT", §3.1) for bidirectional backbones.

A share ``mask_prob`` of each sequence's real tokens is chosen (at least one); of the
chosen, 80% become ``<mask>``, 10% a random token and 10% stay as they are, and the loss
reads the chosen positions only. With ``span_length`` the chosen tokens come in spans of
geometric length of that mean (capped at ``max_span``), as in SpanBERT (Joshi et al.
2020). Masking is a pure function of (seed, batch key), so exact resume and repeated
evaluations see the same masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from seqlab.data.batch import IGNORE, Batch
from seqlab.data.sampling import seeded_rng
from seqlab.data.tokenizers import MASK
from seqlab.errors import ConfigError
from seqlab.models.heads import LossSum, MaskedLMHead
from seqlab.tasks.base import Metric, Objective, register_objective
from seqlab.tasks.pipeline import Pipeline

MASK_STREAM = 31


@dataclass
class MaskedLMOptions:
    """Args: mask_prob: share of real tokens chosen per sequence. mask_token_prob and
    random_token_prob: of the chosen, the shares replaced by ``<mask>`` and by a random
    token (the rest stay unchanged). span_length: mean span length (None: single tokens).
    max_span: the longest span."""

    mask_prob: float = 0.15
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    span_length: float | None = None
    max_span: int = 10

    def __post_init__(self):
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"task_options.mask_prob must be in (0, 1), got {self.mask_prob}")
        for name in ("mask_token_prob", "random_token_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"task_options.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.mask_token_prob + self.random_token_prob > 1.0:
            raise ConfigError("task_options.mask_token_prob + random_token_prob must be <= 1, got "
                              f"{self.mask_token_prob + self.random_token_prob}")
        if self.span_length is not None and self.span_length < 1.0:
            raise ConfigError(f"task_options.span_length must be >= 1, got {self.span_length}")
        if self.max_span < 1:
            raise ConfigError(f"task_options.max_span must be >= 1, got {self.max_span}")


def choose_positions(eligible: np.ndarray, n: int, rng: np.random.Generator, *,
                     span_length: float | None, max_span: int) -> np.ndarray:
    """Exactly ``n`` positions among the ``eligible`` ones (sorted indices), one by one or
    in spans of geometric length (mean ``span_length``) over consecutive eligible slots."""
    if span_length is None or n <= 1:
        return np.sort(rng.choice(eligible, size=n, replace=False))
    chosen = np.zeros(len(eligible), dtype=bool)
    while (count := int(chosen.sum())) < n:  # spans may overlap; never more than n in all
        length = min(int(rng.geometric(1.0 / span_length)), max_span, n - count)
        start = int(rng.integers(0, len(eligible)))
        chosen[start:start + length] = True
    return eligible[chosen]


def mask_tokens(ids: Tensor, padding_mask: Tensor | None, rng: np.random.Generator, *,
                options: MaskedLMOptions, mask_id: int, special_ids: list[int],
                content_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Masked inputs and targets (the original id at chosen positions, IGNORE elsewhere).

    Shapes:
        ids, padding_mask: (B, T). Returns two (B, T) int64 tensors.
    """
    ids_np = ids.numpy()
    real = np.ones(ids_np.shape, dtype=bool) if padding_mask is None else padding_mask.numpy()
    eligible_all = real & ~np.isin(ids_np, special_ids)
    targets = np.full(ids_np.shape, IGNORE, dtype=np.int64)
    inputs = ids_np.astype(np.int64, copy=True)
    for b in range(ids_np.shape[0]):
        eligible = np.flatnonzero(eligible_all[b])
        if eligible.size == 0:
            continue
        n = min(max(1, int(round(options.mask_prob * eligible.size))), eligible.size)
        where = choose_positions(eligible, n, rng, span_length=options.span_length,
                                 max_span=options.max_span)
        targets[b, where] = inputs[b, where]
        draw = rng.random(len(where))
        to_mask = where[draw < options.mask_token_prob]
        to_random = where[(draw >= options.mask_token_prob)
                          & (draw < options.mask_token_prob + options.random_token_prob)]
        inputs[b, to_mask] = mask_id
        if to_random.size:
            inputs[b, to_random] = content_ids.numpy()[rng.integers(0, len(content_ids), to_random.size)]
    return torch.from_numpy(inputs), torch.from_numpy(targets)


class MaskedLMMetric(Metric):
    """``masked_accuracy`` (top-1 over the chosen positions) and ``perplexity``."""

    directions = {"masked_accuracy": "max", "perplexity": "min"}

    def __init__(self):
        self.correct = self.count = 0
        self.total = 0.0

    def update(self, result: LossSum, batch: Batch) -> None:
        wanted = batch.targets[batch.targets != IGNORE]
        self.correct += int((result.outputs.argmax(-1) == wanted).sum())
        self.count += int(wanted.numel())
        self.total += float(result.total)

    def compute(self) -> dict[str, float]:
        loss = self.total / max(self.count, 1)
        return {"masked_accuracy": self.correct / max(self.count, 1),
                "perplexity": float(np.exp(min(loss, 700.0)))}


@register_objective("masked_lm", MaskedLMOptions, sources=("text", "shards", "examples"),
                    modes=("bidirectional",), model_defaults={"causal": False})
class MaskedLM(Objective):
    """Predict chosen tokens from both sides of their context."""

    needs_mask_token = True

    def build_head(self, backbone) -> MaskedLMHead:
        cfg = self.config.model
        tie = backbone.embed if cfg.tie_embeddings else None
        eps = cfg.norm_eps if cfg.norm == "layernorm" and cfg.norm_eps is not None else 1e-5
        return MaskedLMHead(cfg.d_model, cfg.vocab_size, tie_to=tie, eps=eps)

    def transform(self, batch: Batch, *, key: tuple[int, ...]) -> Batch:
        tok = self.tokenizer
        if not hasattr(self, "_content"):
            self._content = tok.content_ids()
        rng = seeded_rng(self.config.seed, MASK_STREAM, *key)
        inputs, targets = mask_tokens(batch.inputs.cpu(), None if batch.padding_mask is None
                                      else batch.padding_mask.cpu(), rng, options=self.options,
                                      mask_id=tok.mask_id, special_ids=tok.special_ids,
                                      content_ids=self._content)
        return Batch(inputs, targets, batch.padding_mask, batch.extras, batch.index)

    def metric(self) -> MaskedLMMetric:
        return MaskedLMMetric()

    def pipeline(self, model, run_dir=None) -> "MaskedLMPipeline":
        return MaskedLMPipeline(self, model, run_dir)


class MaskedLMPipeline(Pipeline):
    """A trained masked LM: ``.fill_mask(text)`` and ``.evaluate``."""

    @torch.no_grad()
    def fill_mask(self, text: str, *, top_k: int = 5) -> list[list[dict]]:
        """For each ``<mask>`` in ``text``, the ``top_k`` likeliest tokens with their
        probabilities (each a dict: ``token``, ``id``, ``probability``)."""
        tok = self.tokenizer
        parts = text.split(MASK)
        if len(parts) < 2:
            raise ConfigError(f"fill_mask needs at least one {MASK} in the text")
        ids: list[int] = []
        for i, part in enumerate(parts):
            ids += tok.encode(part)
            if i < len(parts) - 1:
                ids.append(tok.mask_id)
        limit = self.model.max_positions
        if limit is not None and len(ids) > limit:
            raise ConfigError(f"the text is {len(ids)} tokens long; this model reads at most {limit}")
        inputs = torch.tensor([ids], device=self.device)
        hidden = self.model.backbone(inputs).hidden[0]  # (T, D)
        where = [i for i, t in enumerate(ids) if t == tok.mask_id]
        probs = self.model.head(hidden[where]).float().softmax(-1)  # (M, V)
        banned = torch.tensor(tok.special_ids, device=probs.device)
        probs[:, banned] = 0.0
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return [[{"token": tok.decode([i]), "id": i, "probability": round(float(p), 6)}
                 for p, i in zip(values.tolist(), indices.tolist())]
                for values, indices in zip(top.values, top.indices)]
