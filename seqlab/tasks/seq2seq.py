"""The ``seq2seq`` objective: an encoder-decoder trained by teacher forcing on
source-target pairs (the ``parallel`` source), with label smoothing.

Each evaluation reports the teacher-forced loss and token accuracy, then decodes the
first ``eval_decode`` pairs of the set (greedy, or beam search with ``beam`` > 1) and
scores the outputs against the references: BLEU, chrF, exact match, token and word
error rates (``seqlab.tasks.seq2seq_metrics``). ``seqlab.load`` returns a
:class:`Seq2SeqPipeline` (``translate``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from seqlab.data.batch import IGNORE, Batch
from seqlab.data.tokenizer_base import load_tokenizer
from seqlab.data.tokenizers import TOKENIZERS, build_tokenizer
from seqlab.errors import ConfigError
from seqlab.infer.generate import SamplingConfig
from seqlab.infer.seq2seq import BeamConfig, Hypothesis, beam_search, decode
from seqlab.models.build import build_seq2seq
from seqlab.models.heads import LossSum
from seqlab.tasks.base import Metric, Objective, register_objective
from seqlab.rundir import TARGET_TOKENIZER_FILE
from seqlab.tasks.seq2seq_metrics import DIRECTIONS, text_scores


@dataclass
class Seq2SeqOptions:
    """``label_smoothing``: of the training loss. ``beam``, ``length_penalty``: the
    decoding evaluations use (and ``translate``'s defaults); ``max_output_length``: the
    longest output decoded (default: ``model.context_length``); ``eval_decode``: pairs of
    each evaluation set decoded for the text metrics (0: none); ``bleu_tokenize``:
    sacrebleu's tokenizer for BLEU (``13a`` for sentences, ``char`` for single words);
    ``target_tokenizer``: the targets' own tokenizer, as a ``tokenizer`` section
    (``{kind: bpe, vocab_size: 8000}``), when source and target should not share one
    (then the run's ``tokenizer`` reads the sources alone, and the encoder and decoder
    have embedding tables of their own)."""

    label_smoothing: float = 0.1
    beam: int = 1
    length_penalty: float = 1.0
    max_output_length: int | None = None
    eval_decode: int = 200
    bleu_tokenize: str = "13a"
    target_tokenizer: dict | None = None

    def __post_init__(self):
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"task_options.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.beam < 1:
            raise ConfigError(f"task_options.beam must be >= 1, got {self.beam}")
        if self.eval_decode < 0:
            raise ConfigError(f"task_options.eval_decode must be >= 0, got {self.eval_decode}")
        tokenizers = ("13a", "char", "none", "intl", "zh", "ja-mecab", "ko-mecab", "flores101", "flores200")
        if self.bleu_tokenize not in tokenizers:
            raise ConfigError(f"task_options.bleu_tokenize must be one of {', '.join(tokenizers)}, "
                              f"got {self.bleu_tokenize!r}")
        if self.target_tokenizer is not None:
            check_tokenizer_section(self.target_tokenizer, "task_options.target_tokenizer")
        if self.max_output_length is not None and self.max_output_length < 1:
            raise ConfigError(f"task_options.max_output_length must be >= 1, got {self.max_output_length}")


class TokenAccuracy(Metric):
    """Teacher-forced next-token accuracy over the real target tokens."""

    directions = DIRECTIONS

    def __init__(self):
        self.right = self.total = 0

    def update(self, result: LossSum, batch: Batch) -> None:
        targets = batch.targets[batch.targets != IGNORE]  # the rows of result.outputs
        self.right += int((result.outputs.argmax(-1) == targets).sum())
        self.total += len(targets)

    def compute(self) -> dict[str, float]:
        return {"token_accuracy": self.right / max(self.total, 1)}


TOKENIZER_KEYS = ("kind", "path", "vocab_size", "word_chars", "k", "overlap", "soft_mask")


def check_tokenizer_section(section, where: str) -> None:
    """Refuse a tokenizer section with unknown keys or kind."""
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a mapping like {{kind: char}}, got {section!r}")
    unknown = sorted(set(section) - set(TOKENIZER_KEYS))
    if unknown:
        raise ConfigError(f"{where} has unknown keys {', '.join(unknown)}; valid: "
                          f"{', '.join(TOKENIZER_KEYS)}")
    kind = section.get("kind", "byte")
    if kind not in TOKENIZERS:
        raise ConfigError(f"{where}.kind {kind!r} is not a tokenizer; valid: "
                          f"{', '.join(TOKENIZERS.names())}")


@register_objective("seq2seq", Seq2SeqOptions, sources=("parallel", "speech"), modes=("causal",),
                    model_defaults={"encoder": {}})
class Seq2Seq(Objective):
    item_name = "tokens"
    text_outputs = True  # speech frames in, text out
    target_tokenizer = None  # the targets' own tokenizer, when they have one

    def make_source(self):
        from seqlab.tasks.ctc import positions_of

        source = super().make_source()
        source.separate = self.options.target_tokenizer is not None
        encoder = self.config.model.encoder_config() if self.config.model.encoder is not None else None
        source.source_limit = encoder.context_length if encoder is not None else None
        if self.speech:  # frames in: the encoder's positions hold model.patch frames each
            source.layout = "seq2seq"
            enc = encoder or self.config.model
            source.source_limit = enc.context_length * positions_of(enc)[1]
        return source

    @property
    def speech(self) -> bool:
        """Whether the sources are audio (a recogniser), not text."""
        return self.config.data.source == "speech"

    @classmethod
    def check(cls, config) -> None:
        if config.data.source == "speech" and config.task_options.target_tokenizer is not None:
            raise ConfigError("task_options.target_tokenizer gives the targets a tokenizer apart "
                              "from the sources'; speech sources have none, so the run's "
                              "tokenizer is the transcripts' (drop target_tokenizer)")

    @property
    def output_tokenizer(self):
        """The tokenizer of the targets: their own, or the shared one."""
        return self.target_tokenizer if self.target_tokenizer is not None else self.tokenizer

    def _tokenizer(self, run_dir):
        tokenizer = super()._tokenizer(run_dir)
        spec = self.options.target_tokenizer
        if spec is not None:
            saved = run_dir / TARGET_TOKENIZER_FILE if run_dir is not None else None
            if saved is not None and saved.exists():
                self.target_tokenizer = load_tokenizer(saved)
            elif spec.get("path"):
                self.target_tokenizer = load_tokenizer(spec["path"])
            else:
                kind = spec.get("kind", "byte")
                texts = self.source.target_texts() if TOKENIZERS.get(kind).learns_vocabulary else ()
                self.target_tokenizer = build_tokenizer(
                    kind, texts, **{k: v for k, v in spec.items() if k not in ("kind", "path")})
            self.source.target_tokenizer = self.target_tokenizer
        return tokenizer

    def sync_model(self) -> None:
        """One tokenizer: the model's vocabulary is its. Two: the decoder's is the
        targets', and ``model.encoder.vocab_size`` the sources'."""
        if self.speech:  # frames for the encoder, the tokenizer's vocabulary for the decoder
            super().sync_model()
            size = self.tokenizer.vocab_size
            self.config.model.vocab_size = _agreed("model.vocab_size", self.config.model.vocab_size, size)
            return
        if self.target_tokenizer is None:
            return super().sync_model()
        cfg = self.config.model
        cfg.input = "tokens"
        encoder = dict(cfg.encoder or {})
        encoder["vocab_size"] = _agreed("model.encoder.vocab_size", encoder.get("vocab_size"),
                                        self.tokenizer.vocab_size)
        cfg.vocab_size = _agreed("model.vocab_size", cfg.vocab_size, self.target_tokenizer.vocab_size)
        cfg.encoder = encoder

    def save_artifacts(self, run_dir) -> None:
        super().save_artifacts(run_dir)
        if self.target_tokenizer is not None:
            self.target_tokenizer.save(run_dir / TARGET_TOKENIZER_FILE)

    def build_model(self):
        cfg = self.config.model
        if cfg.encoder is None:
            cfg.encoder = {}
        model = build_seq2seq(cfg)
        model.label_smoothing = self.options.label_smoothing
        return model

    def build_head(self, backbone):
        raise NotImplementedError("an encoder-decoder owns its output layer")

    def items(self, batch: Batch) -> int:
        """Throughput counts source and target tokens."""
        return batch.n_positions + int((batch.targets != IGNORE).sum())

    def metric(self) -> Metric:
        return TokenAccuracy()

    @property
    def max_output_length(self) -> int:
        return self.options.max_output_length or self.config.model.context_length

    def decode_batch(self, model, batch: Batch, *, beam: int | None = None, n_best: int = 1,
                     length_penalty: float | None = None, max_length: int | None = None,
                     sampling: SamplingConfig | None = None, seed: int | None = None,
                     cache: bool = True) -> list[list[Hypothesis]]:
        """The ``n_best`` outputs of each source row of ``batch``, best first."""
        tok = self.output_tokenizer
        beam = beam or self.options.beam
        longest = max_length or self.max_output_length
        limit = getattr(getattr(model, "module", model), "max_positions", None)
        if limit is not None:
            longest = min(longest, limit - 1)  # <bos> takes the first position
        kw = dict(bos_id=tok.bos_id, eos_id=tok.eos_id, cache=cache, max_length=longest)
        if beam == 1 and n_best == 1:
            return [[h] for h in decode(model, batch.inputs, batch.padding_mask, sampling=sampling,
                                        seed=seed, **kw)]  # seed: one, or one per row
        if sampling is not None:
            raise ConfigError("sampling draws one output per source; it does not combine with "
                              "beam search or n-best lists")
        config = BeamConfig(beam=beam, n_best=n_best, length_penalty=(
            self.options.length_penalty if length_penalty is None else length_penalty))
        return beam_search(model, batch.inputs, batch.padding_mask, config=config, **kw)

    def text(self, tokens: list[int]) -> str:
        """The text of output tokens (without a final ``<eos>``)."""
        tok = self.output_tokenizer
        return tok.decode([t for t in tokens if t != tok.eos_id])

    @torch.no_grad()
    def evaluate_batches(self, model, batches, *, name: str = "val") -> dict[str, float]:
        model = getattr(model, "module", model)  # (DDP wraps the model)
        kept, cap = [], self.options.eval_decode

        def watched():
            seen = 0
            for batch in batches:
                if seen < cap:
                    kept.append(_first_rows(batch, cap - seen))
                    seen += min(batch.size, cap - seen)
                yield batch

        metrics = super().evaluate_batches(model, watched(), name=name)
        if kept:
            metrics.update(self.decode_scores(model, kept))
        return metrics

    def decode_scores(self, model, batches: list[Batch]) -> dict[str, float]:
        """The text metrics of decoding ``batches`` against their targets, and the
        decoding rate (sentences per second)."""
        device = next(model.parameters()).device
        tok = self.output_tokenizer
        hyps, refs, hyp_ids, ref_ids = [], [], [], []
        start, n = time.perf_counter(), 0
        was_training = model.training
        model.eval()
        try:
            for batch in batches:
                batch = batch.to(device)
                for best, target in zip(self.decode_batch(model, batch), batch.targets.tolist()):
                    reference = [t for t in target if t != IGNORE and t != tok.eos_id]
                    tokens = [t for t in best[0].tokens if t != tok.eos_id]
                    hyps.append(tok.decode(tokens))
                    refs.append(tok.decode(reference))
                    hyp_ids.append(tokens)
                    ref_ids.append(reference)
                n += batch.size
        finally:
            model.train(was_training)
        seconds = time.perf_counter() - start
        return {**text_scores(hyps, refs, hyp_ids, ref_ids, bleu_tokenize=self.options.bleu_tokenize),
                "decode_sentences_per_s": n / max(seconds, 1e-9)}

    def selection(self, name: str) -> str:
        directions = {"val_loss": "min", **DIRECTIONS}
        if name not in directions:
            raise ConfigError(f"train.best_metric {name!r} is not a metric of seq2seq; valid: "
                              f"{', '.join(sorted(directions))}")
        if name in DIRECTIONS and name != "token_accuracy" and self.options.eval_decode == 0:
            raise ConfigError(f"train.best_metric {name!r} needs decoded outputs; "
                              "task_options.eval_decode is 0")
        return directions[name]

    def pipeline(self, model, run_dir=None):
        if self.speech:
            from seqlab.tasks.speech_pipeline import Seq2SeqSpeechPipeline

            return Seq2SeqSpeechPipeline(self, model, run_dir)
        from seqlab.tasks.seq2seq_pipeline import Seq2SeqPipeline

        return Seq2SeqPipeline(self, model, run_dir)


def _agreed(where: str, current: int | None, size: int) -> int:
    """The tokenizer's ``size``, or a ConfigError when the config set another."""
    if current is not None and current != size:
        raise ConfigError(f"{where} is {current} but its tokenizer has {size} tokens; leave it "
                          "unset to take the tokenizer's")
    return size


def _first_rows(batch: Batch, n: int) -> Batch:
    """The first ``n`` rows of ``batch`` (all of it when it has no more)."""
    if batch.size <= n:
        return batch

    def take(t):
        return None if t is None else t[:n]

    return Batch(take(batch.inputs), take(batch.targets), take(batch.padding_mask),
                 {k: take(v) for k, v in batch.extras.items()}, take(batch.index))


__all__ = ["Seq2Seq", "Seq2SeqOptions", "TokenAccuracy"]
