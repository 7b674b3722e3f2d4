"""Tiny encoder-decoders shared by the seq2seq tests."""

import pytest
import torch
from torch import nn

from seqlab.config_sections import ModelConfig
from seqlab.models.build import build_seq2seq

BOS, EOS, VOCAB = 1, 2, 12

# decoder mixer, encoder mixer, cross-attention score
PAIRS = [("attention", "attention", "dot"), ("lstm", "lstm", "additive"),
         ("gru", "gru", "dot"), ("mamba", "attention", "dot")]


def tiny(decoder="attention", encoder="attention", score="dot", *, eos_bias=0.0, seed=0, **keys):
    """An untrained model whose output layer has a bias, so ``eos_bias`` makes it end
    hypotheses at varied lengths."""
    torch.manual_seed(seed)
    extra = {} if decoder == "attention" else {"position": "none", "ffn": "none"}
    cfg = ModelConfig(mixer=decoder, d_model=32, n_layers=2, n_heads=4, vocab_size=VOCAB,
                      encoder={"mixer": encoder}, cross_attention=score, **{**extra, **keys})
    model = build_seq2seq(cfg).eval()
    proj = nn.Linear(32, VOCAB)
    with torch.no_grad():
        proj.weight.normal_(0, 0.5)
        proj.bias.zero_()
        proj.bias[EOS] = eos_bias
    model.proj = proj
    return model


def sources(batch=4, length=7, seed=1):
    """Random source ids with one row padded at the end."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, VOCAB, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[1, length - 2:] = False
    return src, mask


@pytest.fixture(params=PAIRS, ids=["-".join(p) for p in PAIRS])
def pair(request):
    return request.param
