"""Named model presets (``model.preset: gpt-small``); explicit model keys override them."""

from __future__ import annotations

from dataclasses import dataclass

from seqlab.registry import Registry


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: dict


PRESETS: Registry = Registry("model preset")


def _add(name: str, description: str, **model) -> None:
    PRESETS.add(name, Preset(name, description, model))


_SIZES = {"tiny": dict(d_model=128, n_layers=4, n_heads=4, context_length=128),
          "small": dict(d_model=256, n_layers=4, n_heads=4, context_length=256)}

for _size, _shape in _SIZES.items():
    _add(f"gpt-{_size}", "GPT-2 style: attention + GELU MLP, learned positions, LayerNorm",
         mixer="attention", ffn="mlp", norm="layernorm", position="learned",
         tie_embeddings=True, **_shape)
    _add(f"llama-{_size}", "Llama style: attention + SwiGLU, rotary positions, RMSNorm",
         mixer="attention", ffn="swiglu", norm="rmsnorm", position="rope",
         tie_embeddings=True, mixer_options={"attention": {"bias": False}}, **_shape)

_RNN_SIZES = {"tiny": dict(d_model=256, context_length=128),
              "small": dict(d_model=512, context_length=256)}
for _cell, _label in (("lstm", "LSTM"), ("gru", "GRU"), ("rnn", "Elman (tanh) RNN")):
    for _size, _shape in _RNN_SIZES.items():
        _add(f"{_cell}-lm-{_size}",
             f"classic 2-layer {_label} language model on torch's fused kernel",
             mixer=_cell, n_layers=1, ffn="none", norm="none", residual=False,
             position="none", tie_embeddings=False,
             mixer_options={_cell: {"num_layers": 2}}, **_shape)

for _size, _shape in _SIZES.items():  # the state-space presets share the attention shapes
    _add(f"mamba-{_size}", "Mamba style: selective state-space mixers, no ffn, RMSNorm",
         mixer="mamba", ffn="none", norm="rmsnorm", position="none", tie_embeddings=True,
         **_shape)
    _add(f"s4-{_size}", "S4D diagonal state-space mixers + GELU MLP, LayerNorm",
         mixer="s4d", ffn="mlp", norm="layernorm", position="none", tie_embeddings=True,
         **_shape)
    _add(f"hybrid-{_size}", "hybrid stack: mamba, mamba, attention, mamba (rotary positions)",
         mixer=["mamba", "mamba", "attention", "mamba"], ffn="none", norm="rmsnorm",
         position="rope", tie_embeddings=True, mixer_options={"attention": {"bias": False}},
         **_shape)

# Short names pick the small size.
for _base in ("gpt", "llama", "lstm-lm", "gru-lm", "rnn-lm", "mamba", "s4", "hybrid"):
    _p = PRESETS.get(f"{_base}-small")
    PRESETS.add(_base, Preset(_base, _p.description + " (= " + _p.name + ")", _p.model))
