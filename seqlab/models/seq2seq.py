"""Encoder-decoder models: an encoder stack over the source, a decoder stack over the
target whose blocks also attend to the encoder's outputs.

Both stacks are made of the ordinary mixers. The encoder is a ``Backbone`` (any mixer
in the mode asked for, bidirectional by default); each decoder block is
``x + mixer(norm(x))``, ``x + cross(norm(x), memory)``, ``x + ffn(norm(x))`` with a causal
mixer, so a Transformer decoder, an LSTM decoder with attention (Luong's or Bahdanau's
score) and a mamba decoder over an attention encoder are the same class.

The decoder's state (``DecoderState``) holds each block's mixer state (its self-attention
cache, or recurrent state) and each block's cross-attention keys and values over the
memory, computed once per source by ``Seq2SeqModel.start``. Decoding steps through it,
and a chunked run through the state equals one teacher-forced pass, as for every causal
mixer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.errors import ShapeError
from seqlab.models.backbone import Backbone, BackboneState
from seqlab.models.heads import IGNORE, LossSum
from seqlab.models.model import ModelOutput
from seqlab.nn.cross_attention import CrossAttention, MemoryKV
from seqlab.nn.mixer import Mixer, State
from seqlab.nn.positions import AbsolutePosition, positions_from_mask


@dataclass
class DecoderState(BackboneState):
    """Per-block mixer states, per-block memory keys and values, and (B,) target tokens
    seen per row."""

    memory: list[MemoryKV] | None = None

    def reorder(self, index: Tensor, *, memory: bool = True) -> "DecoderState":
        """The given rows; with ``memory=False`` the memory's rows stay as they are, which
        is right when every new row reads the same source as the row it replaces (beam
        search reordering the beams of each sentence) and saves copying it."""
        picked = super().reorder(index)
        kept = [kv.reorder(index) for kv in self.memory] if memory else self.memory
        return DecoderState(picked.layers, picked.seen, memory=kept)


class DecoderBlock(nn.Module):
    """``x + mixer(norm(x))``, ``x + cross(norm(x), memory)``, ``x + ffn(norm(x))``; with
    ``post_norm`` each sum is normalised instead (the original Transformer's order)."""

    def __init__(self, mixer: Mixer, cross: CrossAttention, *, ffn: nn.Module | None = None,
                 norm: Callable[[int], nn.Module] = nn.LayerNorm, dropout: float = 0.0,
                 post_norm: bool = False):
        super().__init__()
        if not mixer.causal:
            raise ValueError(f"a decoder block needs a causal mixer; {type(mixer).__name__} "
                             "is bidirectional")
        d = mixer.d_model
        self.mixer, self.cross, self.ffn = mixer, cross, ffn
        self.mixer_norm, self.cross_norm = norm(d), norm(d)
        self.ffn_norm = norm(d) if ffn is not None else None
        self.post_norm = post_norm
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, state: State, kv: MemoryKV, *,
                padding_mask: Tensor | None = None) -> tuple[Tensor, State]:
        if self.post_norm:
            h, state = self.mixer(x, state, padding_mask=padding_mask)
            x = self.mixer_norm(x + self.dropout(h))
            x = self.cross_norm(x + self.dropout(self.cross(x, kv)))
            if self.ffn is not None:
                x = self.ffn_norm(x + self.dropout(self.ffn(x)))
            return x, state
        h, state = self.mixer(self.mixer_norm(x), state, padding_mask=padding_mask)
        x = x + self.dropout(h)
        x = x + self.dropout(self.cross(self.cross_norm(x), kv))
        if self.ffn is not None:
            x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, state


