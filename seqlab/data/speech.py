"""The ``speech`` source: utterances (an audio file and its transcript) listed in a
manifest (JSON Lines, TSV or CSV), as acoustic features for a recogniser.

Each manifest row names its audio file (``source_field``, default ``audio``; relative
paths are read from the manifest's folder) and its transcript (``target_field``,
default ``text``). Audio is read with soundfile and resampled to ``sample_rate``
(:func:`~seqlab.data.audio.read_audio`, which refuses undecodable, empty and silent
files naming them), then turned into log-mel or MFCC frames
(:class:`~seqlab.data.speech_features.SpeechFeatures`) and normalised:

- ``normalize: utterance``: each utterance to zero mean and unit variance per feature
  (removes gain and channel; needs the whole utterance, so it does not stream);
- ``normalize: global``: by the mean and deviation of the training frames (saved in the
  run's ``data.json``; streams);
- ``normalize: none``.

Transcripts are encoded with the run's tokenizer (learnt from the training transcripts).
The objective picks the layout: ``ctc`` (targets: the transcript ids) or ``seq2seq``
(the ``parallel`` source's decoder inputs and targets). Utterances longer than
``max_source_length`` frames (default: what the encoder's positions hold), transcripts
longer than ``max_target_length`` tokens, and, for CTC, transcripts needing more steps
than the encoder emits for their audio (a token per step, plus a blank between repeated
tokens) are dropped with one warning per split naming the first (``too_long: drop``) or
stop the run naming it and both lengths (``too_long: error``). With ``spec_augment``,
training batches are masked in time and frequency (SpecAugment), seeded by the batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seqlab.data.audio import read_audio
from seqlab.data.batch import IGNORE, Batch, pad
from seqlab.data.parallel import Pairs, ParallelOptions, ParallelSource
from seqlab.data.records import Record, field_of
from seqlab.data.sampling import seeded_rng
from seqlab.data.sources import register_source
from seqlab.data.speech_features import (FeatureConfig, SpeechFeatures, normalize_utterance,
                                         spec_augment)
from seqlab.errors import ConfigError, DataError

logger = logging.getLogger("seqlab")

AUGMENT_STREAM = 29
NORMALIZE = ("utterance", "global", "none")


@dataclass
class SpeechOptions(ParallelOptions):
    source_field: str = "audio"
    target_field: str = "text"
    sample_rate: int = 16000
    features: str = "logmel"
    n_mels: int = 80
    n_mfcc: int = 13
    n_fft: int = 400
    hop_length: int = 160
    top_db: float | None = 80.0
    normalize: str = "utterance"
    spec_augment: bool = False
    freq_masks: int = 2
    freq_width: int = 15
    time_masks: int = 2
    time_width: int = 40

    def __post_init__(self):
        super().__post_init__()
        if self.normalize not in NORMALIZE:
            raise ConfigError(f"data.normalize must be one of {', '.join(NORMALIZE)}, got "
                              f"{self.normalize!r}")
        if self.sample_rate <= 0:
            raise ConfigError(f"data.sample_rate must be positive, got {self.sample_rate}")
        try:
            self.feature_config()
        except ValueError as e:
            raise ConfigError(f"data: {e}") from None

    def feature_config(self) -> FeatureConfig:
        return FeatureConfig(kind=self.features, sample_rate=self.sample_rate, n_fft=self.n_fft,
                             hop_length=self.hop_length, n_mels=self.n_mels, n_mfcc=self.n_mfcc,
                             top_db=self.top_db)


def ctc_steps(ids: np.ndarray) -> int:
    """The fewest CTC steps that can emit ``ids``: one per token, plus a blank between
    each pair of equal neighbours."""
    return len(ids) + int(np.sum(ids[1:] == ids[:-1])) if len(ids) else 0


@register_source("speech", SpeechOptions, labels=(None,), inputs="features")
class SpeechSource(ParallelSource):
    """Utterances as feature frames and transcript ids (see the module docstring)."""

    input_kind = "features"
    layout = "ctc"  # "seq2seq" (a recogniser's decoder) or "tts" (text in, frames out): the objective's
    frames_per_step = 1  # tts: frames the decoder makes per step
    text_limit: int | None = None  # tts: the text encoder's positions
    positions = staticmethod(lambda frames: frames)  # encoder positions of n frames (objective)
    stats: dict | None = None  # global normalisation: {"mean": [...], "std": [...]}

    def __init__(self, options, ctx):
        super().__init__(options, ctx)
        self.extractor = SpeechFeatures(options.feature_config())
        self._raw: dict = {}  # while loading: the training files' features read for the statistics

    @property
    def input_dim(self) -> int:
        return self.extractor.config.dim

    @property
    def limits(self) -> tuple[int, int]:
        o = self.options
        frames = o.max_source_length or self.source_limit or self.ctx.max_length
        if self.layout == "ctc":  # no decoder positions: what the frames can emit decides
            return frames, o.max_target_length or 2 ** 31
        if self.layout == "tts":  # the text is the encoder's
            return frames, o.max_target_length or self.text_limit or self.ctx.max_length
        return frames, o.max_target_length or self.ctx.max_length - 1

    def texts(self):
        return self.target_texts()

    # -- features -------------------------------------------------------------------------
    def audio_path(self, record: Record) -> Path:
        path = Path(str(field_of(record, self.options.source_field, "audio")))
        if not path.is_absolute() and record.file is not None:
            path = Path(record.file).parent / path
        return path

    def raw_features(self, samples: np.ndarray) -> np.ndarray:
        """(frames, dim) features of mono samples at the source's rate, before any
        normalisation across the utterance."""
        return self.extractor(torch.from_numpy(np.ascontiguousarray(samples))).numpy()

    def normalise(self, frames: np.ndarray) -> np.ndarray:
        how = self.options.normalize
        if how == "utterance":
            return normalize_utterance(torch.from_numpy(frames)).numpy()
        if how == "global":
            if self.stats is None:
                raise DataError("global normalisation has no statistics yet (fit on the "
                                "training data first)")
            return ((frames - np.asarray(self.stats["mean"], dtype=np.float32))
                    / np.asarray(self.stats["std"], dtype=np.float32)).astype(np.float32)
        return frames

    def features(self, audio: str | Path | np.ndarray) -> np.ndarray:
        """The normalised (frames, dim) features of an audio file or of mono samples at
        ``sample_rate``, as the model reads them."""
        samples = audio if isinstance(audio, np.ndarray) else read_audio(
            audio, self.options.sample_rate)
        if len(samples) == 0:
            raise DataError("the audio holds no samples")
        return self.normalise(self.raw_features(samples))

    def _fit_stats(self, raw: list[np.ndarray]) -> None:
        frames = np.concatenate(raw).astype(np.float64)
        self.stats = {"mean": frames.mean(0).tolist(), "std": (frames.std(0) + 1e-5).tolist()}

    def fitted(self) -> dict:
        return {"normalize": self.stats} if self.stats is not None else {}

    def attach(self, tokenizer, fitted=None) -> None:
        super().attach(tokenizer, fitted)
        if fitted and fitted.get("normalize"):
            self.stats = fitted["normalize"]

    # -- encoding -------------------------------------------------------------------------
    def load(self, tokenizer, fitted=None) -> None:
        if self.options.normalize == "global" and not (fitted and fitted.get("normalize")):
            records = self._training_records()
            if self.options.val_path is None:
                records = self._split(records)[0]
            self._raw = {}  # kept for _encode, which would otherwise read each file again
            for r in records:
                path = self.audio_path(r)
                self._raw[path] = self.raw_features(read_audio(path, self.options.sample_rate))
            self._fit_stats(list(self._raw.values()))
            fitted = self.fitted()
        try:
            super().load(tokenizer, fitted)
        finally:
            self._raw = {}

    def _encode(self, records: list[Record], name: str) -> Pairs:
        o, (max_frames, max_tgt) = self.options, self.limits
        pairs, long = Pairs([], [], []), []
        for r in records:
            text = str(field_of(r, o.target_field, "transcript"))
            if not text.strip():
                raise DataError(f"{r.where}: the transcript is empty")
            path = self.audio_path(r)
            raw = self._raw.pop(path, None)
            frames = self.features(path) if raw is None else self.normalise(raw)
            ids = self.output_tokenizer.encode_array(text)
            if self.layout == "tts":  # whole decoder steps; the tail is silence
                frames = frames[:len(frames) // self.frames_per_step * self.frames_per_step]
            why = None
            if len(frames) > max_frames:
                why = (f"its {len(frames)} frames exceed the {max_frames} this model takes "
                       "(data.max_source_length)")
            elif len(ids) > max_tgt:
                why = (f"its transcript is {len(ids)} tokens long; the limit is {max_tgt} "
                       "(data.max_target_length)")
            elif self.layout == "tts" and len(frames) == 0:
                why = f"it is shorter than one decoder step ({self.frames_per_step} frames)"
            elif self.layout == "ctc" and ctc_steps(ids) > self.positions(len(frames)):
                why = (f"its transcript needs {ctc_steps(ids)} CTC steps ({len(ids)} tokens and a "
                       f"blank between repeats) but its {len(frames)} frames give the encoder "
                       f"{self.positions(len(frames))}")
            if why is not None:
                long.append(f"{r.where} ({path.name}): {why}")
                continue
            pairs.sources.append(frames)
            pairs.targets.append(ids)
            pairs.wheres.append(r.where)
        if long:
            if o.too_long == "error":
                raise DataError(f"{name}: {len(long)} utterance(s) cannot be used, the first: "
                                f"{long[0]}")
            logger.warning("%s: %d of %d utterances were dropped; the first: %s", name, len(long),
                           len(records), long[0])
        if not len(pairs):
            raise DataError(f"{name}: no utterance is left to use")
        return pairs

    # -- batches --------------------------------------------------------------------------
    def batch(self, pairs: Pairs, indices, *, augment_key: tuple[int, ...] | None = None) -> Batch:
        if self.layout == "tts":
            return self._tts_batch(pairs, indices)
        rows = [pairs.sources[i] for i in indices]
        if augment_key is not None and self.options.spec_augment:
            rows = self._augment(rows, augment_key)
        feats, mask = pad(rows, value=0.0, dtype=torch.float32)
        index = torch.as_tensor(np.asarray(indices))
        if self.layout == "seq2seq":
            targets, extras = self.decoder_layout([pairs.targets[i] for i in indices])
            return Batch(feats, targets, mask, extras, index)
        targets, _ = pad([pairs.targets[i] for i in indices], value=IGNORE, dtype=torch.long)
        return Batch(feats, targets, mask, {}, index)

    def _tts_batch(self, pairs: Pairs, indices) -> Batch:
        """Text ids in; the frames, ``frames_per_step`` to a step, as targets, and a zero
        step then the targets shifted by one as the decoder's inputs."""
        r = self.frames_per_step
        ids, mask = pad([pairs.targets[i] for i in indices], value=self.tokenizer.pad_id,
                        dtype=torch.long)
        steps = [pairs.sources[i].reshape(-1, r * self.input_dim) for i in indices]
        shifted = [np.concatenate([np.zeros((1, s.shape[1]), np.float32), s[:-1]]) for s in steps]
        decoder, decoder_mask = pad(shifted, value=0.0, dtype=torch.float32)
        targets, _ = pad(steps, value=0.0, dtype=torch.float32)
        extras = {"decoder_inputs": decoder}
        if decoder_mask is not None:
            extras["decoder_mask"] = decoder_mask
        return Batch(ids, targets, mask, extras, torch.as_tensor(np.asarray(indices)))

    def _augment(self, rows: list[np.ndarray], key: tuple[int, ...]) -> list[np.ndarray]:
        o = self.options
        seeds = seeded_rng(self.ctx.seed, AUGMENT_STREAM, *key).integers(0, 2 ** 62, len(rows))
        out = []
        for row, seed in zip(rows, seeds):
            g = torch.Generator().manual_seed(int(seed))
            out.append(spec_augment(torch.from_numpy(row), g, freq_masks=o.freq_masks,
                                    freq_width=o.freq_width, time_masks=o.time_masks,
                                    time_width=o.time_width).numpy())
        return out

    def train_batch(self, step: int, micro: int) -> Batch:
        return self.batch(self.train, self.sampler.indices(step, micro), augment_key=(step, micro))

    def describe(self) -> str:
        frames = np.array([len(s) for s in self.train.sources])
        tgt = np.array([len(t) for t in self.train.targets])
        return (f"{len(self.train)} training and {len(self.val)} validation utterances; "
                f"{frames.min()}-{frames.max()} frames of {self.input_dim} "
                f"{self.options.features} features (mean {frames.mean():.0f}), transcripts "
                f"{tgt.min()}-{tgt.max()} tokens")


__all__ = ["SpeechOptions", "SpeechSource", "ctc_steps"]
