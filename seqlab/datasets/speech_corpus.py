"""A speech corpus made on the machine: espeak-ng speaks numbers, dates and short
sentences in several voices, speeds and pitches, and noise is added at several levels.

Every text is written out in words before it is spoken, so the transcript is exactly
what was said (lower-case letters, spaces and apostrophes). A voice is an accent
(``en-us``, ``en-gb``, ``en-gb-scotland``, ...) with a variant (``m1``, ``f2``, ...), and
the split is by voice: the validation and test sets hold voices never heard in
training. Training utterances carry noise at a level drawn from ``snr_levels`` (None:
clean); the test set holds every test utterance at every level, so a recogniser is
scored clean and noisy on the same speech.

``write_speech_corpus(out)`` writes ``wav/*.wav`` (16-bit, resampled from espeak-ng's
22,050 Hz to ``sample_rate``) and
``train.jsonl``, ``val.jsonl``, ``test.jsonl`` with fields ``audio`` (the file, relative
to ``out``), ``text``, ``voice``, ``speed``, ``pitch`` and ``snr``.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np

from seqlab.errors import DataError
from seqlab.io import atomic_write

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029",
           "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "f5")
SNR_LEVELS = (None, 20.0, 10.0, 5.0)

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth",
             "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")
_SUBJECTS = ("the train", "my sister", "the old dog", "a small boat", "our teacher", "the wind",
             "his neighbour", "the red car", "a tired bird", "the market")
_VERBS = ("leaves", "arrives", "waits", "stops", "turns left", "slows down", "comes back",
          "moves on", "starts again", "goes home")
_WHEN = ("at noon", "before dawn", "after lunch", "every morning", "on sunday", "at night",
         "in the rain", "near the river", "by the station", "later today")


def number_words(n: int) -> str:
    """0 <= n < 1,000,000 in English words (British "and" after hundreds)."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number_words takes 0 to 999999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    rest = n % 1000
    head = number_words(n // 1000) + " thousand"
    if rest == 0:
        return head
    return head + (" and " if rest < 100 else " ") + number_words(rest)


def ordinal_words(n: int) -> str:
    """1st..31st as words: "first", "twenty third"."""
    words = number_words(n).split()
    last = words[-1]
    if last in _ORDINALS:
        words[-1] = _ORDINALS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def make_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` texts: numbers, dates and short sentences, in words."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            texts.append(number_words(rng.choice([rng.randrange(100), rng.randrange(10_000),
                                                  rng.randrange(1_000_000)])))
        elif kind == 1:
            texts.append(f"the {ordinal_words(rng.randint(1, 28))} of {rng.choice(MONTHS)}")
        else:
            texts.append(f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_WHEN)}")
    return texts


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``samples`` plus white noise ``snr_db`` decibels below their mean power."""
    power = float(np.mean(samples.astype(np.float64) ** 2))
    noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), samples.shape)
    return np.clip(samples + noise, -1.0, 1.0).astype(np.float32)


def speak(text: str, voice: str, speed: int, pitch: int, path: Path,
          espeak: str = "espeak-ng") -> None:
    """``text`` spoken by espeak-ng into the WAV file ``path``."""
    done = subprocess.run([espeak, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w",
                           str(path), text], capture_output=True, text=True, timeout=60)
    if done.returncode != 0 or not path.is_file():
        raise DataError(f"{espeak} could not speak {text!r} as {voice}: "
                        f"{done.stderr.strip()[:200]}")


def write_speech_corpus(out: str | Path, *, n_utterances: int = 1500, n_voices: int = 24,
                        val_voices: int = 3, test_voices: int = 3,
                        snr_levels: tuple = SNR_LEVELS, sample_rate: int = 16000,
                        seed: int = 0) -> dict[str, int]:
    """Speak ``n_utterances`` texts in ``n_voices`` voices (each utterance in one voice,
    speed and pitch), split by voice; returns the manifest row counts."""
    import soundfile
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        raise DataError("espeak-ng is not installed; install Debian's espeak-ng package "
                        "(setup.sh does)")
    if val_voices + test_voices >= n_voices:
        raise ValueError(f"{n_voices} voices leave none for training after {val_voices} "
                         f"validation and {test_voices} test voices")
    out = Path(out)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    voices = [f"{a}+{v}" for a in ACCENTS for v in VARIANTS]
    rng.shuffle(voices)
    voices = voices[:n_voices]
    split = {v: "test" if i < test_voices else "val" if i < test_voices + val_voices else "train"
             for i, v in enumerate(voices)}
    rows: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for i, text in enumerate(make_texts(n_utterances, seed)):
        voice = rng.choice(voices)  # not by i: make_texts cycles through its kinds
        speed, pitch = rng.randint(130, 200), rng.randint(25, 75)
        clean = out / "wav" / f"{i:05d}.wav"
        speak(text, voice, speed, pitch, clean)
        samples, rate = soundfile.read(str(clean), dtype="float32")
        g = math.gcd(rate, sample_rate)
        samples = resample_poly(samples, sample_rate // g, rate // g).astype(np.float32)
        soundfile.write(str(clean), samples, sample_rate, subtype="PCM_16")
        side = split[voice]
        levels = snr_levels if side == "test" else [rng.choice(snr_levels)]
        for snr in levels:
            path = clean
            if snr is not None:
                path = out / "wav" / f"{i:05d}-snr{snr:g}.wav"
                soundfile.write(str(path), add_noise(samples, snr, noise), sample_rate,
                                subtype="PCM_16")
            rows[side].append({"audio": str(path.relative_to(out)), "text": text, "voice": voice,
                               "speed": speed, "pitch": pitch, "snr": snr})
        if side != "test" and levels[0] is not None:
            clean.unlink()  # only the noisy copy trains
    for side, items in rows.items():
        atomic_write(out / f"{side}.jsonl", "".join(json.dumps(r) + "\n" for r in items))
    return {side: len(items) for side, items in rows.items()}


def write_voice_corpus(out: str | Path, *, voice: str = "en-us+m3", speed: int = 160,
                       pitch: int = 50, n_utterances: int = 1500, test: int = 100, val: int = 60,
                       sample_rate: int = 16000, seed: int = 0) -> dict[str, int]:
    """One voice, clean, as a speech synthesiser trains on: ``n_utterances`` texts spoken
    by ``voice`` at one speed and pitch, split by text into ``train.jsonl``,
    ``val.jsonl`` and ``test.jsonl`` (fields ``audio``, ``text``, ``voice``)."""
    import soundfile
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        raise DataError("espeak-ng is not installed; install Debian's espeak-ng package "
                        "(setup.sh does)")
    out = Path(out)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    texts = list(dict.fromkeys(make_texts(n_utterances, seed)))  # each text once
    random.Random(seed).shuffle(texts)
    rows = []
    for i, text in enumerate(texts):
        path = out / "wav" / f"{i:05d}.wav"
        speak(text, voice, speed, pitch, path)
        samples, rate = soundfile.read(str(path), dtype="float32")
        g = math.gcd(rate, sample_rate)
        samples = resample_poly(samples, sample_rate // g, rate // g).astype(np.float32)
        soundfile.write(str(path), samples, sample_rate, subtype="PCM_16")
        rows.append({"audio": str(path.relative_to(out)), "text": text, "voice": voice})
    splits = {"test": rows[:test], "val": rows[test:test + val], "train": rows[test + val:]}
    for side, items in splits.items():
        atomic_write(out / f"{side}.jsonl", "".join(json.dumps(r) + "\n" for r in items))
    return {side: len(items) for side, items in splits.items()}


def write_tone_corpus(out: str | Path, *, n_utterances: int = 40, letters: str = "abcdefgh",
                      max_letters: int = 5, sample_rate: int = 16000, seed: int = 0) -> None:
    """A corpus that needs no speech engine: each letter is a pair of tones (as a
    telephone keypad's digits are) sounding 60-110 ms, with short gaps and low noise;
    ``out/wav/*.wav`` and ``out/train.jsonl`` and ``out/val.jsonl`` (``audio``, ``text``),
    the last fifth for validation. Small and quick to learn: for tests and smoke runs."""
    import soundfile

    out = Path(out)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    low, high = np.linspace(400, 900, len(letters)), np.linspace(1200, 2600, len(letters))[::-1]
    rows = []
    for i in range(n_utterances):
        text = "".join(rng.choice(list(letters), rng.integers(1, max_letters + 1)))
        pieces = [np.zeros(int(0.05 * sample_rate))]
        for ch in text:
            k = letters.index(ch)
            t = np.arange(int(rng.uniform(0.06, 0.11) * sample_rate)) / sample_rate
            pieces += [0.3 * (np.sin(2 * np.pi * low[k] * t) + np.sin(2 * np.pi * high[k] * t)),
                       np.zeros(int(rng.uniform(0.02, 0.05) * sample_rate))]
        samples = np.concatenate(pieces)
        samples = samples + rng.normal(0, 0.01, len(samples))
        name = f"wav/{i:04d}.wav"
        soundfile.write(str(out / name), samples.astype(np.float32), sample_rate, subtype="PCM_16")
        rows.append({"audio": name, "text": text})
    cut = len(rows) - max(1, len(rows) // 5)
    atomic_write(out / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows[:cut]))
    atomic_write(out / "val.jsonl", "".join(json.dumps(r) + "\n" for r in rows[cut:]))


__all__ = ["ACCENTS", "SNR_LEVELS", "VARIANTS", "add_noise", "make_texts", "number_words",
           "ordinal_words", "speak", "write_speech_corpus", "write_tone_corpus", "write_voice_corpus"]
