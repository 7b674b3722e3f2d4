"""The Hugging Face architectures seqlab maps, one class each: how a checkpoint's
``config.json`` becomes a seqlab model config, and how its tensor names map to
seqlab's and back (``ENDS`` and per-layer ``PAIRS`` one to one; fused projections split
or joined beside them). ``seqlab.interop.hf`` reads and writes the directories."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from seqlab.errors import CheckpointError, ConfigError
from seqlab.rundir import read_json

HF_CONFIG = "config.json"


class Tensors(dict):
    """A checkpoint's tensors (from ``where``); a name the config implies but the file
    lacks is an error that names it."""

    def __init__(self, tensors: dict[str, Tensor], where: str):
        super().__init__(tensors)
        self.where = where

    def like(self, tensors: dict[str, Tensor]) -> "Tensors":
        """Other tensors from the same checkpoint."""
        return Tensors(tensors, self.where)

    def __missing__(self, key):
        raise CheckpointError(f"{self.where}: the weights have no tensor {key!r}, which its "
                              f"{HF_CONFIG} implies (a truncated or mismatched checkpoint)")


def _need(hf: dict, key: str, where: Path):
    if key not in hf:
        raise CheckpointError(f"{where / HF_CONFIG} has no {key!r}")
    return hf[key]


def _rope(hf: dict) -> dict:
    """The model keys of a checkpoint's rotary positions: base, and linear scaling."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or params
    kind = scaling.get("rope_type", scaling.get("type", "default")) or "default"
    if kind not in ("default", "linear"):
        raise ConfigError(f"rope scaling {kind!r} is not supported; plain and linear "
                          "(position interpolation) rotary positions are")
    out = {"rope_base": float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))}
    if kind == "linear":
        out.update(rope_scaling="linear", rope_factor=float(scaling["factor"]))
    return out


def _mapped(arch, t: dict[str, Tensor], cfg, *, to_hf: bool) -> dict[str, Tensor]:
    """The tensors an architecture maps one to one (its ``ENDS`` and, per layer, its
    ``PAIRS``), from seqlab's names to Hugging Face's or back; an untied head is
    ``lm_head.weight`` there, and a tied one is written there too, as HF checkpoints do."""
    pairs = [(ours, theirs, False) for ours, theirs in arch.ENDS]
    for i in range(cfg.n_layers):
        pairs += [(f"backbone.blocks.{i}.{ours}", arch.layer(i) + theirs, flip)
                  for ours, theirs, flip in arch.PAIRS]
    head = "backbone.embed.weight" if cfg.tie_embeddings else "head.proj.weight"
    if to_hf:
        out = {theirs: _t(t[ours]) if flip else t[ours] for ours, theirs, flip in pairs}
        out["lm_head.weight"] = t[head]
        return out
    out = {ours: _t(t[theirs]) if flip else t[theirs] for ours, theirs, flip in pairs}
    if not cfg.tie_embeddings:
        out[head] = t["lm_head.weight"]
    return out


def _rope_parameters(cfg) -> dict:
    if cfg.rope_scaling == "linear":
        return {"rope_type": "linear", "factor": cfg.rope_factor, "rope_theta": cfg.rope_base}
    return {"rope_type": "default", "rope_theta": cfg.rope_base}


def _t(w: Tensor) -> Tensor:
    return w.t().contiguous()


