"""Feed-forward layers, norms and the pre-norm residual Block."""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.nn.mixer import Mixer, State
from seqlab.registry import Registry

FFNS: Registry = Registry("ffn")
NORMS: Registry = Registry("norm")


@FFNS.register("mlp")
class MLP(nn.Module):
    """Linear -> GELU -> Linear (the GPT-2 / BERT feed-forward), d_ff defaults to 4 D.
    ``activation``: ``gelu`` (exact) or ``gelu_tanh`` (the tanh approximation GPT-2 used)."""

    ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}

    def __init__(self, d_model: int, d_ff: int | None = None, *, dropout: float = 0.0,
                 bias: bool = True, activation: str = "gelu"):
        super().__init__()
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"MLP activation must be one of {', '.join(self.ACTIVATIONS)}, "
                             f"got {activation!r}")
        self.approximate = self.ACTIVATIONS[activation]
        d_ff = d_ff or 4 * d_model
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.dropout(F.gelu(self.up(x), approximate=self.approximate)))


@FFNS.register("swiglu")
class SwiGLU(nn.Module):
    """Gated feed-forward silu(x W) * (x V) -> W2 (Shazeer, 2020, arXiv:2002.05202).

    d_ff defaults to 8/3 D rounded up to a multiple of 64, which keeps the parameter
    count equal to a 4 D MLP.
    """

    def __init__(self, d_model: int, d_ff: int | None = None, *, dropout: float = 0.0,
                 bias: bool = False):
        super().__init__()
        d_ff = d_ff or 64 * ((8 * d_model // 3 + 63) // 64)
        self.gate_up = nn.Linear(d_model, 2 * d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(self.dropout(F.silu(gate) * up))


# Each takes (d_model, eps); eps None is torch's default (LayerNorm 1e-5, RMSNorm the
# dtype's machine epsilon).
NORMS.add("layernorm", lambda d_model, eps=None: nn.LayerNorm(d_model, eps=1e-5 if eps is None else eps))
NORMS.add("rmsnorm", lambda d_model, eps=None: nn.RMSNorm(d_model, eps=eps))
NORMS.add("none", lambda d_model, eps=None: nn.Identity())


class Block(nn.Module):
    """``x + mixer(norm(x))``, then optionally ``x + ffn(norm(x))``.

    With ``residual=False`` and norm ``none`` the block is the bare mixer, which is how
    a textbook stacked LSTM is expressed exactly.

    Args:
        mixer: the time-mixing layer.
        ffn: the channel-mixing layer, or None.
        norm: a factory ``d_model -> module`` for the pre-norms.
        residual: add the input back around the mixer and the ffn.
        dropout: dropout on each branch output.
        post_norm: normalise after each residual sum instead, ``norm(x + mixer(x))``
            (the original Transformer's and BERT's order).
    """

    def __init__(self, mixer: Mixer, *, ffn: nn.Module | None = None,
                 norm: Callable[[int], nn.Module] = nn.LayerNorm, residual: bool = True,
                 dropout: float = 0.0, post_norm: bool = False):
        super().__init__()
        if post_norm and not residual:
            raise ValueError("a post-norm block normalises its residual sum; it needs residual=True")
        self.post_norm = post_norm
        d = mixer.d_model
        self.mixer_norm = norm(d)
        self.mixer = mixer
        self.ffn_norm = norm(d) if ffn is not None else None
        self.ffn = ffn
        self.residual = residual
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, state: State = None, *,
                padding_mask: Tensor | None = None) -> tuple[Tensor, State]:
        if self.post_norm:  # BERT's order: norm(x + f(x))
            h, state = self.mixer(x, state, padding_mask=padding_mask)
            x = self.mixer_norm(x + self.dropout(h))
            if self.ffn is not None:
                x = self.ffn_norm(x + self.dropout(self.ffn(x)))
            return x, state
        h, state = self.mixer(self.mixer_norm(x), state, padding_mask=padding_mask)
        x = x + self.dropout(h) if self.residual else self.dropout(h)
        if self.ffn is not None:
            h = self.dropout(self.ffn(self.ffn_norm(x)))
            x = x + h if self.residual else h
        return x, state
