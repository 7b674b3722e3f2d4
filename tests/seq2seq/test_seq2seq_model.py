"""Encoder-decoder models: the decoder through its state equals one teacher-forced
pass (the chunked == full law), the state is never changed by a call, cross-attention
matches a naive reference, and padding of the source never leaks."""

import math

import pytest
import torch

from seqlab.config_sections import ModelConfig
from seqlab.errors import ConfigError, ShapeError
from seqlab.nn.cross_attention import CrossAttention

from .conftest import VOCAB, sources, tiny


@pytest.mark.parametrize("splits", [(1, 1, 1, 1, 1, 1), (2, 1, 3), (6,)])
def test_decoding_in_chunks_equals_one_teacher_forced_pass(pair, splits):
    model = tiny(*pair)
    src, mask = sources()
    tgt = torch.randint(3, VOCAB, (4, 6), generator=torch.Generator().manual_seed(2))
    full = model.teacher_forced(src, tgt, source_mask=mask)
    state, pieces, at = model.start(src, mask), [], 0
    for n in splits:
        out = model(tgt[:, at:at + n], state)
        pieces.append(out.logits)
        state, at = out.state, at + n
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=2e-5, rtol=1e-4)


def test_a_state_is_never_changed_so_two_continuations_are_both_right(pair):
    model = tiny(*pair)
    src, mask = sources()
    a, b = torch.full((4, 1), 5), torch.full((4, 1), 7)
    state = model(torch.full((4, 1), 1), model.start(src, mask)).state
    first = model(a, state).logits
    model(b, state)
    torch.testing.assert_close(model(a, state).logits, first)


def test_padding_of_the_source_does_not_change_the_outputs(pair):
    """A padded row decodes as it does alone and unpadded."""
    model = tiny(*pair)
    src, mask = sources()
    tgt = torch.randint(3, VOCAB, (4, 5), generator=torch.Generator().manual_seed(3))
    batched = model.teacher_forced(src, tgt, source_mask=mask)[1]
    real = int(mask[1].sum())
    alone = model.teacher_forced(src[1:2, :real], tgt[1:2])[0]
    torch.testing.assert_close(batched, alone, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("score", ["dot", "additive"])
@torch.no_grad()
def test_cross_attention_matches_a_naive_loop(score):
    torch.manual_seed(0)
    layer = CrossAttention(16, 2, score=score).eval()
    x, memory = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    got = layer(x, layer.memory(memory, mask))
    q = layer.q_proj(x).view(2, 3, 2, 8)
    k, v = layer.kv_proj(memory).view(2, 5, 2, 2, 8).unbind(2)
    want = torch.zeros(2, 3, 2, 8)
    for b in range(2):
        for h in range(2):
            for t in range(3):
                scores = []
                for s in range(5):
                    if not mask[b, s]:
                        scores.append(-math.inf)
                    elif score == "dot":
                        scores.append(float(q[b, t, h] @ k[b, s, h]) / math.sqrt(8))
                    else:
                        scores.append(float(torch.tanh(q[b, t, h] + k[b, s, h]) @ layer.energy[h]))
                w = torch.tensor(scores).softmax(0)
                want[b, t, h] = (w[:, None] * v[b, :, h]).sum(0)
    torch.testing.assert_close(got, layer.out_proj(want.reshape(2, 3, 16)), atol=1e-5, rtol=1e-4)


def test_an_empty_source_row_is_refused_by_name():
    layer = CrossAttention(16, 2)
    with pytest.raises(ShapeError, match="empty source"):
        layer.memory(torch.randn(2, 4, 16), torch.tensor([[True] * 4, [False] * 4]))


def test_the_encoder_is_bidirectional_unless_asked_and_its_keys_are_checked():
    cfg = ModelConfig(mixer="lstm", position="none", ffn="none", vocab_size=9,
                      encoder={"mixer": "attention", "n_layers": 3})
    enc = cfg.encoder_config()
    assert (enc.causal, enc.n_layers, enc.mixer, cfg.causal) == (False, 3, "attention", True)
    with pytest.raises(ConfigError, match="model.encoder has unknown keys layers"):
        ModelConfig(vocab_size=9, encoder={"layers": 3})
    with pytest.raises(ConfigError, match="model.encoder.mixer 'mamba' cannot run bidirectional"):
        ModelConfig(vocab_size=9, encoder={"mixer": "mamba"})
    with pytest.raises(ConfigError, match="cross_attention must be 'dot' or 'additive'"):
        ModelConfig(vocab_size=9, encoder={}, cross_attention="general")


def _every_causal_mixer():
    from seqlab.nn.mixers import MIXERS

    return [n for n in MIXERS.names() if MIXERS.get(n).supports(True)]


SMALL = {"window_attention": {"window": 4}, "linear_attention": {"chunk_size": 4},
         "segment_memory": {"segment": 4, "memory_segments": 1, "compressed_slots": 2,
                            "compression_rate": 2}, "mamba": {"chunk_size": 8}}


@pytest.mark.parametrize("mixer", _every_causal_mixer())
def test_every_causal_mixer_decodes_in_chunks_as_in_one_pass(mixer):
    """Any mixer that runs causally serves as the decoder (over an attention encoder),
    and the chunked == full law holds for it with cross-attention in every block."""
    from seqlab.models.build import build_seq2seq
    from seqlab.nn.mixers import MIXERS

    torch.manual_seed(0)
    uses_positions = MIXERS.get(mixer).uses_positions
    cfg = ModelConfig(mixer=mixer, d_model=32, n_layers=2, n_heads=4, vocab_size=VOCAB,
                      position="rope" if uses_positions else "none",
                      mixer_options={mixer: SMALL[mixer]} if mixer in SMALL else {},
                      encoder={"mixer": "attention", "position": "rope", "mixer_options": {}})
    model = build_seq2seq(cfg).eval()
    src, mask = sources()
    tgt = torch.randint(3, VOCAB, (4, 11), generator=torch.Generator().manual_seed(5))
    full = model.teacher_forced(src, tgt, source_mask=mask)
    state, pieces = model.start(src, mask), []
    for a, b in ((0, 1), (1, 5), (5, 6), (6, 11)):
        out = model(tgt[:, a:b], state)
        pieces.append(out.logits)
        state = out.state
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=5e-5, rtol=1e-4)


def test_encoder_overrides_that_cannot_work_are_refused_and_positions_follow_the_mixer():
    with pytest.raises(ConfigError, match=r"model.encoder.d_model \(64\) must equal model.d_model \(32\)"):
        ModelConfig(d_model=32, vocab_size=9, encoder={"d_model": 64})
    cfg = ModelConfig(mixer="lstm", position="none", ffn="none", vocab_size=9,
                      encoder={"mixer": "attention"})
    assert cfg.encoder_config().position == "rope"  # attention needs word order
