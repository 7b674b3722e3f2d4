"""LoRA: low-rank adapters beside a model's frozen projections (Hu et al., 2021,
arXiv:2106.09685).

A targeted ``nn.Linear`` becomes a :class:`LoRALinear` that keeps the very same weight
and bias (so their names, and loading a base run into them, do not change) and adds
``lora_A`` (rank x in) and ``lora_B`` (out x rank, zero at the start, so the adapted
model starts as the base): ``y = x W^T + b + scale * (dropout(x) A^T) B^T`` with
``scale = alpha / rank``. ``merge_lora`` folds the adapters into plain Linears with the
same outputs.
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
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return F.linear(x, self.weight, self.bias) + self.scale * update

    def merged(self) -> nn.Linear:
        """A plain Linear with the adapter folded into its weight."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.weight + self.scale * (self.lora_B @ self.lora_A))
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out


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
