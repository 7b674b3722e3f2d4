"""Acoustic features against librosa (the reference implementation), audio reading
and its refusals, per-utterance normalisation and SpecAugment."""

import math

import numpy as np
import pytest
import torch

from seqlab.data.audio import read_audio
from seqlab.data.speech_features import (FeatureConfig, SpeechFeatures, mel_filterbank,
                                         normalize_utterance, spec_augment)
from seqlab.errors import DataError

librosa = pytest.importorskip("librosa")
soundfile = pytest.importorskip("soundfile")


def chirp(seconds=0.7, rate=16000, seed=0):
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, t.shape)
    return (0.5 * np.sin(2 * np.pi * (200 + 1500 * t) * t) + noise).astype(np.float32)


@pytest.mark.parametrize("rate, n_fft, n_mels, f_max", [(16000, 400, 80, None), (22050, 512, 40, 8000.0)])
def test_the_mel_filterbank_is_librosas(rate, n_fft, n_mels, f_max):
    want = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels, fmax=f_max)
    got = mel_filterbank(rate, n_fft, n_mels, 0.0, f_max).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_log_mel_and_mfcc_are_librosas():
    y = chirp()
    features = SpeechFeatures(FeatureConfig(kind="logmel"))
    want = librosa.power_to_db(librosa.feature.melspectrogram(
        y=y, sr=16000, n_fft=400, hop_length=160, n_mels=80), top_db=80.0)
    got = features(torch.from_numpy(y)).numpy().T
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-3, rtol=1e-4)
    mfcc = SpeechFeatures(FeatureConfig(kind="mfcc", n_mfcc=13))(torch.from_numpy(y)).numpy().T
    want = librosa.feature.mfcc(y=y, sr=16000, n_mfcc=13, n_fft=400, hop_length=160, n_mels=80)
    np.testing.assert_allclose(mfcc, want, atol=5e-3, rtol=1e-4)


def test_a_batch_of_waveforms_gives_each_its_own_features():
    f = SpeechFeatures()
    a, b = torch.from_numpy(chirp(seed=1)), torch.from_numpy(chirp(seed=2))
    both = f(torch.stack([a, b]))
    torch.testing.assert_close(both[1], f(b))


def test_audio_is_read_mono_and_resampled_and_bad_files_are_named(tmp_path):
    y = chirp(rate=22050)
    stereo = np.stack([y, y], axis=1)
    soundfile.write(tmp_path / "a.wav", stereo, 22050)
    soundfile.write(tmp_path / "a.flac", y, 22050)
    read = read_audio(tmp_path / "a.wav", 16000)
    assert read.dtype == np.float32 and abs(len(read) - len(y) * 16000 / 22050) <= 1
    np.testing.assert_allclose(read_audio(tmp_path / "a.flac", 22050), y, atol=1e-4)
    with pytest.raises(DataError, match=r"a.wav: sampled at 22050 Hz, but this model reads 16000 Hz"):
        read_audio(tmp_path / "a.wav", 16000, resample_to_rate=False)
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really audio")
    with pytest.raises(DataError, match=r"bad.wav: cannot decode audio"):
        read_audio(tmp_path / "bad.wav")
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(DataError, match=r"empty.wav: the audio holds no samples"):
        read_audio(tmp_path / "empty.wav")
    soundfile.write(tmp_path / "quiet.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(DataError, match=r"quiet.wav: the audio is silent \(peak digital silence"):
        read_audio(tmp_path / "quiet.wav")
    with pytest.raises(DataError, match=r"missing.wav: no such audio file"):
        read_audio(tmp_path / "missing.wav")


def test_utterance_normalisation_and_spec_augment():
    x = torch.randn(120, 20) * 3 + 7
    n = normalize_utterance(x)
    torch.testing.assert_close(n.mean(0), torch.zeros(20), atol=1e-5, rtol=0)
    torch.testing.assert_close(n.std(0, unbiased=False), torch.ones(20), atol=1e-3, rtol=0)
    a = spec_augment(n, torch.Generator().manual_seed(0), freq_width=5, time_width=10)
    b = spec_augment(n, torch.Generator().manual_seed(0), freq_width=5, time_width=10)
    assert torch.equal(a, b) and not torch.equal(a, n)
    zero_rows = int((a == 0).all(1).sum())
    zero_cols = int((a == 0).all(0).sum())
    assert zero_rows <= 2 * min(10, math.floor(0.2 * 120)) and zero_cols <= 10