# -- one class per architecture -----------------------------------------------------------------
class GPT2:
    """GPT-2: learned positions, pre-LayerNorm, fused qkv Conv1D (weights stored (in, out)),
    GELU MLP (tanh approximation by default), tied embeddings."""

    model_type = "gpt2"

    @staticmethod
    def model(hf: dict, where: Path) -> dict:
        d = _need(hf, "n_embd", where)
        activation = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                      "gelu": "gelu"}.get(hf.get("activation_function", "gelu_new"))
        if activation is None:
            raise ConfigError(f"GPT-2 activation {hf['activation_function']!r} is not supported "
                              "(gelu, gelu_new are)")
        return {"mixer": "attention", "d_model": d, "n_layers": _need(hf, "n_layer", where),
                "n_heads": _need(hf, "n_head", where), "ffn": "mlp", "d_ff": hf.get("n_inner") or 4 * d,
                "norm": "layernorm", "norm_eps": hf.get("layer_norm_epsilon", 1e-5),
                "position": "learned", "context_length": _need(hf, "n_positions", where),
                "tie_embeddings": True, "activation": activation,
                "vocab_size": _need(hf, "vocab_size", where)}

    # (seqlab name in a block, HF name in a layer, stored transposed: Conv1D is (in, out))
    PAIRS = [("mixer_norm.weight", "ln_1.weight", False), ("mixer_norm.bias", "ln_1.bias", False),
             ("mixer.out_proj.weight", "attn.c_proj.weight", True),
             ("mixer.out_proj.bias", "attn.c_proj.bias", False),
             ("ffn_norm.weight", "ln_2.weight", False), ("ffn_norm.bias", "ln_2.bias", False),
             ("ffn.up.weight", "mlp.c_fc.weight", True), ("ffn.up.bias", "mlp.c_fc.bias", False),
             ("ffn.down.weight", "mlp.c_proj.weight", True), ("ffn.down.bias", "mlp.c_proj.bias", False)]
    ENDS = [("backbone.embed.weight", "transformer.wte.weight"),
            ("backbone.position.table.weight", "transformer.wpe.weight"),
            ("backbone.norm.weight", "transformer.ln_f.weight"),
            ("backbone.norm.bias", "transformer.ln_f.bias")]

    @staticmethod
    def layer(i: int) -> str:
        return f"transformer.h.{i}."

    @staticmethod
    def to_seqlab(t: dict[str, Tensor], cfg) -> dict[str, Tensor]:
        t = t.like({k if k.startswith("transformer.") or k.startswith("lm_head") else
                    "transformer." + k: v for k, v in t.items()})
        out = _mapped(GPT2, t, cfg, to_hf=False)
        d = cfg.d_model
        for i in range(cfg.n_layers):
            h, b = GPT2.layer(i), f"backbone.blocks.{i}."
            qkv_w, qkv_b = t[h + "attn.c_attn.weight"], t[h + "attn.c_attn.bias"]
            out.update({b + "mixer.q_proj.weight": _t(qkv_w[:, :d]), b + "mixer.q_proj.bias": qkv_b[:d],
                        b + "mixer.kv_proj.weight": _t(qkv_w[:, d:]),
                        b + "mixer.kv_proj.bias": qkv_b[d:]})
        return out

    @staticmethod
    def hf_config(cfg, tokenizer) -> dict:
        return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                "vocab_size": cfg.vocab_size, "n_positions": cfg.context_length,
                "n_embd": cfg.d_model, "n_layer": cfg.n_layers, "n_head": cfg.n_heads,
                "n_inner": cfg.d_ff or 4 * cfg.d_model,
                "activation_function": {"gelu": "gelu", "gelu_tanh": "gelu_new"}[cfg.activation],
                "layer_norm_epsilon": cfg.norm_eps if cfg.norm_eps is not None else 1e-5,
                "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
                "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
                "tie_word_embeddings": True}

    @staticmethod
    def to_hf(s: dict[str, Tensor], cfg) -> dict[str, Tensor]:
        out = _mapped(GPT2, s, cfg, to_hf=True)
        for i in range(cfg.n_layers):
            h, b = GPT2.layer(i), f"backbone.blocks.{i}."
            out[h + "attn.c_attn.weight"] = _t(torch.cat([s[b + "mixer.q_proj.weight"],
                                                          s[b + "mixer.kv_proj.weight"]]))
            out[h + "attn.c_attn.bias"] = torch.cat([s[b + "mixer.q_proj.bias"],
                                                     s[b + "mixer.kv_proj.bias"]])
        return out


