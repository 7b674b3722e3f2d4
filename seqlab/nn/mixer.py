"""The mixer protocol shared by every sequence layer (DESIGN.md §1).

A mixer maps ``(B, T, D) -> (B, T, D)``. Called with ``state=None`` it is a plain
parallel pass over the whole sequence; called with a state it continues from that
state and returns the new one, which serves prefill, decoding (T = 1) and chunked
streaming alike. Causal mixers obey: one pass over a sequence equals any split of it
into chunks threaded through the state. A state passed in is never changed (the mixer
returns a new one), so a state may be continued more than once.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx.experimental.symbolic_shapes import statically_known_true

from seqlab.errors import ShapeError, StateError

logger = logging.getLogger("seqlab")

State = Any
_warned: set[str] = set()


class BatchState:
    """Base of the mixers' streaming states (dataclasses whose tensor fields all have
    the batch first).

    A state passed to a mixer is never changed: ``forward`` returns a new state and
    leaves the given one and its tensors as they were, so one state can be continued
    more than once (beam forks, a shared prompt). ``reorder`` follows the same rule.
    """

    def tensors(self) -> dict[str, Tensor]:
        """The state's tensors by field name (what an exported step function takes and
        returns); fields that are None or not tensors are left out."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), Tensor)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> BatchState:
        """The state holding ``tensors`` (as ``tensors()`` gave them); other fields take
        their defaults, or None."""
        return cls(**{f.name: tensors.get(f.name) for f in dataclasses.fields(cls) if f.init
                      and (f.name in tensors or f.default is dataclasses.MISSING)})

    def reorder(self, index: Tensor) -> BatchState:
        """A new state holding the given batch rows (beam search, dropping finished
        rows) of every tensor field, ``None`` and non-tensor fields as they are; this
        state is left unchanged."""
        rows = {f.name: getattr(self, f.name).index_select(0, index)
                for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), Tensor)}
        return dataclasses.replace(self, **rows)


def tracing() -> bool:
    """Whether torch.export or torch.compile is tracing this code. Checks that read tensor
    values (ids in range, a mask that is all real) are skipped then: a traced graph cannot
    branch on values, and an exported model's inputs are checked by its caller."""
    return torch.compiler.is_exporting() or torch.compiler.is_compiling()


def one_step(x: Tensor) -> bool:
    """Whether ``x`` (B, T, D) is one time step, as far as is known without a guard: a
    traced graph for any length takes the general path, one traced for T = 1 the
    single-step one, and eager code checks the size."""
    return statically_known_true(x.shape[1] == 1)


def warn_once(key: str, message: str) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process.

    Used for the declared fast path: a layer that falls back to a slower
    implementation says so once, with the reason, instead of silently running slow.
    """
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


class Mixer(nn.Module):
    """Base class of all mixers.

    Subclasses set ``causal`` and implement ``init_state`` and ``forward``.
    ``max_positions`` is the longest sequence the mixer accepts (None: unbounded).
    ``own_init``: the mixer initialises its own weights and the model builder's generic
    init (``seqlab.models.build.init_weights``) leaves them alone, except for the
    depth scaling of ``out_proj``.
    """

    causal: bool = True
    max_positions: int | None = None
    own_init: bool = False

    def __init__(self, d_model: int):
        super().__init__()
        if d_model <= 0:
            raise ValueError(f"d_model must be positive, got {d_model}")
        self.d_model = d_model

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> State:
        raise NotImplementedError

    def forward(self, x: Tensor, state: State = None, *,
                padding_mask: Tensor | None = None) -> tuple[Tensor, State]:
        raise NotImplementedError

    def check_input(self, x: Tensor, state: State, padding_mask: Tensor | None) -> Tensor | None:
        """Raise seqlab errors for inputs the mixer cannot take (shape, mask, state).

        Returns the padding mask to use: None when every token is real, so mixers take
        their unpadded fast path whenever they can.
        """
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ShapeError(
                f"{type(self).__name__} expects input of shape (batch, time, {self.d_model}), "
                f"got {tuple(x.shape)}"
            )
        if padding_mask is not None:
            if padding_mask.shape != x.shape[:2]:
                raise ShapeError(
                    f"padding_mask must have shape (batch, time) = {tuple(x.shape[:2])}, "
                    f"got {tuple(padding_mask.shape)}"
                )
            if padding_mask.dtype != torch.bool:
                raise ShapeError(f"padding_mask must be a bool tensor (True = real token), "
                                 f"got dtype {padding_mask.dtype}")
        if state is not None and not self.causal:
            raise StateError(
                f"{type(self).__name__} is bidirectional (causal=False) and cannot carry a "
                "streaming state; run it on whole sequences with state=None"
            )
        if padding_mask is not None and not tracing() and bool(padding_mask.all()):
            return None
        return padding_mask


def real_tokens_first(padding_mask: Tensor) -> Tensor:
    """(B, T) gather indices that move each row's real tokens to the front, in order
    (a stable sort), so a padded row can run as if it were right-padded."""
    return torch.sort((~padding_mask).to(torch.int8), dim=1, stable=True).indices


def masked_fill_padding(x: Tensor, padding_mask: Tensor | None) -> Tensor:
    """Zero the padded positions of ``x`` (B, T, D) so nothing stored there can leak."""
    if padding_mask is None:
        return x
    # One pass (masked_fill copies, then fills), and NaN or inf in padding is replaced too.
    return torch.where(padding_mask.unsqueeze(-1), x, x.new_zeros(()))
