"""The ``ctc`` objective: a speech recogniser as an encoder over acoustic frames (the
``speech`` source) with a CTC head over the transcript's tokens.

The encoder reads log-mel or MFCC frames through an input adapter (by default
``conv_subsample``: ``model.patch`` frames per position) and any stack of mixers; the
head emits a token or the blank (the tokenizer's ``<pad>``) at each position. Each
evaluation reports the CTC loss per transcript token and the word and character error
rates (through jiwer) of greedy decoding, or of prefix beam search with ``beam`` > 1.
``seqlab.load`` returns a :class:`~seqlab.tasks.speech_pipeline.SpeechPipeline`
(``transcribe``, streaming through the state for causal encoders).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from seqlab.data.batch import IGNORE, Batch
from seqlab.errors import ConfigError
from seqlab.infer.ctc import decode
from seqlab.models.ctc_head import CTCHead
from seqlab.models.heads import LossSum
from seqlab.models.inputs import subsampled_length
from seqlab.tasks.base import Metric, Objective, _fill, register_objective
from seqlab.tasks.seq2seq_metrics import error_counts

DIRECTIONS = {"wer": "min", "cer": "min"}


@dataclass
class CTCOptions:
    """``beam``: prefix beam search width of evaluations and ``transcribe`` (1: greedy);
    ``top_k``: tokens tried per step by the beam search (None: all)."""

    beam: int = 1
    top_k: int | None = None

    def __post_init__(self):
        if self.beam < 1:
            raise ConfigError(f"task_options.beam must be >= 1, got {self.beam}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"task_options.top_k must be >= 1, got {self.top_k}")


class RecognitionErrors(Metric):
    """Corpus WER and CER of decoding the head's log-probabilities."""

    directions = DIRECTIONS

    def __init__(self, objective: "CTC"):
        self.objective = objective
        self.counts = np.zeros(4, dtype=np.int64)
        self.examples: list[tuple[str, str]] = []

    def update(self, result: LossSum, batch: Batch) -> None:
        hyps = self.objective.decode_outputs(result.outputs)
        refs = [self.objective.text([t for t in row if t != IGNORE]) for row in batch.targets.tolist()]
        self.counts += error_counts([h[0] for h in hyps], refs)
        self.examples += [(h[0], r) for h, r in zip(hyps, refs)][:max(0, 3 - len(self.examples))]

    def compute(self) -> dict[str, float]:
        we, wn, ce, cn = self.counts.tolist()
        return {"wer": we / max(wn, 1), "cer": ce / max(cn, 1)}


def positions_of(cfg):
    """Encoder positions of n frames under model config ``cfg``."""
    if cfg.input == "conv_subsample":
        return functools.partial(subsampled_length, factor=cfg.patch), cfg.patch
    return (lambda frames: frames), 1


@register_objective("ctc", CTCOptions, sources=("speech",),
                    model_defaults={"input": "conv_subsample", "patch": 4, "causal": False})
class CTC(Objective):
    item_name = "frames"
    text_outputs = True

    @classmethod
    def check(cls, config) -> None:
        m = config.model
        if (m.input or "features") == "features" and m.patch != 1:
            raise ConfigError(f"model.patch {m.patch} groups feature frames into patches, which "
                              "needs equal lengths, but utterances differ; use model.input "
                              "conv_subsample to shorten frames, or model.patch 1")

    def make_source(self):
        source = super().make_source()
        source.layout = "ctc"
        source.positions, factor = positions_of(self.config.model)
        source.source_limit = self.config.model.context_length * factor
        return source

    def sync_model(self) -> None:
        super().sync_model()
        size = self.tokenizer.vocab_size
        _fill(self.config.model, "vocab_size", size, f"the tokenizer has {size} tokens")

    @property
    def blank(self) -> int:
        return self.tokenizer.pad_id

    def build_head(self, backbone) -> CTCHead:
        return CTCHead(backbone.d_model, self.config.model.vocab_size, self.blank)

    def metric(self) -> Metric:
        return RecognitionErrors(self)

    def text(self, tokens) -> str:
        return self.tokenizer.decode(list(tokens))

    def decode_outputs(self, log_probs, *, beam: int | None = None,
                       n_best: int = 1) -> list[list[str]]:
        """The ``n_best`` transcripts of each row of (B, T, V) log-probabilities."""
        beam = beam or self.options.beam
        rows = log_probs.detach().float().cpu().numpy()
        return [[self.text(h.tokens) for h in decode(row, self.blank, beam=beam, n_best=n_best,
                                                     top_k=self.options.top_k)] for row in rows]

    def sample(self, model) -> str | None:
        metric = self.last_metrics.get("val")
        if not isinstance(metric, RecognitionErrors) or not metric.examples:
            return None
        return " | ".join(f"{h!r} <- {r!r}" for h, r in metric.examples)

    def pipeline(self, model, run_dir=None):
        from seqlab.tasks.speech_pipeline import SpeechPipeline

        return SpeechPipeline(self, model, run_dir)


__all__ = ["CTC", "CTCOptions", "RecognitionErrors", "positions_of"]
