"""The mixer registry: name -> factory and its typed options.

Every factory receives the same shared arguments (``MixerArgs``) plus an options
dataclass of its own, which a config fills from ``model.mixer_options.<name>``.
Adding a mixer is one class and one ``register_mixer`` call in the mixer's own module;
this module holds only the registry, so it imports no mixer and every mixer may import
it. ``seqlab.nn`` imports every mixer module, so the registry is complete once
``seqlab.nn`` is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from seqlab.nn.mixer import Mixer
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

