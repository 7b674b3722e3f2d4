"""Pipelines: a trained run ready to use (what ``seqlab.load`` returns).

Every pipeline has ``.model``, ``.config``, ``.tokenizer`` (token inputs), ``.labels``
(labelled objectives) and ``.evaluate(data=None)``; objectives add what they do:
``.generate`` (causal LM), ``.fill_mask`` (masked LM), ``.predict`` (classify, tag,
regress).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from seqlab.errors import ConfigError


class Pipeline:
    """The common part: a model in eval mode with its objective's data handling."""

    def __init__(self, objective, model, run_dir: Path | None = None):
        self.objective = objective
        self.model = model.eval()
        self.run_dir = run_dir

    @property
    def config(self):
        return self.objective.config

    @property
    def tokenizer(self):
        return self.objective.tokenizer

    @property
    def labels(self):
        return self.objective.source.labels

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _resize(self, *, batch_size: int | None = None, max_batches: int | None = None) -> None:
        """Batch size (when given) and evaluation cap (None: everything) for what follows."""
        source = self.objective.source
        changes = {"eval_batches": max_batches}
        if batch_size is not None:
            changes["batch_size"] = batch_size
        source.ctx = dataclasses.replace(source.ctx, **changes)

    def evaluate(self, data=None, *, max_batches: int | None = None,
                 batch_size: int | None = None) -> dict[str, float]:
        """The objective's metrics on ``data`` (a file, folder, glob or list of them, read
        like the training data), or on the run's own validation split; all of it unless
        ``max_batches`` caps it."""
        return self._evaluate(self.model, data, max_batches=max_batches, batch_size=batch_size)

    def _evaluate(self, model, data, *, max_batches: int | None,
                  batch_size: int | None) -> dict[str, float]:
        """``evaluate`` through ``model`` (the run's model, or a wrapper of it)."""
        self._resize(batch_size=batch_size, max_batches=max_batches)
        source = self.objective.source
        if data is None:
            if getattr(self.config.data, "path", None) is None:
                raise ConfigError("this run has no data.path; pass data to evaluate on")
            source.load(self.tokenizer, source.fitted())
            batches = source.eval_sets()["val"]
        else:
            batches = source.read(data, max_batches=max_batches)
        return self.objective.evaluate_batches(model, batches(), name="eval")

    def predict(self, *args, **kwargs):
        raise ConfigError(f"a {self.config.task!r} run has no prediction; predict works on "
                          "classify, tag and regress runs"
                          + {"causal_lm": " (use generate)",
                             "masked_lm": " (use fill_mask)",
                             "seq2seq": " (use translate, or transcribe for a recogniser)",
                             "ctc": " (use transcribe)", "tts": " (use speak)"}.get(self.config.task, ""))

    def predict_file(self, data, out, **options) -> int:
        """Predictions for every example in ``data`` written to ``out`` (CSV or JSONL)."""
        return self.predict(data, out, **options)
