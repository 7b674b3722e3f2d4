"""CTC: the head's loss equals the sum over every path, prefix beam search finds each
labelling's exact probability, decoding in chunks equals decoding at once, and the
speech source names the utterance it cannot use."""

import itertools
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from seqlab.data.batch import IGNORE
from seqlab.datasets.speech_corpus import write_tone_corpus
from seqlab.errors import DataError
from seqlab.infer.ctc import GreedyStream, PrefixBeamSearch, decode, greedy
from seqlab.models.ctc_head import CTCHead

BLANK = 0


def collapse(path) -> tuple:
    return tuple(greedy(list(path), BLANK))


def labelling_probs(log_probs: np.ndarray) -> dict[tuple, float]:
    """Every labelling's probability, summed over all V^T paths."""
    T, V = log_probs.shape
    out: dict[tuple, float] = {}
    for path in itertools.product(range(V), repeat=T):
        p = float(np.exp(sum(log_probs[t, c] for t, c in enumerate(path))))
        out[collapse(path)] = out.get(collapse(path), 0.0) + p
    return out


def random_log_probs(seed: int, T: int, V: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0, 2, (T, V))
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def test_greedy_merges_repeats_and_drops_blanks():
    assert greedy([1, 1, 0, 1, 2, 2, 0, 0, 3], BLANK) == [1, 1, 2, 3]
    assert greedy([1, 1, 2], BLANK, previous=1) == [2]  # 1 continued from the last chunk


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), T=st.integers(1, 5), V=st.integers(2, 4))
def test_a_wide_beam_gives_every_labelling_its_exact_probability(seed, T, V):
    lp = random_log_probs(seed, T, V)
    exact = labelling_probs(lp)
    found = decode(lp, BLANK, beam=len(exact), n_best=len(exact))
    assert {h.tokens: pytest.approx(np.exp(h.logprob), rel=1e-9) for h in found} == exact
    assert [h.logprob for h in found] == sorted((h.logprob for h in found), reverse=True)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 4), max_size=4))
def test_decoding_in_chunks_equals_decoding_at_once(seed, cuts):
    lp = random_log_probs(seed, 12, 5)
    whole, parts = PrefixBeamSearch(BLANK, 4), PrefixBeamSearch(BLANK, 4)
    whole.advance(lp)
    g_whole, g_parts = GreedyStream(BLANK), GreedyStream(BLANK)
    g_whole.advance(lp)
    at = 0
    for cut in cuts + [12]:
        parts.advance(lp[at:at + cut])
        g_parts.advance(lp[at:at + cut])
        at += cut
    assert whole.best(4) == parts.best(4)
    assert g_whole.tokens == g_parts.tokens == list(decode(lp, BLANK)[0].tokens)


def test_the_head_loss_is_the_summed_path_probability_and_padding_never_counts():
    torch.manual_seed(0)
    head = CTCHead(6, 4, blank=BLANK)
    hidden = torch.randn(2, 5, 6)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    targets = torch.tensor([[1, 2, 2], [3, IGNORE, IGNORE]])
    result = head.loss(hidden, targets, mask)
    lp = head(hidden, mask).detach().double().numpy()
    want = -np.log(labelling_probs(lp[0])[(1, 2, 2)]) - np.log(labelling_probs(lp[1, :3])[(3,)])
    assert float(result.total.detach()) == pytest.approx(want, rel=1e-5)
    assert int(result.count) == 4
    # padded steps read as a certain blank: decoding a padded row equals its real steps
    assert decode(lp[1], BLANK, beam=3)[0].tokens == decode(lp[1, :3], BLANK, beam=3)[0].tokens


def test_an_impossible_transcript_is_named_not_inf():
    head = CTCHead(4, 3, blank=BLANK)
    with pytest.raises(DataError, match="3 tokens cannot be emitted in 2 CTC steps"):
        head.loss(torch.randn(1, 2, 4), torch.tensor([[1, 2, 1]]))


def speech_config(folder, **data):
    from seqlab.config import RunConfig

    return RunConfig.from_dict({
        "task": "ctc", "seed": 0, "tokenizer": {"kind": "char"},
        "model": {"mixer": "lstm", "d_model": 16, "n_layers": 1, "position": "none",
                  "context_length": 32},
        "data": {"source": "speech", "path": str(folder / "train.jsonl"),
                 "val_path": str(folder / "val.jsonl"), "n_mels": 16, **data},
        "train": {"steps": 2, "batch_size": 4, "progress": False}})


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tones")
    write_tone_corpus(folder, n_utterances=20, max_letters=4)
    return folder


def prepared(config):
    from seqlab.tasks import OBJECTIVES

    objective = OBJECTIVES.get("ctc").cls(config)
    objective.prepare(None)
    return objective


def test_a_transcript_the_audio_cannot_emit_is_named_with_both_lengths(tones, tmp_path):
    rows = [json.loads(line) for line in (tones / "train.jsonl").read_text().splitlines()]
    for row in rows:
        row["audio"] = str(tones / row["audio"])
    rows[3]["text"] = "abcdefgh" * 6  # far more letters than 4x-subsampled frames
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "val.jsonl").write_text((tones / "val.jsonl").read_text().replace(
        '"wav/', f'"{tones}/wav/'))
    with pytest.raises(DataError, match=r"train.jsonl:4 \(\d+.wav\): its transcript needs 48 CTC "
                                        r"steps \(48 tokens .*\) but its \d+ frames give the "
                                        r"encoder \d+"):
        prepared(speech_config(tmp_path, too_long="error"))
    objective = prepared(speech_config(tmp_path))  # drop: the rest are used
    assert len(objective.source.train) == len(rows) - 1


def test_bad_manifest_rows_are_named(tones, tmp_path):
    val = (tones / "val.jsonl").read_text().replace('"wav/', f'"{tones}/wav/')
    (tmp_path / "val.jsonl").write_text(val)
    (tmp_path / "train.jsonl").write_text(json.dumps({"audio": f"{tones}/wav/0000.wav", "text": " "}) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl:1: the transcript is empty"):
        prepared(speech_config(tmp_path))
    (tmp_path / "train.jsonl").write_text(json.dumps({"audio": "gone.wav", "text": "ab"}) + "\n")
    with pytest.raises(DataError, match=r"gone.wav: no such audio file"):
        prepared(speech_config(tmp_path))
    (tmp_path / "train.jsonl").write_text(json.dumps({"sound": "x.wav", "text": "ab"}) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl:1.*audio"):
        prepared(speech_config(tmp_path))


def test_global_statistics_are_fitted_on_training_frames_and_spec_augment_is_seeded(tones):
    objective = prepared(speech_config(tones, normalize="global", spec_augment=True,
                                       time_width=5))
    source = objective.source
    frames = np.concatenate(source.train.sources)
    assert np.abs(frames.mean(0)).max() < 1e-3 and np.abs(frames.std(0) - 1).max() < 1e-2
    a, b = source.train_batch(3, 0), source.train_batch(3, 0)
    assert torch.equal(a.inputs, b.inputs)
    plain = source.batch(source.train, source.sampler.indices(3, 0))
    assert not torch.equal(a.inputs, plain.inputs)  # masked, deterministically
    again = type(source)(source.options, source.ctx)
    again.attach(objective.tokenizer, source.fitted())  # a loaded run normalises alike
    path = tones / "wav" / "0001.wav"
    assert np.array_equal(again.features(path), source.features(path))
