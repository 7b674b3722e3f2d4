"""The espeak-ng speech corpus: transcripts in words, a split by voice, and noise at
the levels asked for."""

import json
import shutil

import numpy as np
import pytest

from seqlab.datasets.speech_corpus import add_noise, make_texts, number_words, ordinal_words

soundfile = pytest.importorskip("soundfile")


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (13, "thirteen"), (40, "forty"), (99, "ninety nine"),
    (105, "one hundred and five"), (2000, "two thousand"),
    (7042, "seven thousand and forty two"), (123456, "one hundred and twenty three thousand "
                                                     "four hundred and fifty six")])
def test_numbers_are_spelt_out(n, words):
    assert number_words(n) == words


def test_ordinals_and_texts_are_plain_words():
    assert [ordinal_words(d) for d in (1, 2, 3, 5, 8, 12, 20, 21, 28)] == [
        "first", "second", "third", "fifth", "eighth", "twelfth", "twentieth",
        "twenty first", "twenty eighth"]
    texts = make_texts(60, seed=3)
    assert len(set(texts)) > 40
    assert all(t.replace(" ", "").isalpha() and t == t.lower() for t in texts)


def test_noise_is_added_at_the_signal_to_noise_ratio_asked_for():
    rng = np.random.default_rng(0)
    clean = (0.3 * np.sin(np.arange(48000) / 7)).astype(np.float32)
    for snr in (20.0, 5.0):
        noisy = add_noise(clean, snr, rng)
        measured = 10 * np.log10(np.mean(clean ** 2) / np.mean((noisy - clean) ** 2))
        assert abs(measured - snr) < 0.2


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed "
                                                                "(setup.sh installs it)")
def test_a_small_corpus_is_split_by_voice_with_every_noise_level_in_test(tmp_path):
    from seqlab.data.audio import read_audio
    from seqlab.datasets.speech_corpus import write_speech_corpus

    counts = write_speech_corpus(tmp_path, n_utterances=40, n_voices=6, val_voices=1,
                                 test_voices=1, snr_levels=(None, 10.0))
    rows = {s: [json.loads(x) for x in (tmp_path / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "val", "test")}
    assert counts == {s: len(r) for s, r in rows.items()} and sum(counts.values()) > 40
    assert counts["test"] % 2 == 0 and counts["test"] > 0  # each test utterance at both levels
    voices = {s: {r["voice"] for r in rs} for s, rs in rows.items()}
    assert len(voices["test"]) == len(voices["val"]) == 1 and 1 <= len(voices["train"]) <= 4
    assert not (voices["train"] & voices["test"]) and not (voices["train"] & voices["val"])
    assert sorted({r["snr"] for r in rows["test"]}, key=str) == [10.0, None]
    clean = [r for r in rows["test"] if r["snr"] is None][0]
    noisy = [r for r in rows["test"] if r["snr"] == 10.0 and r["text"] == clean["text"]][0]
    a, b = (read_audio(tmp_path / r["audio"], 16000) for r in (clean, noisy))
    assert len(a) == len(b) and len(a) > 16000 * 0.3
    assert 8 < 10 * np.log10(np.mean(a ** 2) / np.mean((b - a) ** 2)) < 12
    assert soundfile.info(str(tmp_path / clean["audio"])).samplerate == 16000
