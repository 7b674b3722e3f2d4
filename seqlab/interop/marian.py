"""Hugging Face's ``MarianMTModel`` (the Transformer encoder-decoder of Marian/OPUS-MT)
as a seqlab encoder-decoder of the same shape, with its weights.

Marian's layout maps onto seqlab's pieces one to one: post-norm blocks
(``norm_position: post``), token embeddings scaled by sqrt(d_model)
(``scale_embedding``), sines-then-cosines positions (``sinusoidal_concat``), attention
with biases and no rotary positions, an exact-GELU MLP, one embedding table shared by
the encoder, the decoder and the output layer, and a final logits bias. Its separate
key and value projections become seqlab's fused ``kv_proj`` (keys first).

``marian_model_config(hf_config)`` gives the model section; ``load_marian_weights``
copies a ``MarianMTModel``'s tensors into a ``Seq2SeqModel`` built from it. The
tokenizer (SentencePiece) is not converted: the mapping serves side-by-side checks and
ids already encoded.
"""

from __future__ import annotations

import torch

from seqlab.errors import ConfigError


def marian_model_config(hf) -> dict:
    """seqlab's ``model`` section for a ``MarianConfig``."""
    if hf.activation_function not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
        raise ConfigError(f"Marian's activation {hf.activation_function!r} has no seqlab "
                          "feed-forward (gelu, gelu_new and gelu_pytorch_tanh map)")
    if hf.encoder_layers != hf.decoder_layers or hf.encoder_ffn_dim != hf.decoder_ffn_dim \
            or hf.encoder_attention_heads != hf.decoder_attention_heads:
        raise ConfigError("the encoder and decoder of this Marian model differ in shape; "
                          "seqlab maps equal stacks only")
    if not getattr(hf, "share_encoder_decoder_embeddings", True):
        raise ConfigError("this Marian model has separate source and target embeddings")
    return {"mixer": "attention", "position": "sinusoidal_concat", "d_model": hf.d_model,
            "n_layers": hf.decoder_layers, "n_heads": hf.decoder_attention_heads,
            "d_ff": hf.decoder_ffn_dim, "ffn": "mlp", "norm": "layernorm",
            "norm_position": "post", "scale_embedding": bool(hf.scale_embedding),
            "activation": "gelu" if hf.activation_function == "gelu" else "gelu_tanh",
            "context_length": hf.max_position_embeddings, "vocab_size": hf.vocab_size,
            "tie_embeddings": True, "dropout": 0.0,
            "encoder": {"n_layers": hf.encoder_layers}}


def _attention(ours, prefix: str, hf: dict, self_attention: bool) -> dict:
    out = {}
    q, k, v, o = (f"{prefix}.{n}_proj" for n in ("q", "k", "v", "out"))
    target = "mixer" if self_attention else "cross"
    for kind in ("weight", "bias"):
        out[f"{ours}.{target}.q_proj.{kind}"] = hf[f"{q}.{kind}"]
        out[f"{ours}.{target}.kv_proj.{kind}"] = torch.cat([hf[f"{k}.{kind}"], hf[f"{v}.{kind}"]])
        out[f"{ours}.{target}.out_proj.{kind}"] = hf[f"{o}.{kind}"]
    return out


def marian_tensors(hf_state: dict, n_layers: int) -> dict:
    """seqlab's tensor names -> tensors of a MarianMTModel ``state_dict``."""
    out = {"decoder.embed.weight": hf_state["model.shared.weight"],
           "proj.bias": hf_state["final_logits_bias"][0]}
    for side in ("encoder", "decoder"):
        for i in range(n_layers):
            hf, ours = f"model.{side}.layers.{i}", f"{side}.blocks.{i}"
            out.update(_attention(ours, f"{hf}.self_attn", hf_state, True))
            norms = {"mixer_norm": "self_attn_layer_norm", "ffn_norm": "final_layer_norm"}
            if side == "decoder":
                out.update(_attention(ours, f"{hf}.encoder_attn", hf_state, False))
                norms["cross_norm"] = "encoder_attn_layer_norm"
            for mine, theirs in norms.items():
                for kind in ("weight", "bias"):
                    out[f"{ours}.{mine}.{kind}"] = hf_state[f"{hf}.{theirs}.{kind}"]
            for mine, theirs in (("up", "fc1"), ("down", "fc2")):
                for kind in ("weight", "bias"):
                    out[f"{ours}.ffn.{mine}.{kind}"] = hf_state[f"{hf}.{theirs}.{kind}"]
    return out


@torch.no_grad()
def save_marian_weights(model, marian) -> None:
    """Copy a ``Seq2SeqModel``'s weights (of a ``marian_model_config`` shape, with a
    logits bias) into a ``MarianMTModel``: the inverse of ``load_marian_weights``."""
    theirs = marian.state_dict()
    names = marian_tensors({k: v for k, v in theirs.items()}, marian.config.decoder_layers)
    ours = model.state_dict()
    d = marian.config.d_model
    for mine, tensor in names.items():
        value = ours[mine]
        if mine == "proj.bias":
            theirs["final_logits_bias"][0].copy_(value)
        elif ".kv_proj." in mine:
            prefix = _marian_prefix(mine)
            kind = mine.rsplit(".", 1)[1]
            theirs[f"{prefix}.k_proj.{kind}"].copy_(value[:d])
            theirs[f"{prefix}.v_proj.{kind}"].copy_(value[d:])
        else:
            tensor.copy_(value)  # the state dict's own tensor: a view of the model's


def _marian_prefix(name: str) -> str:
    """Marian's attention module of one of seqlab's fused ``kv_proj`` tensors."""
    side, _, layer, part = name.split(".")[:4]
    module = "self_attn" if part == "mixer" else "encoder_attn"
    return f"model.{side}.layers.{layer}.{module}"


@torch.no_grad()
def load_marian_weights(model, marian) -> None:
    """Copy a ``MarianMTModel``'s weights into ``model`` (a ``Seq2SeqModel`` built from
    ``marian_model_config(marian.config)`` with a logits bias)."""
    if model.proj.bias is None:
        raise ConfigError("the model needs an output bias for Marian's final_logits_bias "
                          "(build it with final_logits_bias=True)")
    tensors = marian_tensors(marian.state_dict(), marian.config.decoder_layers)
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors) - {"encoder.embed.weight", "proj.weight"})
    if missing:
        raise ConfigError(f"no Marian tensor for {', '.join(missing[:5])}")
    for name, tensor in tensors.items():
        if own[name].shape != tensor.shape:
            raise ConfigError(f"{name}: Marian's tensor is {tuple(tensor.shape)}, the model's "
                              f"{tuple(own[name].shape)}")
        own[name].copy_(tensor)


__all__ = ["load_marian_weights", "marian_model_config", "marian_tensors", "save_marian_weights"]
