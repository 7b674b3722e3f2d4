"""Builders: the only code that reads a model config and wires blocks from it.

They take the config object (``seqlab.config.ModelConfig``) without importing its
module: the config layer sits above the components it describes.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from seqlab.errors import ConfigError
from seqlab.models.backbone import Backbone
from seqlab.models.inputs import INPUTS
from seqlab.models.seq2seq import Decoder, DecoderBlock, Seq2SeqModel
from seqlab.models.tts import Prenet, SpeechSynthesizer
from seqlab.nn.cross_attention import CrossAttention
from seqlab.nn.layers import FFNS, NORMS, Block
from seqlab.nn.mixers import MIXERS, MixerArgs
from seqlab.nn.positions import POSITIONS, AbsolutePosition, RelativePosition
from seqlab.typed import convert


def build_options(name: str, cfg):
    entry = MIXERS.get(name)
    return convert(entry.options, cfg.mixer_options.get(name, {}),
                   f"model.mixer_options.{name}", "config")


def _positions(cfg):
    """(relative, absolute) position modules of a config; one of them or both None."""
    d = cfg.d_model
    position = POSITIONS.get(cfg.position)(d_model=d, d_head=d // cfg.n_heads,
                                           n_heads=cfg.n_heads, base=cfg.rope_base,
                                           scaling=cfg.rope_scaling, factor=cfg.rope_factor,
                                           context_length=cfg.context_length)
    return (position if isinstance(position, RelativePosition) else None,
            position if isinstance(position, AbsolutePosition) else None)


def _layers(cfg, relative):
    """Each layer's mixer and feed-forward (or None), and the norm factory."""
    d = cfg.d_model
    norm = functools.partial(NORMS.get(cfg.norm), eps=cfg.norm_eps)
    ffn_options = {"activation": cfg.activation} if cfg.ffn == "mlp" else {}
    layers = []
    for i, name in enumerate(cfg.mixers):
        args = MixerArgs(d_model=d, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads,
                         causal=cfg.causal, dropout=cfg.dropout,
                         context_length=cfg.context_length, position=relative, layer_index=i)
        try:
            mixer = MIXERS.get(name).build(args, build_options(name, cfg))
        except ValueError as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"model layer {i} ({name}): {e}") from None
        ffn = None if cfg.ffn == "none" else FFNS.get(cfg.ffn)(d, cfg.d_ff, dropout=cfg.dropout,
                                                               **ffn_options)
        layers.append((mixer, ffn))
    return layers, norm


def build_backbone(cfg) -> Backbone:
    """Wire a Backbone from its config (``vocab_size`` or ``input_dim`` must be set)."""
    d = cfg.d_model
    relative, absolute = _positions(cfg)
    layers, norm = _layers(cfg, relative)
    blocks = [Block(mixer, ffn=ffn, norm=norm, residual=cfg.residual, dropout=cfg.dropout,
                    post_norm=cfg.norm_position == "post") for mixer, ffn in layers]
    kind = cfg.input or ("features" if cfg.input_dim and not cfg.vocab_size else "tokens")
    embed = INPUTS.get(kind).build(d, cfg.vocab_size, cfg.input_dim, patch=cfg.patch)
    # Post-norm blocks end normalised: no final norm on top.
    final = norm(d) if cfg.norm_position == "pre" else nn.Identity()
    backbone = Backbone(embed, blocks, final, position=absolute, dropout=cfg.dropout,
                        embed_norm=norm(d) if cfg.embed_norm else None,
                        embed_scale=math.sqrt(d) if cfg.scale_embedding else 1.0)
    init_weights(backbone, cfg.n_layers)
    return backbone


def build_seq2seq(cfg, *, final_logits_bias: bool = False) -> Seq2SeqModel:
    """Wire an encoder-decoder: the encoder from ``cfg.encoder_config()``, the decoder's
    blocks from ``cfg`` itself (causal mixers, each with cross-attention of score
    ``cfg.cross_attention``), and the output projection over ``cfg.vocab_size`` (with a
    bias when ``final_logits_bias``: imported Marian models have one)."""
    encoder = build_backbone(cfg.encoder_config())
    decoder = _decoder(cfg, lambda d: INPUTS.get("tokens").build(d, cfg.vocab_size, None))
    model = Seq2SeqModel(encoder, decoder, cfg.vocab_size, tie_embeddings=cfg.tie_embeddings,
                         final_logits_bias=final_logits_bias)
    if not cfg.tie_embeddings:
        nn.init.normal_(model.proj.weight, std=0.02)
    if model.proj.bias is not None:
        nn.init.zeros_(model.proj.bias)
    if cfg.tie_embeddings and cfg.shares_vocabulary:
        encoder.embed.weight = decoder.embed.weight  # one vocabulary: one table
    return model


def _decoder(cfg, make_embed) -> Decoder:
    """The decoder's blocks from ``cfg`` (causal mixers, each with cross-attention of
    score ``cfg.cross_attention``) over the input adapter ``make_embed(d_model)`` (made
    after the blocks, so a seed gives the weights it always gave)."""
    d = cfg.d_model
    relative, absolute = _positions(cfg)
    layers, norm = _layers(cfg, relative)
    blocks = [DecoderBlock(mixer, CrossAttention(d, cfg.n_heads, score=cfg.cross_attention),
                           ffn=ffn, norm=norm, dropout=cfg.dropout,
                           post_norm=cfg.norm_position == "post") for mixer, ffn in layers]
    embed = make_embed(d)
    final = norm(d) if cfg.norm_position == "pre" else nn.Identity()
    decoder = Decoder(embed, blocks, final, position=absolute, dropout=cfg.dropout,
                      scale_embedding=cfg.scale_embedding)
    init_weights(decoder, cfg.n_layers)
    return decoder


def build_tts(cfg, n_out: int, *, stop_weight: float = 5.0, prenet_dropout: float = 0.5,
              guided_attention: float = 0.0) -> SpeechSynthesizer:
    """Wire a speech synthesiser: the encoder over text from ``cfg.encoder_config()``, the
    decoder's blocks from ``cfg`` over a pre-net of ``n_out`` frame values, and an output
    layer of ``n_out`` values and a stop logit."""
    encoder = build_backbone(cfg.encoder_config())
    decoder = _decoder(cfg, lambda d: Prenet(n_out, d, prenet_dropout))
    model = SpeechSynthesizer(encoder, decoder, n_out, stop_weight=stop_weight,
                              guided_attention=guided_attention)
    nn.init.normal_(model.proj.weight, std=0.02)
    nn.init.zeros_(model.proj.bias)
    return model


def init_weights(module: nn.Module, n_layers: int) -> None:
    """GPT-2 style init: N(0, 0.02) for linear and embedding weights, zero biases, and
    residual output projections scaled by 1/sqrt(2 n_layers) so the residual stream's
    variance does not grow with depth. Recurrent kernels keep torch's init, and mixers
    with ``own_init`` keep theirs but for that same scaling of ``out_proj``."""
    own = [name + "." for name, m in module.named_modules() if getattr(m, "own_init", False)]
    for name, m in module.named_modules():
        if isinstance(m, (nn.RNNBase,)):
            continue
        if any(name.startswith(prefix) for prefix in own):
            if isinstance(m, nn.Linear) and name.endswith("out_proj"):
                with torch.no_grad():
                    m.weight /= math.sqrt(2 * n_layers)
            continue
        if isinstance(m, nn.Linear):
            std = 0.02
            if name.endswith(("out_proj", "down")):
                std /= math.sqrt(2 * n_layers)
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
