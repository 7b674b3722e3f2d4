"""Reverse-complement-averaged outputs: DNA and RNA read the same on either strand.

A double-stranded sequence and its reverse complement are one molecule, so a model of
it should say the same thing about both. :class:`StrandAveraged` wraps a trained
classify, tag or regress model: every batch runs as given and reverse-complemented, and
the two outputs are averaged (for tags, after the second is read back into the first's
order), which makes what it predicts and scores the same for either strand. Logits are
averaged (a log-linear pool of the two strands' class probabilities); values for
regression.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqlab.models.heads import LossSum
from seqlab.models.model import ModelOutput, SequenceModel


def strand_flip_index(padding_mask: Tensor | None, shape: tuple[int, int], *,
                      keep_first: int = 0) -> Tensor:
    """For each row, the position each position reads from when the row's real tokens
    (after the first ``keep_first``, a ``<bos>``) are reversed and padding stays put; an
    involution, so it also reads reversed outputs back.

    Shapes:
        padding_mask: (B, T), True = real -> index: (B, T).
    """
    B, T = shape
    positions = torch.arange(T).expand(B, T)
    lengths = (torch.full((B,), T) if padding_mask is None
               else padding_mask.sum(1).cpu()) - keep_first  # (B,) real tokens after the first k
    mirrored = 2 * keep_first + lengths.unsqueeze(1) - 1 - positions  # (B, T): k + (n - 1 - (t - k))
    inside = (positions >= keep_first) & (positions < keep_first + lengths.unsqueeze(1))
    return torch.where(inside, mirrored, positions)


class StrandAveraged(nn.Module):
    """``model`` with each input read on both strands and the outputs averaged.

    Args:
        model: a trained model of a classify, tag or regress run.
        complement: the id of each id's complementary base, (V,) (a nucleotide
            tokenizer's ``complement_ids()``).
        keep_first: leading ids (a ``<bos>``) that stay in front when a row is flipped.
        per_position: the outputs are per position (tags), read back into order.
    """

    def __init__(self, model: SequenceModel, complement, *, keep_first: int = 0,
                 per_position: bool = False):
        super().__init__()
        self.model = model
        self.register_buffer("complement", torch.as_tensor(complement, dtype=torch.long),
                             persistent=False)
        self.keep_first, self.per_position = keep_first, per_position

    @property
    def head(self):
        return self.model.head

    def forward(self, inputs: Tensor, state=None, *, padding_mask: Tensor | None = None) -> ModelOutput:
        if state is not None:
            raise ValueError("strand averaging reads whole sequences; it carries no state")
        index = strand_flip_index(padding_mask, inputs.shape, keep_first=self.keep_first)
        index = index.to(inputs.device)
        flipped = self.complement[inputs.gather(1, index)]  # (B, T)
        both = self.model(torch.cat([inputs, flipped]),
                          padding_mask=None if padding_mask is None
                          else torch.cat([padding_mask, padding_mask])).logits
        given, other = both.float().chunk(2)
        if self.per_position:  # (B, T, C): read the flipped strand's outputs back into order
            other = other.gather(1, index.unsqueeze(-1).expand_as(other))
        return ModelOutput((given + other) / 2)

    def loss(self, inputs: Tensor, targets: Tensor, padding_mask: Tensor | None = None,
             **extras: Tensor) -> LossSum:
        outputs = self(inputs, padding_mask=padding_mask).logits
        return self.model.head.loss_from_outputs(outputs, targets, padding_mask)
