"""Backbone: ``inputs -> embed -> N x Block -> final norm`` returning hidden states.

The backbone owns the streaming state of the whole stack (one state per block plus
the count of real tokens each sequence has seen, for absolute positions), so a
model is driven by generation or streaming code that never asks which mixers it holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from seqlab.errors import ShapeError
from seqlab.nn.layers import Block
from seqlab.nn.mixer import State, tracing
from seqlab.nn.positions import AbsolutePosition, positions_from_mask


@dataclass
class BackboneState:
    """Per-block mixer states, (B,) real positions seen per sequence, and the input
    adapter's own state when it streams (a convolutional front end's pending steps)."""

    layers: list[State]
    seen: Tensor
    front: tuple[Tensor, ...] | None = None

    def reorder(self, index: Tensor) -> "BackboneState":
        """A new state holding the given batch rows of every layer's state (beam search,
        dropping finished rows); this one is left unchanged."""
        layers = []
        for s in self.layers:
            if hasattr(s, "reorder"):
                s = s.reorder(index)
            elif isinstance(s, tuple):  # recurrent (h[, c]): (num_layers, B, D)
                s = tuple(t.index_select(1 if t.dim() == 3 else 0, index) for t in s)
            layers.append(s)
        front = None if self.front is None else tuple(t.index_select(0, index) for t in self.front)
        return BackboneState(layers, self.seen.index_select(0, index), front)


@dataclass
class BackboneOutput:
    hidden: Tensor  # (B, T, D)
    state: BackboneState | None = None
    padding_mask: Tensor | None = None  # of the positions (the adapter may shorten inputs)


class Backbone(nn.Module):
    """A stack of blocks between an input embedding and a final norm.

    Args:
        embed: the input adapter (``seqlab.models.inputs``), (B, T[, F]) -> (B, T, D).
        blocks: the Blocks, applied in order.
        norm: the final norm.
        position: an absolute position encoding added after the embedding, or None.
        dropout: dropout on the embedding output.
        embed_norm: a norm of the embedding output (BERT), or None.
        embed_scale: what the embedding output is multiplied by (sqrt(D) in the original
            Transformer), before positions are added.
    """

    def __init__(self, embed: nn.Module, blocks: list[Block], norm: nn.Module, *,
                 position: AbsolutePosition | None = None, dropout: float = 0.0,
                 embed_norm: nn.Module | None = None, embed_scale: float = 1.0):
        super().__init__()
        self.embed = embed
        self.embed_scale = embed_scale
        self.position = position
        self.embed_norm = embed_norm
        self.blocks = nn.ModuleList(blocks)
        self.norm = norm
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.d_model = blocks[0].mixer.d_model if blocks else None
        limits = [m for m in [getattr(position, "max_positions", None)]
                  + [b.mixer.max_positions for b in blocks] if m]
        self.max_positions: int | None = min(limits) if limits else None
        self.causal = all(b.mixer.causal for b in blocks)
        # Activation checkpointing (train.activation_checkpointing): in training without a
        # state, each block keeps only its input and recomputes its activations during
        # backward, trading about one more forward pass for memory that no longer grows
        # with depth.
        self.checkpoint_blocks = False

    def init_state(self, batch_size: int, device=None, dtype=None) -> BackboneState:
        streams = getattr(self.embed, "streams", False)
        return BackboneState(
            layers=[b.mixer.init_state(batch_size, device, dtype) for b in self.blocks],
            seen=torch.zeros(batch_size, dtype=torch.long, device=device),
            front=self.embed.init_state(batch_size, device, dtype) if streams else None,
        )

    def _embed(self, inputs: Tensor, state: BackboneState | None,
               padding_mask: Tensor | None) -> tuple[Tensor, tuple | None, Tensor | None]:
        """The adapter's output, its new state, and the mask of its positions."""
        if state is not None and state.front is not None:
            if padding_mask is not None and not tracing() and not bool(padding_mask.all()):
                raise ShapeError("a streaming convolutional front end takes unpadded chunks "
                                 "(one stream per row, every row the same length)")
            x, front = self.embed.stream(inputs, state.front)
            return x, front, None
        x = self.embed(inputs)
        if padding_mask is not None and hasattr(self.embed, "positions_mask"):
            padding_mask = self.embed.positions_mask(padding_mask)
        return x, None, padding_mask

    def forward(self, inputs: Tensor, state: BackboneState | None = None, *,
                padding_mask: Tensor | None = None) -> BackboneOutput:
        """Args: inputs (B, T) ids or (B, T, F) features; padding_mask (B, T) bool, True = real."""
        # (B, T, D); fewer positions for patched or subsampled features
        x, front, padding_mask = self._embed(inputs, state, padding_mask)
        if front is not None and x.shape[1] == 0:  # the front end is still gathering steps
            return BackboneOutput(self.norm(x), BackboneState(state.layers, state.seen, front))
        if self.embed_scale != 1.0:
            x = x * self.embed_scale
        B, T = x.shape[:2]
        if padding_mask is not None and padding_mask.shape[1] != T:
            raise ShapeError(f"the padding mask covers {padding_mask.shape[1]} steps but the "
                             f"input adapter made {T} positions (patched inputs take equal "
                             "lengths, unpadded)")
        if self.position is not None:
            start = state.seen if state is not None else 0
            x = x + self.position(positions_from_mask(start, B, T, padding_mask, device=x.device))
        elif self.max_positions is not None and not tracing():
            seen = int(state.seen.max()) if state is not None else 0
            if seen + T > self.max_positions:
                raise ShapeError(f"sequence length {seen + T} exceeds this model's limit of "
                                 f"{self.max_positions} positions")
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        x = self.dropout(x)
        layer_states = state.layers if state is not None else [None] * len(self.blocks)
        new_states = []
        recompute = self.checkpoint_blocks and self.training and state is None and torch.is_grad_enabled()
        for block, s in zip(self.blocks, layer_states):
            if recompute:
                x, s = checkpoint(block, x, None, padding_mask=padding_mask, use_reentrant=False)
            else:
                x, s = block(x, s, padding_mask=padding_mask)
            new_states.append(s)
        x = self.norm(x)
        if state is None:
            return BackboneOutput(x, None, padding_mask)
        seen = state.seen + (padding_mask.sum(1) if padding_mask is not None else T)
        return BackboneOutput(x, BackboneState(new_states, seen, front), padding_mask)
