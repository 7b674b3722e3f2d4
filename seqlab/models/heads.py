"""Heads: what an objective reads off the backbone's hidden states.

A head receives hidden states (B, T, D) and the padding mask (True = real), owns its
loss and its prediction. Losses come back as a *sum* and a *count* (:class:`LossSum`),
never a mean, so the trainer can average exactly over gradient-accumulation micro-batches
(and later over ranks): the mean of a step is the sum of the sums over the sum of the
counts, whatever the padding in each micro-batch. Padding never counts in a loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.errors import ConfigError, ShapeError
from seqlab.registry import Registry

IGNORE = -100  # target value that no loss or metric counts (F.cross_entropy's ignore_index)

HEADS: Registry[type] = Registry("head")
POOLINGS = ("mean", "first", "last")


@dataclass
class LossSum:
    """A loss as the sum over counted items and their count (a weighted count for
    class-weighted losses); ``outputs`` is what the head computed on the way, kept so
    that metrics need not run the head again."""

    total: Tensor
    count: Tensor | float
    outputs: Tensor | None = None


def pool(hidden: Tensor, padding_mask: Tensor | None, how: str) -> Tensor:
    """One vector per sequence from (B, T, D) hidden states: the mean over real
    positions, the first real position, or the last real position (what a causal
    model has read the whole sequence by).

    Returns:
        (B, D).
    """
    B, T, _ = hidden.shape
    if padding_mask is None:
        if how == "mean":
            return hidden.mean(1)
        return hidden[:, 0] if how == "first" else hidden[:, -1]
    if how == "mean":
        # masked_fill, not a product with the mask: NaN * 0 is NaN, and padding never counts
        real = padding_mask.unsqueeze(-1)  # (B, T, 1)
        summed = hidden.masked_fill(~real, 0.0).sum(1)  # (B, D)
        return summed / real.sum(1).clamp(min=1).to(hidden.dtype)
    if how == "first":
        index = padding_mask.to(torch.int8).argmax(1)  # first True
    else:
        index = T - 1 - padding_mask.flip(1).to(torch.int8).argmax(1)  # last True
    return hidden[torch.arange(B, device=hidden.device), index]  # (B, D)


def _check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")


class Head(nn.Module):
    """Base class: ``forward(hidden, padding_mask) -> outputs``, ``loss(hidden, targets,
    padding_mask, **extras) -> LossSum``, ``predict(outputs) -> probabilities/values``."""

    def forward(self, hidden: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def loss(self, hidden: Tensor, targets: Tensor, padding_mask: Tensor | None = None,
             **extras: Tensor) -> LossSum:
        raise NotImplementedError

    def predict(self, outputs: Tensor) -> Tensor:
        """Class probabilities (softmax over the last dimension); regression overrides."""
        return outputs.float().softmax(-1)

    def loss_from_outputs(self, outputs: Tensor, targets: Tensor,
                          padding_mask: Tensor | None = None) -> LossSum:
        """The loss of outputs this head's ``forward`` gave (or an average of several, as
        strand averaging makes), where ``loss`` starts from hidden states."""
        raise ConfigError(f"the {type(self).__name__} scores only from hidden states")


def _cross_entropy_sum(logits: Tensor, targets: Tensor, outputs: Tensor | None = None) -> LossSum:
    """Summed cross-entropy over targets that are not IGNORE, and their count."""
    total = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE, reduction="sum")
    return LossSum(total, (targets != IGNORE).sum(), logits if outputs is None else outputs)


def _tie(proj: nn.Linear, tie_to: nn.Embedding | None) -> None:
    if tie_to is None:
        return
    if tie_to.weight.shape != proj.weight.shape:
        raise ConfigError(f"cannot tie a ({proj.out_features} x {proj.in_features}) head to an "
                          f"embedding of shape {tuple(tie_to.weight.shape)}")
    proj.weight = tie_to.weight


@HEADS.register("lm")
class LMHead(Head):
    """Vocabulary logits at every position; loss = next-token cross-entropy.

    With ``tie_to`` the weight is the embedding matrix itself (Press & Wolf, 2017), which
    saves ``vocab x D`` parameters and usually helps small language models.
    """

    def __init__(self, d_model: int, vocab_size: int, *, tie_to: nn.Embedding | None = None):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size, bias=False)
        _tie(self.proj, tie_to)

    def forward(self, hidden: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return self.proj(hidden)  # (B, T, V)

    def loss(self, hidden, targets, padding_mask=None, **extras) -> LossSum:
        logits = self.proj(hidden)  # (B, T, V)
        return _cross_entropy_sum(logits.flatten(0, 1), targets.flatten(), logits)


OutputHead = LMHead  # the name this head had before heads had a registry


@HEADS.register("masked_lm")
class MaskedLMHead(Head):
    """BERT's prediction head: dense + GELU + LayerNorm, then vocabulary logits (tied to
    the embedding when given) plus a bias. The loss reads only masked positions
    (targets != IGNORE), so the vocabulary projection runs on about 15% of the tokens."""

    def __init__(self, d_model: int, vocab_size: int, *, tie_to: nn.Embedding | None = None,
                 eps: float = 1e-5):
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(),
                                       nn.LayerNorm(d_model, eps=eps))
        self.proj = nn.Linear(d_model, vocab_size, bias=False)
        _tie(self.proj, tie_to)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return self.proj(self.transform(hidden)) + self.bias  # (B, T, V)

    def loss(self, hidden, targets, padding_mask=None, **extras) -> LossSum:
        chosen = targets != IGNORE  # (B, T)
        logits = self.forward(hidden[chosen])  # (N, V)
        return _cross_entropy_sum(logits, targets[chosen])


class _WeightedClasses(Head):
    """Cross-entropy with optional per-class weights. The count is the summed weight of
    the counted targets, so a class-weighted mean stays exact across micro-batches."""

    def __init__(self, class_weights: Tensor | None):
        super().__init__()
        self.register_buffer("class_weights", class_weights, persistent=False)

    def _weighted(self, logits: Tensor, targets: Tensor, outputs: Tensor) -> LossSum:
        if self.class_weights is None:
            return _cross_entropy_sum(logits, targets, outputs)
        counted = targets != IGNORE
        nll = F.cross_entropy(logits.float(), targets.clamp(min=0), reduction="none")
        weight = self.class_weights.to(nll.dtype)[targets.clamp(min=0)] * counted
        return LossSum((nll * weight).sum(), weight.sum(), outputs)


@HEADS.register("classify")
class ClassifierHead(_WeightedClasses):
    """One label per sequence: pool the hidden states (``mean`` over real positions,
    ``first`` or ``last`` real position), then a linear map to class logits."""

    def __init__(self, d_model: int, n_classes: int, *, pooling: str = "mean",
                 class_weights: Tensor | None = None, dropout: float = 0.0):
        super().__init__(class_weights)
        _check_pooling(pooling)
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.Linear(d_model, n_classes)

    def forward(self, hidden: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return self.proj(self.dropout(pool(hidden, padding_mask, self.pooling)))  # (B, C)

    def loss(self, hidden, targets, padding_mask=None, **extras) -> LossSum:
        return self.loss_from_outputs(self.forward(hidden, padding_mask), targets)

    def loss_from_outputs(self, outputs, targets, padding_mask=None) -> LossSum:
        return self._weighted(outputs, targets, outputs)  # outputs: (B, C)


@HEADS.register("tag")
class TaggerHead(_WeightedClasses):
    """One label per position: a linear map of each hidden state to tag logits; padded
    positions (and any target set to IGNORE) are not counted."""

    def __init__(self, d_model: int, n_tags: int, *, class_weights: Tensor | None = None,
                 dropout: float = 0.0):
        super().__init__(class_weights)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.Linear(d_model, n_tags)

    def forward(self, hidden: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return self.proj(self.dropout(hidden))  # (B, T, C)

    def loss(self, hidden, targets, padding_mask=None, **extras) -> LossSum:
        if padding_mask is not None:
            targets = targets.masked_fill(~padding_mask, IGNORE)
            # zeroed, so that nothing stored at padding reaches the loss or the gradients
            hidden = hidden.masked_fill(~padding_mask.unsqueeze(-1), 0.0)
        return self.loss_from_outputs(self.forward(hidden), targets)

    def loss_from_outputs(self, outputs, targets, padding_mask=None) -> LossSum:
        if padding_mask is not None:
            targets = targets.masked_fill(~padding_mask, IGNORE)
        return self._weighted(outputs.flatten(0, 1), targets.flatten(), outputs)  # (B, T, C)


@HEADS.register("regress")
class RegressionHead(Head):
    """One or several numbers per sequence from pooled hidden states.

    The head learns standardised targets ``(y - mean) / std`` (statistics of the training
    targets, stored as buffers so they travel with the weights) and its outputs are in
    the targets' own units. ``loss``: ``mse`` or ``mae``, summed over sequences and targets.
    """

    LOSSES = ("mse", "mae")

    def __init__(self, d_model: int, n_targets: int, *, pooling: str = "mean", loss: str = "mse",
                 dropout: float = 0.0):
        super().__init__()
        _check_pooling(pooling)
        if loss not in self.LOSSES:
            raise ConfigError(f"regression loss must be one of {', '.join(self.LOSSES)}, got {loss!r}")
        self.pooling, self.loss_kind = pooling, loss
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.Linear(d_model, n_targets)
        self.register_buffer("target_mean", torch.zeros(n_targets))
        self.register_buffer("target_std", torch.ones(n_targets))

    def set_target_stats(self, mean: Tensor, std: Tensor) -> None:
        self.target_mean.copy_(mean)
        self.target_std.copy_(std.clamp(min=1e-8))

    def _standard(self, hidden: Tensor, padding_mask: Tensor | None) -> Tensor:
        return self.proj(self.dropout(pool(hidden, padding_mask, self.pooling)))  # (B, K)

    def forward(self, hidden: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return self._standard(hidden, padding_mask) * self.target_std + self.target_mean

    def loss(self, hidden, targets, padding_mask=None, **extras) -> LossSum:
        standard = self._standard(hidden, padding_mask).float()
        if targets.shape != standard.shape:
            raise ShapeError(f"regression targets have shape {tuple(targets.shape)}, the head "
                             f"predicts {tuple(standard.shape)}")
        error = standard - (targets.float() - self.target_mean) / self.target_std
        total = error.square().sum() if self.loss_kind == "mse" else error.abs().sum()
        outputs = standard.detach() * self.target_std + self.target_mean
        return LossSum(total, float(error.numel()), outputs)

    def loss_from_outputs(self, outputs, targets, padding_mask=None) -> LossSum:
        """Outputs in the targets' units (B, K), scored as ``loss`` scores them."""
        error = (outputs.float() - targets.float()) / self.target_std
        total = error.square().sum() if self.loss_kind == "mse" else error.abs().sum()
        return LossSum(total, float(error.numel()), outputs.detach())

    def predict(self, outputs: Tensor) -> Tensor:
        return outputs.float()


@HEADS.register("scored")
class ScoredHead(Head):
    """Outputs at chosen positions only (``scored``, (B, T) bool): class logits, or one
    value for regression. The projection runs on the N scored positions, not B x T."""

    def __init__(self, d_model: int, n_outputs: int, *, regression: bool = False,
                 tie_to: nn.Embedding | None = None):
        super().__init__()
        self.regression = regression
        self.proj = nn.Linear(d_model, n_outputs, bias=False)
        _tie(self.proj, tie_to)

    def forward(self, hidden: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return self.proj(hidden)

    def loss(self, hidden, targets, padding_mask=None, *, scored: Tensor, **extras) -> LossSum:
        out = self.proj(hidden[scored]).float()  # (N, C)
        wanted = targets[scored]  # (N,)
        if self.regression:
            error = out[:, 0] - wanted.float()
            return LossSum(error.square().sum(), float(error.numel()), out)
        return _cross_entropy_sum(out, wanted)

    def predict(self, outputs: Tensor) -> Tensor:
        return outputs.float() if self.regression else outputs.float().softmax(-1)
