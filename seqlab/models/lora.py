"""LoRA: low-rank adapters beside a model's frozen projections (Hu et al., 2021,
arXiv:2106.09685).

A targeted ``nn.Linear`` becomes a :class:`LoRALinear` that keeps the very same weight
and bias (so their names, and loading a base run into them, do not change) and adds
``lora_A`` (rank x in) and ``lora_B`` (out x rank, zero at the start, so the adapted
model starts as the base): ``y = x W^T + b + scale * (dropout(x) A^T) B^T`` with
``scale = alpha / rank``. ``merge_lora`` folds the adapters into plain Linears with the
same outputs.

Training runs that formula through :class:`_LoRAMatmul` when nothing stands between x
and the adapter (no active dropout, no autocast): the same products, with the low-rank
term folded into the weight for large inputs (one GEMM forward, one for x's gradient) or
accumulated straight into the base output by one ``addmm_`` for small ones. Written as separate ops, autograd makes three
(N, out) temporaries forward (the update, its scaled copy, the sum), one more backward
(the scaled gradient) and sums x's two gradients; at d_model 256 on CPU those memory
passes took about as long as the layer's own matmuls (issue 10, ``benchmarks/bench_lora.py``).
:func:`lora_reference` is the plain formula; it also serves dropout and autocast.
"""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.errors import ConfigError
from seqlab.io import file_sha256

# Attention q/kv/out, the feed-forward layers, and mamba's input/output projections.
DEFAULT_TARGETS = ["*.mixer.q_proj", "*.mixer.kv_proj", "*.mixer.out_proj", "*.ffn.up",
                   "*.ffn.down", "*.ffn.gate_up", "*.mixer.in_proj"]


class LoRALinear(nn.Linear):
    """A Linear with a low-rank adapter (see the module docstring)."""

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float, dropout: float = 0.0):
        nn.Module.__init__(self)  # the base's weight and bias are taken, not reallocated
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.rank, self.scale = rank, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        dropout = self.training and isinstance(self.lora_dropout, nn.Dropout)
        if dropout or x.dtype != self.weight.dtype or torch.is_autocast_enabled(x.device.type):
            return lora_reference(x, self.weight, self.bias, self.lora_A, self.lora_B, self.scale,
                                  dropout=self.lora_dropout)
        return _LoRAMatmul.apply(x, self.weight, self.bias, self.lora_A, self.lora_B, self.scale)

    def merged(self) -> nn.Linear:
        """A plain Linear with the adapter folded into its weight."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.weight + self.scale * (self.lora_B @ self.lora_A))
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out


def lora_reference(x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor,
                   lora_B: Tensor, scale: float, *, dropout: nn.Module | None = None) -> Tensor:
    """``x W^T + b + scale * (dropout(x) A^T) B^T`` as plain autograd ops: the reference
    for :class:`_LoRAMatmul`, and the path for adapter dropout and autocast."""
    update = F.linear(F.linear(x if dropout is None else dropout(x), lora_A), lora_B)
    return F.linear(x, weight, bias) + scale * update


class _LoRAMatmul(torch.autograd.Function):
    """:func:`lora_reference` without dropout, with hand-written backward.

    With u = x A^T and du = scale * g B (N x rank), g the output gradient, the products
    are ``y = x W^T + b + scale * u B^T``, ``dx = g W + du A``, ``dA = du^T x`` and
    ``dB = scale * g^T u``; W and b get ``g^T x`` and ``sum(g)`` only when they require
    grad (a frozen base gets none). Two ways to form y and dx, the same numbers:

    - many rows (N >= in): through the merged weight ``W' = W + scale * B A`` (out x in,
      rebuilt in backward rather than kept): ``y = x W'^T + b`` and ``dx = g W'``, one
      GEMM each. The low-rank term then costs a pass over W' instead of one over y and
      one over dx, which at training sizes (N in the thousands) were about 4% of a step;
    - few rows (decoding a token at a time): ``y = x W^T + b``, then ``y += scale * u B^T``
      in place by one ``addmm_``, and dx likewise, as merging would cost more than it saves.

    Shapes:
        x: (..., in) -> y: (..., out); inside, N = the product of the leading dims.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor,
                lora_B: Tensor, scale: float) -> Tensor:
        x2d = x.reshape(-1, x.shape[-1])  # (N, in)
        u = x2d @ lora_A.t()  # (N, rank)
        merge = x2d.shape[0] >= x2d.shape[1]
        w = torch.addmm(weight, lora_B, lora_A, alpha=scale) if merge else weight  # (out, in)
        y = x2d @ w.t() if bias is None else torch.addmm(bias, x2d, w.t())  # (N, out)
        if not merge:
            y.addmm_(u, lora_B.t(), alpha=scale)
        ctx.save_for_backward(x2d, u, weight, lora_A, lora_B)
        ctx.scale, ctx.x_shape, ctx.merge = scale, x.shape, merge
        return y.view(*x.shape[:-1], weight.shape[0])  # (..., out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x2d, u, weight, lora_A, lora_B = ctx.saved_tensors
        need_x, need_w, need_b, need_A, need_B, _ = ctx.needs_input_grad
        g = grad.reshape(-1, grad.shape[-1])  # (N, out)
        dx = dw = db = dA = dB = None
        if need_x and ctx.merge:
            dx = (g @ torch.addmm(weight, lora_B, lora_A, alpha=ctx.scale)).view(ctx.x_shape)
        if need_A or (need_x and not ctx.merge):
            du = (g @ lora_B).mul_(ctx.scale)  # (N, rank)
            if need_x and not ctx.merge:
                dx = (g @ weight).addmm_(du, lora_A).view(ctx.x_shape)  # (..., in)
            if need_A:
                dA = du.t() @ x2d  # (rank, in)
        if need_B:  # as (u^T g)^T: MKL runs g^T u (a transposed N x out operand) ~7x slower
            dB = (u.t() @ g).mul_(ctx.scale).t()  # (out, rank)
        if need_w:
            dw = g.t() @ x2d  # (out, in)
        if need_b:
            db = g.sum(0)
        return dx, dw, db, dA, dB, None


def apply_lora(model: nn.Module, *, rank: int, alpha: float, dropout: float,
               targets: list[str], train: list[str]) -> list[str]:
    """Put adapters on the Linear modules whose names match ``targets`` (glob patterns)
    and leave trainable only the adapters and the parameters matching ``train`` (the new
    head). Returns the adapted module names.

    Raises:
        ConfigError: no Linear module matches the targets.
    """
    def matches(name: str, patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    adapted = [name for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and not isinstance(module, LoRALinear)
               and matches(name, targets)]
    if not adapted:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ConfigError(f"lora.targets {targets} match no Linear module of this model; its "
                          f"Linear modules: {', '.join(linears[:8]) or 'none'}")
    for name in adapted:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), rank=rank, alpha=alpha,
                                          dropout=dropout))
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_" in name or matches(name, train))
    return adapted


def merge_lora(model: nn.Module) -> int:
    """Replace every LoRALinear by its merged Linear; returns how many were merged."""
    adapted = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in adapted:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, getattr(parent, child).merged())
    return len(adapted)


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


def base_weights_digest(run_dir) -> str:
    """The sha256 of a run's weights file: what a LoRA run records of its base."""
    return file_sha256(Path(run_dir) / "model.safetensors")
