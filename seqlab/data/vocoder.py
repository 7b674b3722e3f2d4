"""Log-mel features back to audio on torch: decibels to mel power, mel power to a linear
power spectrum (non-negative least squares), and phase by fast Griffin-Lim.

It inverts ``SpeechFeatures`` with kind ``logmel``: the same periodic Hann window,
centred zero-padded STFT and Slaney mel filters. The result is an approximation: the
mel projection discards detail within each band and the features discard phase, so
the audio sounds buzzy, but its own log-mel features are close to the input's. A test
compares both steps with librosa's (``mel_to_stft`` and ``griffinlim``).
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
import torch
from torch import Tensor

from seqlab.data.speech_features import FeatureConfig, mel_filterbank
from seqlab.io import atomic_write

_FLOOR_DB = -100.0  # power_to_db's floor, 10 log10(1e-10): "no more than 1e-10", read as silence
_SILENT_PEAK = 1e-9


def db_to_power(db: Tensor) -> Tensor:
    """``10 ** (db / 10)``: the inverse of ``power_to_db`` where it did not clip."""
    return torch.pow(10.0, db / 10.0)


def mel_to_linear(mel_power: Tensor, filters: Tensor, iters: int = 200) -> Tensor:
    """(..., frames, n_mels) mel power -> (..., frames, n_fft // 2 + 1) non-negative
    linear power whose projection by ``filters`` (n_mels, n_fft // 2 + 1) approximates it.

    Non-negative least squares, each frame its own problem but all solved at once: FISTA
    (projected gradient with Nesterov momentum, step 1 / ||filters||_2^2) for ``iters``
    steps from the pseudo-inverse clamped at zero. With more bins than bands a frame has
    many best fits; this returns the one those steps reach, not the true spectrum.
    """
    if mel_power.shape[-1] != filters.shape[0]:
        raise ValueError(f"mel power has {mel_power.shape[-1]} bands but the filters "
                         f"have {filters.shape[0]}")
    dtype = mel_power.dtype if mel_power.is_floating_point() else torch.float32
    a = filters.to(mel_power.device, torch.float64)
    start_map = torch.linalg.pinv(a).T.to(dtype)  # (n_mels, F)
    step = float(1.0 / torch.linalg.matrix_norm(a, 2) ** 2)
    gram, a = (a.T @ a).to(dtype), a.to(dtype)  # (F, F), (n_mels, F)
    target = mel_power.to(dtype)
    target_a = target @ a  # the constant half of the gradient X A^T A - M A
    x = (target @ start_map).clamp(min=0.0)
    y, t = x, 1.0
    for _ in range(iters):
        x_next = (y - step * (y @ gram - target_a)).clamp(min=0.0)
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        y = x_next + ((t - 1.0) / t_next) * (x_next - x)
        x, t = x_next, t_next
    return x


def griffin_lim(magnitude: Tensor, n_fft: int, hop_length: int, *, iters: int = 60,
                momentum: float = 0.99, seed: int = 0, length: int | None = None) -> Tensor:
    """(frames, n_fft // 2 + 1) STFT magnitude -> a waveform (T,) whose STFT magnitude
    approximates it: fast Griffin-Lim (Perraudin, Balazs and Sondergaard, 2013).

    The phase starts uniformly random (a ``torch.Generator`` seeded with ``seed``, so
    one seed gives one waveform); each step resynthesises, re-analyses, extrapolates the
    re-analysis by ``momentum`` times its change since the last step, and keeps its
    phase with the given magnitude. The STFT is ``SpeechFeatures``': a periodic Hann
    window, centred, zero padded. ``length`` defaults to ``hop_length * (frames - 1)``.
    """
    bins = n_fft // 2 + 1
    if magnitude.ndim != 2 or magnitude.shape[-1] != bins:
        raise ValueError(f"magnitude must be (frames, {bins}) for n_fft {n_fft}, "
                         f"got {tuple(magnitude.shape)}")
    if momentum < 0:
        raise ValueError(f"momentum must be non-negative, got {momentum}")
    mag = magnitude.T.float()  # torch's layout: (F, frames)
    window = torch.hann_window(n_fft, periodic=True, device=mag.device)
    tiny = torch.finfo(mag.dtype).tiny

    def synth(spec: Tensor) -> Tensor:
        return torch.istft(spec, n_fft, hop_length, window=window, center=True, length=length)

    def analyse(wave: Tensor) -> Tensor:
        return torch.stft(wave, n_fft, hop_length, window=window, center=True,
                          pad_mode="constant", return_complex=True)

    generator = torch.Generator().manual_seed(seed)
    phase = torch.rand(mag.shape, generator=generator, dtype=mag.dtype).to(mag.device)
    spec = torch.polar(mag, phase * (2.0 * math.pi))
    previous = None
    for _ in range(iters):
        rebuilt = analyse(synth(spec))
        guess = rebuilt if previous is None else rebuilt + momentum * (rebuilt - previous)
        spec = mag * guess / (guess.abs() + tiny)
        previous = rebuilt
    return synth(spec)


class Vocoder:
    """Log-mel features (frames, n_mels) of one utterance, as ``SpeechFeatures`` makes
    them, -> a mono float32 waveform at ``config.sample_rate``, peak-normalised to 0.9.

    Bands at ``power_to_db``'s floor (-100 dB) are read as silence; features with
    nothing above it give zeros. Features clipped by ``top_db`` invert with their floor
    as a faint noise bed.
    """

    def __init__(self, config: FeatureConfig = FeatureConfig()):
        if config.kind != "logmel":
            raise ValueError(f"a vocoder needs logmel features, got {config.kind!r}: MFCCs "
                             f"keep only the first {config.n_mfcc} DCT coefficients of "
                             f"the {config.n_mels} mel bands, so the spectrum cannot be recovered")
        self.config = c = config
        self.filters = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.f_min, c.f_max)

    def __call__(self, db_frames: Tensor, *, iters: int = 60, seed: int = 0) -> np.ndarray:
        """The waveform (hop_length * (frames - 1),); ``iters`` Griffin-Lim steps from
        the phase drawn with ``seed``."""
        c = self.config
        db = torch.as_tensor(db_frames, dtype=torch.float32)
        if db.ndim != 2 or db.shape[-1] != c.n_mels:
            raise ValueError(f"features must be (frames, {c.n_mels}), got {tuple(db.shape)}")
        if not torch.isfinite(db.clamp(min=_FLOOR_DB)).all():
            raise ValueError("features must be finite decibels (or -inf)")
        mel = torch.where(db <= _FLOOR_DB + 1e-3, torch.zeros_like(db), db_to_power(db))
        linear = mel_to_linear(mel, self.filters.to(db.device))
        wave = griffin_lim(linear.sqrt(), c.n_fft, c.hop_length, iters=iters, seed=seed)
        peak = float(wave.abs().max()) if wave.numel() else 0.0
        if peak < _SILENT_PEAK:
            return np.zeros(wave.shape, dtype=np.float32)
        return (wave * (0.9 / peak)).cpu().numpy().astype(np.float32)

    def write(self, db_frames: Tensor, path: str | os.PathLike, **kw) -> None:
        """Write the waveform (``kw`` as for calling) to ``path`` as 16-bit PCM WAV at
        ``config.sample_rate``, atomically (a temporary file in the same folder, renamed
        over ``path``)."""
        import soundfile

        buffer = io.BytesIO()
        soundfile.write(buffer, self(db_frames, **kw), self.config.sample_rate,
                        subtype="PCM_16", format="WAV")
        atomic_write(path, buffer.getvalue())


__all__ = ["Vocoder", "db_to_power", "griffin_lim", "mel_to_linear"]