class Llama:
    """Llama: rotary positions (rotate-half), RMSNorm, grouped-query attention without
    biases, SwiGLU; embeddings tied or not."""

    model_type = "llama"

    @staticmethod
    def model(hf: dict, where: Path) -> dict:
        d, heads = _need(hf, "hidden_size", where), _need(hf, "num_attention_heads", where)
        if hf.get("head_dim") not in (None, d // heads):
            raise ConfigError(f"head_dim {hf['head_dim']} differs from hidden_size / heads "
                              f"({d // heads}); seqlab's attention splits the width evenly")
        if hf.get("attention_bias") or hf.get("mlp_bias"):
            raise ConfigError("Llama checkpoints with attention or MLP biases are not supported")
        return {"mixer": "attention", "d_model": d, "n_layers": _need(hf, "num_hidden_layers", where),
                "n_heads": heads, "n_kv_heads": hf.get("num_key_value_heads") or heads,
                "ffn": "swiglu", "d_ff": _need(hf, "intermediate_size", where), "norm": "rmsnorm",
                "norm_eps": hf.get("rms_norm_eps", 1e-6), "position": "rope",
                **_rope(hf),
                "context_length": hf.get("max_position_embeddings", 2048),
                "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
                "mixer_options": {"attention": {"bias": False}},
                "vocab_size": _need(hf, "vocab_size", where)}

    PAIRS = [("mixer_norm.weight", "input_layernorm.weight", False),
             ("mixer.q_proj.weight", "self_attn.q_proj.weight", False),
             ("mixer.out_proj.weight", "self_attn.o_proj.weight", False),
             ("ffn_norm.weight", "post_attention_layernorm.weight", False),
             ("ffn.down.weight", "mlp.down_proj.weight", False)]
    ENDS = [("backbone.embed.weight", "model.embed_tokens.weight"),
            ("backbone.norm.weight", "model.norm.weight")]

    @staticmethod
    def layer(i: int) -> str:
        return f"model.layers.{i}."

    @staticmethod
    def to_seqlab(t: dict[str, Tensor], cfg) -> dict[str, Tensor]:
        out = _mapped(Llama, t, cfg, to_hf=False)
        for i in range(cfg.n_layers):
            h, b = Llama.layer(i), f"backbone.blocks.{i}."
            out[b + "mixer.kv_proj.weight"] = torch.cat([t[h + "self_attn.k_proj.weight"],
                                                        t[h + "self_attn.v_proj.weight"]])
            out[b + "ffn.gate_up.weight"] = torch.cat([t[h + "mlp.gate_proj.weight"],
                                                      t[h + "mlp.up_proj.weight"]])
        return out

    @staticmethod
    def hf_config(cfg, tokenizer) -> dict:
        return {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
                "intermediate_size": _swiglu_width(cfg), "num_hidden_layers": cfg.n_layers,
                "num_attention_heads": cfg.n_heads,
                "num_key_value_heads": cfg.n_kv_heads or cfg.n_heads,
                "head_dim": cfg.d_model // cfg.n_heads, "hidden_act": "silu",
                "max_position_embeddings": cfg.context_length,
                "rms_norm_eps": cfg.norm_eps if cfg.norm_eps is not None else torch.finfo(torch.float32).eps,
                "rope_theta": cfg.rope_base, "rope_parameters": _rope_parameters(cfg),
                "attention_bias": False, "mlp_bias": False,
                "tie_word_embeddings": cfg.tie_embeddings,
                "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
                "pad_token_id": tokenizer.pad_id}

    @staticmethod
    def to_hf(s: dict[str, Tensor], cfg) -> dict[str, Tensor]:
        out = _mapped(Llama, s, cfg, to_hf=True)
        kv = (cfg.n_kv_heads or cfg.n_heads) * (cfg.d_model // cfg.n_heads)
        for i in range(cfg.n_layers):
            h, b = Llama.layer(i), f"backbone.blocks.{i}."
            k, v = s[b + "mixer.kv_proj.weight"].split(kv)
            gate, up = s[b + "ffn.gate_up.weight"].chunk(2)
            out.update({h + "self_attn.k_proj.weight": k, h + "self_attn.v_proj.weight": v,
                        h + "mlp.gate_proj.weight": gate, h + "mlp.up_proj.weight": up})
        return out


class Mamba:
    """Mamba: selective state-space mixers (in/x/dt/out projections, causal depthwise
    conv, A_log, D), pre-RMSNorm, no ffn, tied embeddings."""

    model_type = "mamba"

    @staticmethod
    def model(hf: dict, where: Path) -> dict:
        d = _need(hf, "hidden_size", where)
        if hf.get("use_bias"):
            raise ConfigError("Mamba checkpoints with projection biases (use_bias) are not supported")
        rank = hf.get("time_step_rank", "auto")
        return {"mixer": "mamba", "d_model": d, "n_layers": _need(hf, "num_hidden_layers", where),
                "ffn": "none", "norm": "rmsnorm", "norm_eps": hf.get("layer_norm_epsilon", 1e-5),
                "position": "none", "context_length": hf.get("max_position_embeddings", 2048),
                "tie_embeddings": bool(hf.get("tie_word_embeddings", True)),
                "mixer_options": {"mamba": {
                    "d_state": hf.get("state_size", 16), "d_conv": hf.get("conv_kernel", 4),
                    "expand": hf.get("expand", 2),
                    "dt_rank": math.ceil(d / 16) if rank == "auto" else int(rank)}},
                "vocab_size": _need(hf, "vocab_size", where)}

    PAIRS = [("mixer_norm.weight", "norm.weight", False)] + [
        (f"mixer.{name}", f"mixer.{name}", False)
        for name in ("A_log", "D", "in_proj.weight", "conv1d.weight", "conv1d.bias",
                     "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "out_proj.weight")]
    ENDS = [("backbone.embed.weight", "backbone.embeddings.weight"),
            ("backbone.norm.weight", "backbone.norm_f.weight")]

    @staticmethod
    def layer(i: int) -> str:
        return f"backbone.layers.{i}."

    @staticmethod
    def to_seqlab(t: dict[str, Tensor], cfg) -> dict[str, Tensor]:
        return _mapped(Mamba, t, cfg, to_hf=False)


class Bert:
    """BERT with its masked-LM head (BertForMaskedLM): post-LayerNorm blocks, a LayerNorm
    on the embeddings, learned positions, GELU MLP; token type 0's embedding is folded
    into the position table (exact for single-segment inputs, which is what seqlab
    feeds). Imported as a ``masked_lm`` run; its [PAD], [CLS], [SEP] and [MASK] ids come
    from the directory's ``vocab.txt`` or ``tokenizer.json``."""

    model_type = "bert"
    task = "masked_lm"
    PAIRS = [("mixer.q_proj.weight", "attention.self.query.weight", False),
             ("mixer.q_proj.bias", "attention.self.query.bias", False),
             ("mixer.out_proj.weight", "attention.output.dense.weight", False),
             ("mixer.out_proj.bias", "attention.output.dense.bias", False),
             ("mixer_norm.weight", "attention.output.LayerNorm.weight", False),
             ("mixer_norm.bias", "attention.output.LayerNorm.bias", False),
             ("ffn.up.weight", "intermediate.dense.weight", False),
             ("ffn.up.bias", "intermediate.dense.bias", False),
             ("ffn.down.weight", "output.dense.weight", False),
             ("ffn.down.bias", "output.dense.bias", False),
             ("ffn_norm.weight", "output.LayerNorm.weight", False),
             ("ffn_norm.bias", "output.LayerNorm.bias", False)]
    ENDS = [("backbone.embed.weight", "bert.embeddings.word_embeddings.weight"),
            ("backbone.embed_norm.weight", "bert.embeddings.LayerNorm.weight"),
            ("backbone.embed_norm.bias", "bert.embeddings.LayerNorm.bias"),
            ("head.transform.0.weight", "cls.predictions.transform.dense.weight"),
            ("head.transform.0.bias", "cls.predictions.transform.dense.bias"),
            ("head.transform.2.weight", "cls.predictions.transform.LayerNorm.weight"),
            ("head.transform.2.bias", "cls.predictions.transform.LayerNorm.bias"),
            ("head.bias", "cls.predictions.bias")]

    @staticmethod
    def layer(i: int) -> str:
        return f"bert.encoder.layer.{i}."

    @staticmethod
    def model(hf: dict, where: Path) -> dict:
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError(f"BERT position_embedding_type {hf['position_embedding_type']!r} "
                              "is not supported (absolute is)")
        activation = {"gelu": "gelu", "gelu_new": "gelu_tanh"}.get(hf.get("hidden_act", "gelu"))
        if activation is None:
            raise ConfigError(f"BERT hidden_act {hf['hidden_act']!r} is not supported (gelu is)")
        return {"mixer": "attention", "causal": False, "d_model": _need(hf, "hidden_size", where),
                "n_layers": _need(hf, "num_hidden_layers", where),
                "n_heads": _need(hf, "num_attention_heads", where), "ffn": "mlp",
                "d_ff": _need(hf, "intermediate_size", where), "activation": activation,
                "norm": "layernorm", "norm_eps": hf.get("layer_norm_eps", 1e-12),
                "norm_position": "post", "embed_norm": True, "position": "learned",
                "context_length": _need(hf, "max_position_embeddings", where),
                "tie_embeddings": bool(hf.get("tie_word_embeddings", True)),
                "vocab_size": _need(hf, "vocab_size", where)}

    @staticmethod
    def to_seqlab(t: dict[str, Tensor], cfg) -> dict[str, Tensor]:
        if not any(k.startswith("cls.predictions") for k in t):
            raise CheckpointError(f"{t.where}: no masked-LM head (cls.predictions.*); "
                                  "import a BertForMaskedLM checkpoint")
        if not cfg.tie_embeddings:  # the decoder has weights of its own
            t = t.like({**t, "lm_head.weight": t["cls.predictions.decoder.weight"]})
        out = _mapped(Bert, t, cfg, to_hf=False)
        e = "bert.embeddings."
        out["backbone.position.table.weight"] = (t[e + "position_embeddings.weight"]
                                                 + t[e + "token_type_embeddings.weight"][0])
        for i in range(cfg.n_layers):
            h, b = Bert.layer(i), f"backbone.blocks.{i}."
            out[b + "mixer.kv_proj.weight"] = torch.cat([t[h + "attention.self.key.weight"],
                                                        t[h + "attention.self.value.weight"]])
            out[b + "mixer.kv_proj.bias"] = torch.cat([t[h + "attention.self.key.bias"],
                                                      t[h + "attention.self.value.bias"]])
        return out

    @staticmethod
    def special_ids(hf: dict, directory: Path, vocab: int) -> dict[str, int]:
        names = {"<pad>": "[PAD]", "<bos>": "[CLS]", "<eos>": "[SEP]", "<mask>": "[MASK]"}
        index = _vocabulary(directory)
        missing = [token for token in names.values() if token not in index]
        if missing:
            raise CheckpointError(f"{directory}: BERT's special tokens {', '.join(missing)} are not "
                                  "in a vocab.txt or tokenizer.json there; the masked LM needs "
                                  "their ids")
        return {ours: index[theirs] for ours, theirs in names.items()}


def _vocabulary(directory: Path) -> dict[str, int]:
    """Token -> id from a WordPiece ``vocab.txt`` or a fast ``tokenizer.json`` (empty if
    there is neither)."""
    if (directory / "vocab.txt").is_file():
        lines = (directory / "vocab.txt").read_text(encoding="utf-8").splitlines()
        return {token: i for i, token in enumerate(lines)}
    if (directory / "tokenizer.json").is_file():
        return dict(read_json(directory / "tokenizer.json").get("model", {}).get("vocab", {}))
    return {}


ARCHITECTURES = {cls.model_type: cls for cls in (GPT2, Llama, Mamba, Bert)}
EXPORTABLE = {"gpt2": GPT2, "llama": Llama}


def _swiglu_width(cfg) -> int:
    return cfg.d_ff or 64 * ((8 * cfg.d_model // 3 + 63) // 64)


# -- the two directions ----------------------------------------------------------------------
