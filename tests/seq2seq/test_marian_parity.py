"""Given Hugging Face MarianMTModel's weights, seqlab's encoder-decoder of the same
shape gives the same logits, teacher-forced and step by step through its state."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from seqlab.config_sections import ModelConfig  # noqa: E402
from seqlab.interop.marian import load_marian_weights, marian_model_config  # noqa: E402
from seqlab.models.build import build_seq2seq  # noqa: E402


def pair(**keys):
    torch.manual_seed(0)
    hf_config = transformers.MarianConfig(
        vocab_size=40, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_position_embeddings=64, pad_token_id=39, decoder_start_token_id=39, eos_token_id=0,
        **keys)
    marian = transformers.MarianMTModel(hf_config).eval()
    with torch.no_grad():
        marian.final_logits_bias.normal_()  # zeros at init: make the mapping visible
    ours = build_seq2seq(ModelConfig(**marian_model_config(hf_config)), final_logits_bias=True).eval()
    load_marian_weights(ours, marian)
    return marian, ours


@pytest.mark.parametrize("scale", [True, False])
def test_teacher_forced_logits_equal_marians(scale):
    marian, ours = pair(scale_embedding=scale)
    src = torch.randint(1, 39, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 6:] = False
    src[1, 6:] = 39
    tgt = torch.randint(1, 39, (3, 7))
    tgt[:, 0] = 39
    with torch.no_grad():
        want = marian(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt).logits
        got = ours.teacher_forced(src, tgt, source_mask=mask)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_greedy_decoding_through_the_state_matches_marians_generate():
    from seqlab.infer.seq2seq import decode

    marian, ours = pair(scale_embedding=True)
    src = torch.randint(1, 39, (2, 8))
    with torch.no_grad():
        want = marian.generate(src, num_beams=1, do_sample=False, max_new_tokens=10,
                               forced_eos_token_id=None, bad_words_ids=None)
    got = decode(ours, src, bos_id=39, eos_id=0, max_length=10)
    for row, hyp in zip(want.tolist(), got):
        expected = row[1:]  # after the decoder start token
        expected = expected[:expected.index(0) + 1] if 0 in expected else expected
        expected = [t for t in expected if t != 39]  # generate pads finished rows
        assert hyp.tokens == expected


def test_weights_saved_into_a_marian_model_give_its_logits_back():
    from seqlab.interop.marian import save_marian_weights

    marian, ours = pair(scale_embedding=True)
    other, _ = pair(scale_embedding=True)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # weights Marian never had
    save_marian_weights(ours, other)
    src, tgt = torch.randint(1, 39, (2, 6)), torch.randint(1, 39, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(other(input_ids=src, decoder_input_ids=tgt).logits,
                                   ours.teacher_forced(src, tgt), atol=2e-5, rtol=1e-4)
