"""Objectives: each registers itself in OBJECTIVES (the config's ``task``)."""

from seqlab.tasks import (anomaly, causal_lm, forecast, labelled, masked_lm,  # noqa: F401
                          ctc, seq2seq, series_pretrain, synthetic, tts)
from seqlab.tasks.base import OBJECTIVES, TASKS, Objective, ObjectiveEntry, register_objective

__all__ = ["OBJECTIVES", "Objective", "ObjectiveEntry", "TASKS", "register_objective"]
