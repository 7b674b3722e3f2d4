"""SequenceModel: a backbone and a head, the model every objective trains.

The head owns the loss; this class maps inputs to outputs and threads the backbone's
streaming state, so generation and streaming code can drive any objective's model.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from seqlab.models.backbone import Backbone, BackboneState
from seqlab.models.heads import Head, LossSum


@dataclass
class ModelOutput:
    logits: Tensor  # the head's outputs: (B, T, V) logits, (B, C) class scores, (B, K) values
    state: BackboneState | None = None
    loss: Tensor | None = None


class SequenceModel(nn.Module):
    """Backbone + head."""

    def __init__(self, backbone: Backbone, head: Head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def causal(self) -> bool:
        return self.backbone.causal

    @property
    def max_positions(self) -> int | None:
        return self.backbone.max_positions

    def init_state(self, batch_size: int, device=None, dtype=None) -> BackboneState:
        return self.backbone.init_state(batch_size, device, dtype)

    def forward(self, inputs: Tensor, state: BackboneState | None = None, *,
                padding_mask: Tensor | None = None) -> ModelOutput:
        out = self.backbone(inputs, state, padding_mask=padding_mask)
        return ModelOutput(self.head(out.hidden, out.padding_mask), out.state)

    def loss(self, inputs: Tensor, targets: Tensor, padding_mask: Tensor | None = None,
             **extras: Tensor) -> LossSum:
        """The head's loss (a sum and a count) of one batch, from a stateless pass."""
        out = self.backbone(inputs, padding_mask=padding_mask)  # hidden (B, T, D)
        return self.head.loss(out.hidden, targets, out.padding_mask, **extras)
