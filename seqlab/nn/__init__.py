"""Sequence layers: mixers, positions, feed-forwards, norms and the Block (pure torch).

Each mixer registers itself in ``MIXERS`` in its own module; importing every mixer
module here makes the registry complete once ``seqlab.nn`` is imported.
"""

from seqlab.nn import linear_attention, local_attention, mamba, s4d, segment_memory  # noqa: F401
from seqlab.nn.attention import ATTENTION_KERNELS, Attention, KVCache
from seqlab.nn.layers import FFNS, MLP, NORMS, Block, SwiGLU
from seqlab.nn.mixer import Mixer, warn_once
from seqlab.nn.mixers import MIXERS, MixerArgs, register_mixer
from seqlab.nn.positions import POSITIONS
from seqlab.nn.recurrent import RecurrentMixer

__all__ = [
    "ATTENTION_KERNELS", "Attention", "Block", "FFNS", "KVCache", "MIXERS", "MLP", "Mixer",
    "MixerArgs", "NORMS", "POSITIONS", "RecurrentMixer", "SwiGLU", "register_mixer", "warn_once",
]
