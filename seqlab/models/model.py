"""SequenceModel: a backbone and an output head, the model every task wraps.

Tasks own the loss; this class only maps inputs to outputs and threads the backbone's
streaming state, so generation and streaming code can drive any task's model.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from seqlab.models.backbone import Backbone, BackboneState
from seqlab.models.build import OutputHead


@dataclass
class ModelOutput:
    logits: Tensor  # (B, T, C): vocabulary logits, class scores or regression values
    state: BackboneState | None = None
    loss: Tensor | None = None


class SequenceModel(nn.Module):
    """Backbone + output head."""

    def __init__(self, backbone: Backbone, head: OutputHead):
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
        return ModelOutput(self.head(out.hidden), out.state)
