"""The optimizer: AdamW over parameter groups, each with its own learning rate.

Groups come from ``train.param_groups`` (name patterns with an ``lr``, ``lr_scale`` or
``weight_decay`` of their own); every group is split once more into matrices, which
decay, and biases, norms and parameters a module exempts, which do not. The schedule
multiplies each group's own base rate, so warmup and cosine decay apply to all alike.
"""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

from seqlab.errors import ConfigError


def no_decay_parameters(model: nn.Module) -> set[int]:
    """ids of parameters a module lists in its ``no_weight_decay`` attribute (names
    relative to that module), e.g. an SSM's A and dt, which decay must not pull to 0."""
    ids = set()
    for module in model.modules():
        for name in getattr(module, "no_weight_decay", ()):
            ids.add(id(module.get_parameter(name)))
    return ids


def matches(name: str, patterns: list[str]) -> bool:
    """Whether a parameter or tensor name matches one of the glob ``patterns``."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def check_patterns(patterns: list[str], names: list[str], key: str) -> None:
    """Refuse a pattern that matches no name (a typo would silently do nothing)."""
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise ConfigError(f"{key}: pattern {pattern!r} matches no parameter; names look "
                              f"like: {shown}")


def layer_depth(name: str, model: nn.Module) -> int:
    """How deep a parameter sits: 0 for the input side (embedding, positions), i + 1 for
    block i, and n_blocks + 1 for the final norm and the head."""
    blocks = len(getattr(getattr(model, "backbone", None), "blocks", []))
    parts = name.split(".")
    if parts[:2] == ["backbone", "blocks"] and len(parts) > 2 and parts[2].isdigit():
        return int(parts[2]) + 1
    if parts[0] == "backbone" and len(parts) > 1 and parts[1] in ("embed", "position", "embed_norm"):
        return 0
    return blocks + 1


def build_optimizer(model: nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW (fused when offered) over the trainable parameters of ``model``.

    Args:
        cfg: the run's ``train`` section (``lr``, ``weight_decay``, ``beta1/2``,
            ``param_groups``).

    Each optimizer group carries ``base_lr``: the rate the schedule scales.
    ``cfg.layer_decay`` below 1 gives each layer ``layer_decay ** (distance from the
    head)`` of its rate (layer-wise rate decay for fine-tuning: the layers nearest the
    input, which hold the most general features, move least).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    exempt = no_decay_parameters(model)
    specs = list(getattr(cfg, "param_groups", []) or [])
    check_patterns([p for s in specs for p in s.params], [n for n, _ in named],
                   "train.param_groups")
    decay_rate = getattr(cfg, "layer_decay", 1.0)
    top = layer_depth("head", model)
    buckets: dict[tuple[int, int], list[nn.Parameter]] = {}
    for name, param in named:
        index = next((i for i, s in enumerate(specs) if matches(name, s.params)), len(specs))
        depth = layer_depth(name, model) if decay_rate != 1.0 else top
        buckets.setdefault((index, depth), []).append(param)
    groups = []
    for (index, depth), params in sorted(buckets.items()):
        spec = specs[index] if index < len(specs) else None
        lr = cfg.lr
        if spec is not None and spec.lr is not None:
            lr = spec.lr
        elif spec is not None and spec.lr_scale is not None:
            lr = cfg.lr * spec.lr_scale
        lr *= decay_rate ** (top - depth)
        decay = cfg.weight_decay if spec is None or spec.weight_decay is None else spec.weight_decay
        decayed = [p for p in params if p.dim() >= 2 and id(p) not in exempt]
        plain = [p for p in params if p.dim() < 2 or id(p) in exempt]
        groups += [{"params": ps, "weight_decay": wd, "base_lr": lr, "lr": lr}
                   for ps, wd in ((decayed, decay), (plain, 0.0)) if ps]
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, **kwargs)
