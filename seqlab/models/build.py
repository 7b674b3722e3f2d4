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
from seqlab.nn.layers import FFNS, NORMS, Block
from seqlab.nn.mixers import MIXERS, MixerArgs
from seqlab.nn.positions import POSITIONS, AbsolutePosition, RelativePosition
from seqlab.typed import convert


def build_options(name: str, cfg):
    entry = MIXERS.get(name)
    return convert(entry.options, cfg.mixer_options.get(name, {}),
                   f"model.mixer_options.{name}", "config")


def build_backbone(cfg) -> Backbone:
    """Wire a Backbone from its config (``vocab_size`` or ``input_dim`` must be set)."""
    d = cfg.d_model
    position = POSITIONS.get(cfg.position)(d_model=d, d_head=d // cfg.n_heads,
                                           n_heads=cfg.n_heads, base=cfg.rope_base,
                                           scaling=cfg.rope_scaling, factor=cfg.rope_factor,
                                           context_length=cfg.context_length)
    relative = position if isinstance(position, RelativePosition) else None
    absolute = position if isinstance(position, AbsolutePosition) else None
    norm = functools.partial(NORMS.get(cfg.norm), eps=cfg.norm_eps)
    ffn_options = {"activation": cfg.activation} if cfg.ffn == "mlp" else {}
    blocks = []
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
        blocks.append(Block(mixer, ffn=ffn, norm=norm, residual=cfg.residual,
                            dropout=cfg.dropout, post_norm=cfg.norm_position == "post"))
    kind = cfg.input or ("features" if cfg.input_dim and not cfg.vocab_size else "tokens")
    embed = INPUTS.get(kind).build(d, cfg.vocab_size, cfg.input_dim, patch=cfg.patch)
    # Post-norm blocks end normalised: no final norm on top.
    final = norm(d) if cfg.norm_position == "pre" else nn.Identity()
    backbone = Backbone(embed, blocks, final, position=absolute, dropout=cfg.dropout,
                        embed_norm=norm(d) if cfg.embed_norm else None)
    init_weights(backbone, cfg.n_layers)
    return backbone


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
