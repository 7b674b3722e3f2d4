"""Learning-rate schedule: linear warmup then cosine decay to ``min_lr_ratio * lr``.

A pure function of the step, so a resumed run needs no scheduler object state.
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, lr: float, warmup_steps: int, total_steps: int,
                  min_lr_ratio: float = 0.1) -> float:
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    min_lr = lr * min_lr_ratio
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
