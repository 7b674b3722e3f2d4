"""Acoustic features on torch: log-mel spectrograms and MFCCs, per-utterance
normalisation, and SpecAugment masking.

The definitions follow librosa's defaults, and a test compares them with librosa:
a centred STFT (zero padding) with a periodic Hann window, a power spectrogram, Slaney's
mel scale with Slaney's area normalisation, decibels as ``10 log10(max(S, 1e-10))``
clipped to ``top_db`` below the utterance's peak, and MFCCs as the orthonormal DCT-II
of those decibels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

_MEL_BREAK_HZ, _MEL_BREAK = 1000.0, 15.0  # Slaney's scale: linear below 1 kHz, log above
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: Tensor) -> Tensor:
    linear = hz / (200.0 / 3)
    return torch.where(hz >= _MEL_BREAK_HZ,
                       _MEL_BREAK + torch.log(hz.clamp(min=1e-10) / _MEL_BREAK_HZ) / _LOG_STEP, linear)


def mel_to_hz(mel: Tensor) -> Tensor:
    linear = mel * (200.0 / 3)
    return torch.where(mel >= _MEL_BREAK, _MEL_BREAK_HZ * torch.exp(_LOG_STEP * (mel - _MEL_BREAK)),
                       linear)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters on Slaney's mel scale, each scaled to
    unit area (``2 / bandwidth``)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(torch.tensor(f_min, dtype=torch.float64))),
                                     float(hz_to_mel(torch.tensor(f_max, dtype=torch.float64))),
                                     n_mels + 2, dtype=torch.float64))
    widths = edges[1:] - edges[:-1]  # (n_mels + 1,)
    ramps = edges[:, None] - freqs[None, :]  # (n_mels + 2, F)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.float()


@dataclass(frozen=True)
class FeatureConfig:
    """``kind``: ``logmel`` or ``mfcc``; window and hop in samples (25 ms and 10 ms at
    16 kHz by default)."""

    kind: str = "logmel"
    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 80
    n_mfcc: int = 13
    f_min: float = 0.0
    f_max: float | None = None
    top_db: float | None = 80.0

    def __post_init__(self):
        if self.kind not in ("logmel", "mfcc"):
            raise ValueError(f"feature kind must be logmel or mfcc, got {self.kind!r}")
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc ({self.n_mfcc}) cannot exceed n_mels ({self.n_mels})")

    @property
    def dim(self) -> int:
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels


class SpeechFeatures:
    """Waveforms (T,) or (B, T) -> features (frames, dim) or (B, frames, dim)."""

    def __init__(self, config: FeatureConfig = FeatureConfig()):
        self.config = c = config
        self.window = torch.hann_window(c.n_fft, periodic=True)
        self.filters = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.f_min, c.f_max)
        self.dct = _dct_matrix(c.n_mels, c.n_mfcc) if c.kind == "mfcc" else None

    def power_mel(self, waveform: Tensor) -> Tensor:
        """(..., frames, n_mels) mel power spectrogram."""
        c = self.config
        spec = torch.stft(waveform.float(), c.n_fft, c.hop_length, window=self.window,
                          center=True, pad_mode="constant", return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2  # (..., F, frames)
        return (self.filters @ power).transpose(-1, -2)

    def __call__(self, waveform: Tensor) -> Tensor:
        db = power_to_db(self.power_mel(waveform), self.config.top_db)
        return db if self.dct is None else db @ self.dct


class StreamingFeatures:
    """The features of audio that arrives in pieces: ``push(samples)`` returns the
    frames the samples so far complete (a frame needs ``n_fft // 2`` samples past its
    centre), ``finish()`` the rest, as if the end were zero padded. Together they equal
    ``SpeechFeatures`` over the whole signal when ``top_db`` is None (the clip to the
    utterance's peak needs the whole utterance)."""

    def __init__(self, features: SpeechFeatures):
        if features.config.top_db is not None:
            raise ValueError("streaming features need top_db None: clipping to the "
                             "utterance's peak needs the whole utterance")
        self.features = features
        self.pending = torch.zeros(features.config.n_fft // 2)  # the centred STFT's left pad

    def _frames(self) -> Tensor:
        c = self.features.config
        n = 0 if len(self.pending) < c.n_fft else (len(self.pending) - c.n_fft) // c.hop_length + 1
        if n == 0:
            return torch.zeros(0, c.n_mfcc if c.kind == "mfcc" else c.n_mels)
        used = self.pending[:(n - 1) * c.hop_length + c.n_fft]
        self.pending = self.pending[n * c.hop_length:]
        spec = torch.stft(used, c.n_fft, c.hop_length, window=self.features.window,
                          center=False, return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2
        db = power_to_db((self.features.filters @ power).transpose(-1, -2), None)
        return db if self.features.dct is None else db @ self.features.dct

    def push(self, samples) -> Tensor:
        """(frames, dim) completed by these samples (possibly none)."""
        self.pending = torch.cat([self.pending, torch.as_tensor(samples, dtype=torch.float32)])
        return self._frames()

    def finish(self) -> Tensor:
        """The last frames, reading zeros past the end."""
        self.pending = torch.cat([self.pending, torch.zeros(self.features.config.n_fft // 2)])
        return self._frames()


def power_to_db(power: Tensor, top_db: float | None = 80.0) -> Tensor:
    """``10 log10(max(power, 1e-10))``, clipped to ``top_db`` below each utterance's peak."""
    db = 10.0 * torch.log10(power.clamp(min=1e-10))
    if top_db is not None:
        peak = db.amax(dim=(-2, -1), keepdim=True)
        db = torch.maximum(db, peak - top_db)
    return db


def _dct_matrix(n: int, k: int) -> Tensor:
    """(n, k): x (..., n) @ it is the first k coefficients of the orthonormal DCT-II."""
    i = torch.arange(n, dtype=torch.float64)
    basis = torch.cos(math.pi / n * (i[:, None] + 0.5) * torch.arange(k, dtype=torch.float64)[None, :])
    basis *= math.sqrt(2.0 / n)
    basis[:, 0] /= math.sqrt(2.0)
    return basis.float()


def normalize_utterance(features: Tensor, eps: float = 1e-5) -> Tensor:
    """Each feature of one utterance (frames, dim) to zero mean and unit variance over
    its frames (what removes a recording's gain and channel)."""
    mean = features.mean(dim=-2, keepdim=True)
    std = features.std(dim=-2, keepdim=True, unbiased=False)
    return (features - mean) / (std + eps)


def spec_augment(features: Tensor, generator: torch.Generator, *, freq_masks: int = 2,
                 freq_width: int = 15, time_masks: int = 2, time_width: int = 40,
                 max_time_share: float = 0.2) -> Tensor:
    """SpecAugment (Park et al., 2019): zero ``freq_masks`` bands of up to ``freq_width``
    features and ``time_masks`` spans of up to ``time_width`` frames (each at most
    ``max_time_share`` of the utterance) of one utterance (frames, dim); a new tensor,
    drawn from ``generator``."""
    out = features.clone()
    frames, dim = out.shape

    def draw(high: int) -> int:
        return int(torch.randint(0, max(high, 0) + 1, (1,), generator=generator))

    for _ in range(freq_masks):
        width = draw(min(freq_width, dim))
        start = draw(dim - width)
        out[:, start:start + width] = 0.0
    limit = min(time_width, int(max_time_share * frames))
    for _ in range(time_masks):
        width = draw(limit)
        start = draw(frames - width)
        out[start:start + width] = 0.0
    return out


__all__ = ["FeatureConfig", "SpeechFeatures", "StreamingFeatures", "hz_to_mel", "mel_filterbank", "mel_to_hz",
           "normalize_utterance", "power_to_db", "spec_augment"]
