"""Objectives: each registers itself in TASKS."""

from seqlab.tasks import causal_lm, synthetic  # noqa: F401
from seqlab.tasks.base import TASKS, Task

__all__ = ["TASKS", "Task"]