class Decoder(nn.Module):
    """Token embedding -> decoder blocks -> final norm; hidden states (B, T, D)."""

    def __init__(self, embed: nn.Module, blocks: list[DecoderBlock], norm: nn.Module, *,
                 position: AbsolutePosition | None = None, dropout: float = 0.0,
                 scale_embedding: bool = False):
        super().__init__()
        self.embed, self.position, self.norm = embed, position, norm
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.d_model = blocks[0].mixer.d_model
        self.embed_scale = self.d_model ** 0.5 if scale_embedding else 1.0
        limits = [m for m in [getattr(position, "max_positions", None)]
                  + [b.mixer.max_positions for b in blocks] if m]
        self.max_positions: int | None = min(limits) if limits else None

    def memory(self, memory: Tensor, mask: Tensor | None) -> list[MemoryKV]:
        return [b.cross.memory(memory, mask) for b in self.blocks]

    def init_state(self, memory: list[MemoryKV], device=None, dtype=None) -> DecoderState:
        B = memory[0].k.shape[0]
        return DecoderState([b.mixer.init_state(B, device, dtype) for b in self.blocks],
                            torch.zeros(B, dtype=torch.long, device=device), memory=memory)

    def forward(self, ids: Tensor, state: DecoderState | None = None, *,
                memory: list[MemoryKV] | None = None,
                padding_mask: Tensor | None = None) -> tuple[Tensor, DecoderState | None]:
        """``memory`` for a stateless (teacher-forced) pass; a state carries its own."""
        kvs = state.memory if state is not None else memory
        if kvs is None:
            raise ShapeError("the decoder needs the encoder's memory: pass memory= or a state "
                             "from Seq2SeqModel.start")
        x = self.embed(ids) * self.embed_scale
        B, T = x.shape[:2]
        if self.position is not None:
            start = state.seen if state is not None else 0
            x = x + self.position(positions_from_mask(start, B, T, padding_mask, device=x.device))
        x = self.dropout(x)
        layers = state.layers if state is not None else [None] * len(self.blocks)
        new_layers = []
        for block, s, kv in zip(self.blocks, layers, kvs):
            x, s = block(x, s, kv, padding_mask=padding_mask)
            new_layers.append(s)
        x = self.norm(x)
        if state is None:
            return x, None
        seen = state.seen + (padding_mask.sum(1) if padding_mask is not None else T)
        return x, DecoderState(new_layers, seen, memory=kvs)


class Seq2SeqModel(nn.Module):
    """Encoder + decoder + output projection over the target vocabulary.

    ``label_smoothing`` is the training loss's (the objective sets it).
    """

    causal = True  # the decoder is; decoding loops drive it through its state

    def __init__(self, encoder: Backbone, decoder: Decoder, vocab_size: int, *,
                 tie_embeddings: bool = True, final_logits_bias: bool = False):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.proj = nn.Linear(decoder.d_model, vocab_size, bias=final_logits_bias)
        if tie_embeddings:
            self.proj.weight = decoder.embed.weight
        self.label_smoothing = 0.0

    @property
    def max_positions(self) -> int | None:
        return self.decoder.max_positions

    def encode(self, source: Tensor, source_mask: Tensor | None = None) -> Tensor:
        """Encoder outputs (B, S, D) of source ids (B, S) (or features (B, S, F), which
        a subsampling front end may shorten)."""
        return self.encoder(source, padding_mask=source_mask).hidden

    def memory(self, source: Tensor, source_mask: Tensor | None = None) -> list:
        """Every decoder layer's cross-attention keys and values over the encoded source,
        masked at the encoder's positions."""
        out = self.encoder(source, padding_mask=source_mask)
        return self.decoder.memory(out.hidden, out.padding_mask)

    def start(self, source: Tensor, source_mask: Tensor | None = None) -> DecoderState:
        """Encode the source once and return the decoder's initial state over it."""
        memory = self.memory(source, source_mask)
        return self.decoder.init_state(memory, source.device)

    def forward(self, ids: Tensor, state: DecoderState, *,
                padding_mask: Tensor | None = None) -> ModelOutput:
        """Continue the decoder from ``state`` by target ids (B, T): logits (B, T, V)."""
        hidden, state = self.decoder(ids, state, padding_mask=padding_mask)
        return ModelOutput(self.proj(hidden), state)

    def teacher_forced(self, source: Tensor, decoder_inputs: Tensor, *,
                       source_mask: Tensor | None = None,
                       decoder_mask: Tensor | None = None) -> Tensor:
        """Logits (B, T, V) of every target position in one pass."""
        memory = self.memory(source, source_mask)
        hidden, _ = self.decoder(decoder_inputs, memory=memory, padding_mask=decoder_mask)
        return self.proj(hidden)

    def loss(self, inputs: Tensor, targets: Tensor, padding_mask: Tensor | None = None, *,
             decoder_inputs: Tensor, decoder_mask: Tensor | None = None, **extras) -> LossSum:
        """Summed (label-smoothed) cross-entropy over the real target tokens, and their
        count. ``targets`` (B, T) hold IGNORE at padding, where no logits are computed:
        the outputs are the (N, V) logits of the N real target tokens, in row order."""
        memory = self.memory(inputs, padding_mask)
        hidden, _ = self.decoder(decoder_inputs, memory=memory, padding_mask=decoder_mask)
        real = targets != IGNORE
        logits = self.proj(hidden[real])  # (N, V)
        total = F.cross_entropy(logits.float(), targets[real], reduction="sum",
                                label_smoothing=self.label_smoothing)
        return LossSum(total, real.sum(), logits)


__all__ = ["Decoder", "DecoderBlock", "DecoderState", "Seq2SeqModel"]
