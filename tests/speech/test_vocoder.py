"""The vocoder against librosa (mel inversion and Griffin-Lim), its determinism, a round
trip through the features, WAV writing, and its refusals."""

import math

import numpy as np
import pytest
import torch

from seqlab.data.speech_features import FeatureConfig, SpeechFeatures, power_to_db
from seqlab.data.vocoder import Vocoder, db_to_power, griffin_lim, mel_to_linear

librosa = pytest.importorskip("librosa")
soundfile = pytest.importorskip("soundfile")

RATE, N_FFT, HOP = 16000, 400, 160


@pytest.fixture(scope="module")
def signal():
    """1 s at 16 kHz: three steady sines and a rising chirp."""
    t = np.arange(RATE) / RATE
    y = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 660 * t + 1.0)
         + 0.1 * np.sin(2 * np.pi * 1800 * t + 2.0) + 0.25 * np.sin(2 * np.pi * (300 + 2500 * t) * t))
    return torch.from_numpy(y.astype(np.float32))


def stft_magnitude(wave) -> torch.Tensor:
    """(frames, F), with SpeechFeatures' STFT."""
    spec = torch.stft(torch.as_tensor(wave, dtype=torch.float32), N_FFT, HOP,
                      window=torch.hann_window(N_FFT, periodic=True), center=True,
                      pad_mode="constant", return_complex=True)
    return spec.abs().T


def spectral_convergence(target: torch.Tensor, wave) -> float:
    return float(torch.linalg.norm(target - stft_magnitude(wave)) / torch.linalg.norm(target))


def test_db_to_power_inverts_power_to_db():
    db = torch.linspace(-90.0, 30.0, 50).reshape(5, 10)
    torch.testing.assert_close(power_to_db(db_to_power(db), None), db, atol=1e-4, rtol=0)


def test_mel_to_linear_fits_the_mel_power_at_least_as_well_as_librosa(signal):
    features = SpeechFeatures(FeatureConfig(top_db=None))
    mel = features.power_mel(signal)  # (frames, n_mels)
    linear = mel_to_linear(mel, features.filters)
    assert linear.shape == (mel.shape[0], N_FFT // 2 + 1) and bool((linear >= 0).all())

    def error(power):
        return float(torch.linalg.norm(power @ features.filters.T - mel) / torch.linalg.norm(mel))

    ours = error(linear)
    theirs = error(torch.from_numpy(librosa.feature.inverse.mel_to_stft(
        mel.numpy().T, sr=RATE, n_fft=N_FFT).T) ** 2)  # librosa returns magnitudes
    assert ours < 5e-3  # measured 3e-4; the clamped pseudo-inverse alone gives 0.026
    assert ours <= 2 * theirs
    # frames are independent problems: a batch gives each its own answer
    both = mel_to_linear(torch.stack([mel, 2 * mel]), features.filters)
    torch.testing.assert_close(both[1], 2 * linear, rtol=1e-3, atol=1e-6 * float(linear.max()))
    with pytest.raises(ValueError, match="80 bands but the filters have 40"):
        mel_to_linear(mel, features.filters[:40])


def test_griffin_lim_converges_like_librosas(signal):
    target = stft_magnitude(signal)
    n = len(signal)
    sc = {it: spectral_convergence(target, griffin_lim(target, N_FFT, HOP, iters=it, length=n))
          for it in (5, 60, 100)}
    theirs = spectral_convergence(target, librosa.griffinlim(
        target.numpy().T, n_iter=60, hop_length=HOP, n_fft=N_FFT, random_state=0, length=n))
    assert sc[60] < 0.1  # measured 0.048 (librosa 0.042); random phase alone 0.56
    assert sc[100] < sc[60] < sc[5]
    assert sc[60] < 1.5 * theirs


def test_griffin_lim_is_determined_by_its_seed(signal):
    target = stft_magnitude(signal)[:30]
    a, b = (griffin_lim(target, N_FFT, HOP, iters=10, seed=3) for _ in range(2))
    assert torch.equal(a, b) and a.shape == (HOP * 29,)
    assert not torch.allclose(a, griffin_lim(target, N_FFT, HOP, iters=10, seed=4))
    with pytest.raises(ValueError, match=r"\(frames, 201\)"):
        griffin_lim(target[:, :200], N_FFT, HOP)


def test_features_survive_a_round_trip_through_the_vocoder(signal, tmp_path):
    config = FeatureConfig(n_mels=80, top_db=None)
    features = SpeechFeatures(config)
    db = features(signal)
    vocoder = Vocoder(config)
    wave = vocoder(db)
    assert wave.dtype == np.float32 and wave.shape == (HOP * (db.shape[0] - 1),)
    assert math.isclose(float(np.abs(wave).max()), 0.9, rel_tol=1e-5)
    np.testing.assert_array_equal(wave, vocoder(db))

    def relative_db(y):  # the vocoder's gain is its own, so compare below each peak
        d = power_to_db(features.power_mel(torch.as_tensor(y)), 80.0)
        return d - d.max()

    difference = float((relative_db(wave) - relative_db(signal)).abs().mean())
    assert difference < 4.0  # measured 2.1 dB
    noise = np.random.default_rng(0).normal(0, 0.3, len(wave)).astype(np.float32)
    assert float((relative_db(noise) - relative_db(signal)).abs().mean()) > 3 * difference

    path = tmp_path / "out" / "voice.wav"
    vocoder.write(db, path, iters=60, seed=0)
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    read, rate = soundfile.read(str(path), dtype="float32")
    np.testing.assert_allclose(read, wave, atol=1.0 / 32768 + 1e-6)
    assert sorted(p.name for p in path.parent.iterdir()) == ["voice.wav"]  # no temporary left


def test_silence_gives_zeros_and_mfccs_are_refused():
    vocoder = Vocoder(FeatureConfig(n_mels=80, top_db=None))
    wave = vocoder(torch.full((50, 80), -100.0), iters=5)
    assert wave.shape == (HOP * 49,) and not np.isnan(wave).any() and not wave.any()
    with pytest.raises(ValueError, match=r"features must be \(frames, 80\)"):
        vocoder(torch.zeros(50, 40))
    with pytest.raises(ValueError, match="needs logmel features, got 'mfcc'"):
        Vocoder(FeatureConfig(kind="mfcc"))
