"""Decoding encoder-decoders: beam 1 is greedy, the cached beam search equals the one
that re-reads every prefix (scores, not only tokens), n-best lists are ordered, and sentences in a batch decode as alone."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.infer.generate import SamplingConfig
from seqlab.infer.seq2seq import BeamConfig, beam_search, decode

from .conftest import BOS, EOS, PAIRS, sources, tiny

KW = dict(bos_id=BOS, eos_id=EOS, max_length=9)


def test_beam_one_is_greedy_tokens_and_scores(pair):
    model = tiny(*pair, eos_bias=1.5)
    src, mask = sources()
    greedy = decode(model, src, mask, **KW)
    beam = beam_search(model, src, mask, config=BeamConfig(beam=1), **KW)
    assert [h.tokens for h in greedy] == [b[0].tokens for b in beam]
    # finished rows leave the beam's batch, so its matmuls differ in size: equal, not bitwise
    assert [h.logprob for h in greedy] == pytest.approx([b[0].logprob for b in beam], abs=1e-5)
    assert any(h.tokens[-1] == EOS for h in greedy) and any(len(h.tokens) < 9 for h in greedy)


@settings(max_examples=12, deadline=None)
@given(pair=st.sampled_from(PAIRS), beam=st.integers(2, 5), eos_bias=st.floats(0.0, 3.0),
       penalty=st.sampled_from([0.0, 0.6, 1.0]), early=st.booleans(), seed=st.integers(0, 50))
def test_beam_search_through_the_cache_equals_recomputing_the_prefix(pair, beam, eos_bias,
                                                                     penalty, early, seed):
    model = tiny(*pair, eos_bias=eos_bias, seed=seed)
    src, mask = sources(seed=seed)
    config = BeamConfig(beam=beam, length_penalty=penalty, early_stopping=early, n_best=beam)
    cached = beam_search(model, src, mask, config=config, **KW)
    again = beam_search(model, src, mask, config=config, cache=False, **KW)
    for a, b in zip(cached, again):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
        assert [h.logprob for h in a] == pytest.approx([h.logprob for h in b], abs=1e-5)


def test_n_best_lists_are_ordered_and_scores_are_what_the_model_gives():
    model = tiny(eos_bias=2.0)
    src, mask = sources()
    config = BeamConfig(beam=4, n_best=3, length_penalty=0.7)
    for row, hyps in enumerate(beam_search(model, src, mask, config=config, **KW)):
        assert len(hyps) == 3
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 3
        for h in hyps:  # rescore the hypothesis with one teacher-forced pass
            ids = torch.tensor([[BOS] + h.tokens])
            logits = model.teacher_forced(src[row:row + 1, mask[row]], ids[:, :-1])
            logp = logits.detach().log_softmax(-1).gather(-1, ids[:, 1:, None]).sum()
            assert h.logprob == pytest.approx(float(logp), abs=1e-4)
            assert h.score == pytest.approx(h.logprob / len(h.tokens) ** 0.7)


def test_each_sentence_decodes_as_it_would_alone():
    """Sentences finishing early leave the batch; the others are not changed by it."""
    model = tiny(eos_bias=1.0)
    src, mask = sources()
    config = BeamConfig(beam=3, n_best=2)
    together = beam_search(model, src, mask, config=config, **KW)
    for row in range(len(src)):
        alone = beam_search(model, src[row:row + 1, mask[row]], config=config, **KW)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in together[row]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in together[row]], abs=1e-5)


def test_sampling_repeats_with_a_seed_and_differs_across_seeds():
    model = tiny(eos_bias=0.5)
    src, mask = sources()
    sampling = SamplingConfig(temperature=1.5)
    a = decode(model, src, mask, sampling=sampling, seed=3, **KW)
    assert a == decode(model, src, mask, sampling=sampling, seed=3, **KW)
    assert a != decode(model, src, mask, sampling=sampling, seed=4, **KW)


def test_bad_beam_settings_are_refused():
    with pytest.raises(ValueError, match="beam must be >= 1"):
        BeamConfig(beam=0)
    with pytest.raises(ValueError, match="n_best must be between 1 and the beam"):
        BeamConfig(beam=2, n_best=3)
