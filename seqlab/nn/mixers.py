"""The mixer registry: name -> factory and its typed options.

Every factory receives the same shared arguments (``MixerArgs``) plus an options
dataclass of its own, which a config fills from ``model.mixer_options.<name>``.
Adding a mixer is one class and one ``register_mixer`` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from seqlab.nn.attention import Attention
from seqlab.nn.mixer import Mixer
from seqlab.nn.recurrent import RecurrentMixer
from seqlab.registry import Registry


@dataclass(frozen=True)
class MixerArgs:
    """What every mixer factory is given."""

    d_model: int
    n_heads: int
    n_kv_heads: int | None
    causal: bool
    dropout: float
    context_length: int
    position: nn.Module | None  # a relative position module (rope/alibi), built per model
    layer_index: int = 0


@dataclass(frozen=True)
class MixerEntry:
    build: Callable[[MixerArgs, object], Mixer]
    options: type
    uses_positions: bool = False  # consumes relative positions (rope/alibi)
    modes: tuple[str, ...] = ("causal", "bidirectional")

    def supports(self, causal: bool) -> bool:
        return ("causal" if causal else "bidirectional") in self.modes


MIXERS: Registry = Registry("mixer")


def register_mixer(name: str, options: type, *, uses_positions: bool = False,
                   modes: tuple[str, ...] = ("causal", "bidirectional")):
    """Decorator registering ``build(args, options) -> Mixer`` under ``name``.

    ``modes`` says whether the mixer can run causally (with a streaming state),
    bidirectionally, or both; configs asking for another mode are refused.
    """

    def decorator(build):
        MIXERS.add(name, MixerEntry(build, options, uses_positions, tuple(modes)))
        return build

    return decorator


@dataclass
class AttentionOptions:
    """``dropout`` is on the attention weights (separate from ``model.dropout`` on the
    residual branches): off by default because on CPU it takes SDPA off its fused kernel."""

    kernel: str = "sdpa"
    bias: bool = True
    dropout: float = 0.0


@register_mixer("attention", AttentionOptions, uses_positions=True)
def _attention(a: MixerArgs, o: AttentionOptions) -> Mixer:
    return Attention(a.d_model, a.n_heads, n_kv_heads=a.n_kv_heads, causal=a.causal,
                     position=a.position, kernel=o.kernel, dropout=o.dropout, bias=o.bias)


@dataclass
class RecurrentOptions:
    num_layers: int = 1
    impl: str = "fused"


def _recurrent(cell: str):
    def build(a: MixerArgs, o: RecurrentOptions) -> Mixer:
        return RecurrentMixer(a.d_model, cell, num_layers=o.num_layers, dropout=a.dropout,
                              causal=a.causal, impl=o.impl)

    return build


for _cell in ("rnn", "lstm", "gru"):
    register_mixer(_cell, RecurrentOptions)(_recurrent(_cell))
