"""Causal language modeling: next-token loss, perplexity, bits per byte, generation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.data.batch import Batch
from seqlab.data.tokenizer_base import Tokenizer
from seqlab.infer.generate import SamplingConfig, generate
from seqlab.models.backbone import BackboneState
from seqlab.models.build import build_backbone
from seqlab.models.heads import IGNORE, LMHead, LossSum
from seqlab.models.model import ModelOutput, SequenceModel
from seqlab.tasks.base import Metric, Objective, register_objective
from seqlab.tasks.pipeline import Pipeline


class LanguageModel(SequenceModel):
    """Backbone + vocabulary head; ``targets`` add the mean next-token loss (the plain
    model API the benchmarks use; training goes through the head's summed loss)."""

    def forward(self, ids: Tensor, state: BackboneState | None = None, *,
                padding_mask: Tensor | None = None, targets: Tensor | None = None) -> ModelOutput:
        """ids (B, T) -> logits (B, T, V); with ``targets`` (B, T) also the mean loss
        over targets that are not -100."""
        out = super().forward(ids, state, padding_mask=padding_mask)
        if targets is not None:
            out.loss = F.cross_entropy(out.logits.flatten(0, 1).float(), targets.flatten(),
                                       ignore_index=IGNORE)
        return out


def lm_head(cfg, backbone) -> LMHead:
    tie = backbone.embed if cfg.tie_embeddings and isinstance(backbone.embed, nn.Embedding) else None
    return LMHead(cfg.d_model, cfg.vocab_size, tie_to=tie)


def build_language_model(config) -> LanguageModel:
    """A language model for ``config.model`` (a run config; ``vocab_size`` must be set)."""
    backbone = build_backbone(config.model)
    return LanguageModel(backbone, lm_head(config.model, backbone))


def bits_key(tokenizer: Tokenizer) -> str:
    return f"bits_per_{tokenizer.unit}"


class LMMetric(Metric):
    """``perplexity`` and bits per byte (or char, or token) of the text the targets
    stand for: specials such as ``eos`` count as no text."""

    def __init__(self, tokenizer: Tokenizer):
        self.directions = {"perplexity": "min", bits_key(tokenizer): "min"}
        self.tokenizer = tokenizer
        self.total, self.count, self.units = 0.0, 0.0, 0

    def update(self, result: LossSum, batch: Batch) -> None:
        self.total += float(result.total)
        self.count += float(result.count)
        self.units += self.tokenizer.count_units(batch.targets[batch.targets != IGNORE])

    def compute(self) -> dict[str, float]:
        loss = self.total / max(self.count, 1)
        return {"perplexity": math.exp(min(loss, 700.0)),
                bits_key(self.tokenizer): self.total / math.log(2) / max(self.units, 1)}


def document_start(tokenizer: Tokenizer) -> list[int]:
    """The ids a generation prompt starts with: training text joins documents with eos,
    so eos is what the model has seen right before a document begins."""
    return [tokenizer.eos_id]


@register_objective("causal_lm", sources=("text", "shards"), modes=("causal",))
class CausalLM(Objective):
    """Next-token prediction on blocks of a text stream."""

    def build_model(self) -> LanguageModel:
        return build_language_model(self.config)

    def build_head(self, backbone) -> LMHead:
        return lm_head(self.config.model, backbone)

    def metric(self) -> Metric:
        return LMMetric(self.tokenizer)

    def sample(self, model) -> str | None:
        device = next(model.parameters()).device
        prompt = torch.tensor([document_start(self.tokenizer)], device=device)
        ids = generate(model, prompt, max_new_tokens=64, seed=0,
                       sampling=SamplingConfig(temperature=0.8, top_k=40))
        return self.tokenizer.decode(ids[0, 1:])

    def pipeline(self, model, run_dir=None) -> "LMPipeline":
        return LMPipeline(self, model, run_dir)


class LMPipeline(Pipeline):
    """A trained language model ready to use: ``.generate``, ``.evaluate``, ``.model``,
    ``.tokenizer``, ``.config`` (what ``seqlab.load`` returns for causal_lm runs)."""

    def generate(self, prompt: str = "", *, max_new_tokens: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 greedy: bool = False) -> str:
        """Continue ``prompt`` and return only the new text."""
        return self.tokenizer.decode(self.generate_ids(
            [self.prompt_ids(prompt)], max_new_tokens=[max_new_tokens], seeds=[seed],
            sampling=SamplingConfig(temperature, top_k, top_p, greedy))[0])

    def prompt_ids(self, prompt: str) -> list[int]:
        """The ids generation starts from: the document start, then the prompt."""
        return document_start(self.tokenizer) + self.tokenizer.encode(prompt)

    def generate_ids(self, prompts: list[list[int]], *, max_new_tokens: list[int],
                     seeds: list[int | None], sampling: SamplingConfig,
                     on_token=None) -> list[list[int]]:
        """Continue several prompts at once (left-padded into one batch), each with its
        own token budget and seed; returns each prompt's new ids (without the ``eos``
        that ended it). A row draws from its own generator, so each result is what the
        prompt alone gives. ``on_token(row, id)`` is called for every new id as it comes."""
        tok = self.tokenizer
        width = max(map(len, prompts))
        rows = torch.tensor([[tok.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = None
        if any(len(p) != width for p in prompts):
            mask = torch.tensor([[False] * (width - len(p)) + [True] * len(p) for p in prompts],
                                device=self.device)
        budgets = list(max_new_tokens)
        new: list[list[int]] = [[] for _ in prompts]
        done = [b == 0 for b in budgets]

        def collect(step, logits, token):
            for row, t in enumerate(token.tolist()):
                if done[row]:
                    continue
                if t == tok.eos_id:
                    done[row] = True
                    continue
                new[row].append(t)
                if on_token is not None:
                    on_token(row, t)
                done[row] = len(new[row]) >= budgets[row]

        generate(self.model, rows, max_new_tokens=max(budgets), seed=list(seeds), sampling=sampling,
                 eos_id=tok.eos_id, pad_id=tok.pad_id, padding_mask=mask, on_step=collect)
        return new
