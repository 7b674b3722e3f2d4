"""Reading audio: WAV, FLAC and OGG files through soundfile (libsndfile), as mono float32
at the rate a model wants.

``read_audio(path, sample_rate)`` decodes a file, averages its channels, and resamples
it when its rate differs (``scipy.signal.resample_poly``, a polyphase filter; with
``resample_to_rate=False`` a different rate is an error naming both). A file that cannot be
decoded, holds no samples, or is silent (no sample louder than ``silence_db`` below
full scale) is refused with a one-line error naming it: each would otherwise train a
recogniser on nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from seqlab.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``samples`` (T,) at ``rate`` Hz as float32 at ``target`` Hz (polyphase filtering)."""
    if rate == target:
        return samples.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), int(target))
    return resample_poly(samples, target // g, rate // g).astype(np.float32)


def read_audio(path: str | Path, sample_rate: int = 16000, *, resample_to_rate: bool = True,
               silence_db: float = 60.0) -> np.ndarray:
    """The samples of one audio file, mono float32 in [-1, 1] at ``sample_rate`` Hz.

    Raises:
        DataError: the file is missing or cannot be decoded, holds no samples, is silent,
            or (``resample_to_rate=False``) has another sample rate; the message names
            the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such audio file")
    return _decode(str(path), str(path), sample_rate, resample_to_rate, silence_db)


def decode_audio(data: bytes, name: str, sample_rate: int = 16000, *,
                 resample_to_rate: bool = True, silence_db: float = 60.0) -> np.ndarray:
    """``read_audio`` for the bytes of a file (a WAV, FLAC or OGG file sent over HTTP);
    errors name it ``name``."""
    import io

    return _decode(io.BytesIO(data), name, sample_rate, resample_to_rate, silence_db)


def _decode(source, name: str, sample_rate: int, resample_to_rate: bool,
            silence_db: float) -> np.ndarray:
    try:
        import soundfile
    except ImportError:
        raise DataError("reading audio needs soundfile: pip install soundfile") from None
    try:
        data, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, OSError, TypeError) as e:
        reason = " ".join(str(e).split()).replace(f"Error opening {name!r}: ", "")
        raise DataError(f"{name}: cannot decode audio ({reason})") from None
    if data.shape[0] == 0:
        raise DataError(f"{name}: the audio holds no samples")
    samples = data.mean(axis=1)
    peak = float(np.abs(samples).max())
    if peak <= 10 ** (-silence_db / 20):
        level = f"{20 * math.log10(peak):.0f} dBFS" if peak > 0 else "digital silence"
        raise DataError(f"{name}: the audio is silent (peak {level}, below -{silence_db:g} dBFS)")
    if rate != sample_rate:
        if not resample_to_rate:
            raise DataError(f"{name}: sampled at {rate} Hz, but this model reads {sample_rate} Hz "
                            "(resample it, or let seqlab resample)")
        samples = resample(samples, rate, sample_rate)
    return samples


__all__ = ["AUDIO_SUFFIXES", "decode_audio", "read_audio", "resample"]
