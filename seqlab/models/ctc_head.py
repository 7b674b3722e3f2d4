"""The CTC head: per-position log-probabilities over the tokens and a blank, trained
with the connectionist temporal classification loss (Graves et al., 2006)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.errors import DataError
from seqlab.models.heads import HEADS, IGNORE, Head, LossSum


@HEADS.register("ctc")
class CTCHead(Head):
    """Log-probabilities (B, T, V) over ``vocab_size`` outputs, ``blank`` among them (the
    tokenizer's ``<pad>``, which no transcript holds).

    Padded positions read as a certain blank (log-probability 0 for the blank, -inf for
    the rest): decoding a padded row then gives what decoding its real positions alone
    gives. The loss is the summed negative log-likelihood of every row's transcript
    (``targets`` (B, L), IGNORE at padding) over its real positions, counted per target
    token, so the mean is per transcript token across micro-batches and ranks.
    """

    def __init__(self, d_model: int, vocab_size: int, blank: int):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size)
        self.blank = blank

    def forward(self, hidden: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        log_probs = self.proj(hidden).float().log_softmax(-1)
        if padding_mask is None:
            return log_probs
        certain = torch.full_like(log_probs[0, 0], float("-inf"))
        certain[self.blank] = 0.0
        return torch.where(padding_mask.unsqueeze(-1), log_probs, certain)

    def loss(self, hidden: Tensor, targets: Tensor, padding_mask: Tensor | None = None,
             **extras: Tensor) -> LossSum:
        log_probs = self(hidden, padding_mask)  # (B, T, V)
        B, T = log_probs.shape[:2]
        lengths = (padding_mask.sum(1) if padding_mask is not None
                   else torch.full((B,), T, device=log_probs.device))
        real = targets != IGNORE
        target_lengths = real.sum(1)
        total = F.ctc_loss(log_probs.transpose(0, 1), targets[real], lengths, target_lengths,
                           blank=self.blank, reduction="none", zero_infinity=False)
        if not torch.isfinite(total).all():
            row = int((~torch.isfinite(total)).nonzero()[0])
            raise DataError(f"batch row {row}: a transcript of {int(target_lengths[row])} tokens "
                            f"cannot be emitted in {int(lengths[row])} CTC steps (a token per "
                            "step and a blank between repeats); the source should have dropped it")
        return LossSum(total.sum(), target_lengths.sum(), log_probs)


__all__ = ["CTCHead"]
