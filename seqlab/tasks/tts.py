"""The ``tts`` objective: speech synthesis from text, trained on the ``speech`` source's
utterances read the other way round (the transcript in, its log-mel frames out).

The model (:class:`~seqlab.models.tts.SpeechSynthesizer`) encodes the text with
``model.encoder``'s stack and decodes ``frames_per_step`` frames per step with
``model``'s causal stack, attending to the text with ``model.cross_attention``; a stop
logit per step ends synthesis. Training is teacher-forced. Each evaluation reports the
loss, the frames' mean absolute error (in normalised units) and the stop accuracy.
``seqlab.load`` returns a :class:`~seqlab.tasks.tts_pipeline.TTSPipeline` (``speak``:
text to a WAV file through a Griffin-Lim vocoder).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqlab.data.batch import Batch
from seqlab.errors import ConfigError
from seqlab.models.build import build_tts
from seqlab.models.heads import LossSum
from seqlab.tasks.base import Metric, Objective, _fill, register_objective


@dataclass
class TTSOptions:
    """``frames_per_step``: frames the decoder makes per step (Tacotron's reduction
    factor); ``stop_weight``: weight of the stop logit's positives (one per utterance);
    ``prenet_dropout``: of the decoder's pre-net, on in synthesis too;
    ``stop_threshold``: the stop probability that ends synthesis; ``max_seconds``: the
    longest synthesis; ``griffin_lim_iters``: the vocoder's iterations;
    ``guided_attention``: the weight of a loss on attention far from the diagonal of
    text against time (Tachibana et al., 2017), which teaches the alignment sooner."""

    frames_per_step: int = 3
    stop_weight: float = 5.0
    prenet_dropout: float = 0.5
    guided_attention: float = 0.0
    stop_threshold: float = 0.5
    max_seconds: float = 10.0
    griffin_lim_iters: int = 60

    def __post_init__(self):
        if self.frames_per_step < 1:
            raise ConfigError(f"task_options.frames_per_step must be >= 1, got {self.frames_per_step}")
        if not 0.0 <= self.prenet_dropout < 1.0:
            raise ConfigError(f"task_options.prenet_dropout must be in [0, 1), got {self.prenet_dropout}")
        if not 0.0 < self.stop_threshold < 1.0:
            raise ConfigError(f"task_options.stop_threshold must be in (0, 1), got {self.stop_threshold}")
        if self.guided_attention < 0:
            raise ConfigError(f"task_options.guided_attention must be >= 0, got {self.guided_attention}")
        for key in ("stop_weight", "max_seconds", "griffin_lim_iters"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"task_options.{key} must be positive, got {getattr(self, key)}")


class SynthesisErrors(Metric):
    """Teacher-forced frame error (mean absolute, normalised units) and stop accuracy
    over the real decoder steps."""

    directions = {"frame_mae": "min", "stop_accuracy": "max"}

    def __init__(self):
        self.error = self.right = self.steps = 0.0

    def update(self, result: LossSum, batch: Batch) -> None:
        out = result.outputs  # (B, T, n_out + 1)
        mask = batch.extras.get("decoder_mask")
        real = mask if mask is not None else torch.ones(out.shape[:2], dtype=torch.bool)
        last = real.sum(1, keepdim=True) - 1
        stop = torch.arange(out.shape[1])[None] == last
        error = (out[..., :-1] - batch.targets).abs().mean(-1)
        self.error += float(error[real].sum())
        self.right += float(((out[..., -1] > 0) == stop)[real].sum())
        self.steps += float(real.sum())

    def compute(self) -> dict[str, float]:
        n = max(self.steps, 1.0)
        return {"frame_mae": self.error / n, "stop_accuracy": self.right / n}


@register_objective("tts", TTSOptions, sources=("speech",), modes=("causal",),
                    model_defaults={"encoder": {}})
class TTS(Objective):
    item_name = "frames"
    text_outputs = True  # the transcripts' tokenizer reads the text in

    @classmethod
    def check(cls, config) -> None:
        d = config.data
        if d.features != "logmel":
            raise ConfigError(f"tts makes log-mel frames for its vocoder; data.features is "
                              f"{d.features!r}")
        if d.normalize == "utterance":
            raise ConfigError("tts needs the frames' loudness: data.normalize utterance removes "
                              "it; use global (or none)")
        if d.spec_augment:
            raise ConfigError("data.spec_augment masks the frames tts must make; turn it off")

    def make_source(self):
        source = super().make_source()
        source.layout = "tts"
        source.frames_per_step = self.options.frames_per_step
        cfg = self.config.model
        source.source_limit = cfg.context_length * self.options.frames_per_step
        source.text_limit = cfg.encoder_config().context_length
        return source

    def sync_model(self) -> None:
        """Text in (the tokenizer's vocabulary for the encoder), frame steps out."""
        cfg = self.config.model
        if cfg.input not in (None, "tokens"):
            raise ConfigError(f"model.input is {cfg.input!r}, but a tts encoder reads text; "
                              "leave model.input unset")
        cfg.input = "tokens"
        size = self.tokenizer.vocab_size
        _fill(cfg, "vocab_size", size, f"the tokenizer has {size} tokens")
        _fill(cfg, "input_dim", self.n_out, f"a decoder step holds {self.n_out} frame values")

    @property
    def n_out(self) -> int:
        return self.options.frames_per_step * self.source.input_dim

    def build_model(self):
        o = self.options
        return build_tts(self.config.model, self.n_out, stop_weight=o.stop_weight,
                         prenet_dropout=o.prenet_dropout, guided_attention=o.guided_attention)

    def build_head(self, backbone):
        raise NotImplementedError("a speech synthesiser owns its output layer")

    def items(self, batch: Batch) -> int:
        mask = batch.extras.get("decoder_mask")
        steps = int(mask.sum()) if mask is not None else batch.targets.shape[0] * batch.targets.shape[1]
        return steps * self.options.frames_per_step

    def metric(self) -> Metric:
        return SynthesisErrors()

    def evaluate_batches(self, model, batches, *, name: str = "val") -> dict[str, float]:
        """The pre-net's dropout stays on in evaluation, as in synthesis, drawn from the
        run's seed: every evaluation of the same weights gives the same numbers."""
        device = next(model.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.config.seed)
            return super().evaluate_batches(model, batches, name=name)

    def pipeline(self, model, run_dir=None):
        from seqlab.tasks.tts_pipeline import TTSPipeline

        return TTSPipeline(self, model, run_dir)


__all__ = ["SynthesisErrors", "TTS", "TTSOptions"]
