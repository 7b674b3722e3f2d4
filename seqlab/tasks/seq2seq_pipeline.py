"""A trained encoder-decoder ready to use: ``.translate`` (what ``seqlab.load`` returns
for seq2seq runs), ``.evaluate`` on pairs files, and ``translate_file``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seqlab.data.batch import Batch, pad
from seqlab.errors import DataError
from seqlab.infer.generate import SamplingConfig
from seqlab.io import atomic_write
from seqlab.tasks.pipeline import Pipeline


@dataclass(frozen=True)
class Translation:
    """One output: its text, the sum of its tokens' log-probabilities, and the score
    beam search ranked it by (that sum over length ** length_penalty)."""

    text: str
    logprob: float
    score: float


class Seq2SeqPipeline(Pipeline):
    """``translate(texts)``: the outputs of each source text, best first."""

    def translate(self, texts: str | list[str], *, beam: int | None = None, n_best: int = 1,
                  length_penalty: float | None = None, max_length: int | None = None,
                  temperature: float | None = None, top_k: int | None = None,
                  top_p: float | None = None, seed: int | None = None,
                  batch_size: int = 32) -> list[list[Translation]]:
        """Decode each text: greedy by default, beam search with ``beam`` > 1 (the run's
        ``task_options.beam`` when None), or sampling when ``temperature`` is given.
        Returns ``n_best`` Translations per text (one when sampling).

        Raises:
            DataError: an empty text, or one longer than the encoder reads (naming it).
        """
        if isinstance(texts, str):
            texts = [texts]
        source = self.objective.source
        rows = [source.encode_source(t, f"input {i} ({t[:40]!r})") for i, t in enumerate(texts)]
        sampling = None
        if temperature is not None:
            sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
        out: list[list[Translation]] = [[] for _ in texts]
        order = np.argsort([len(r) for r in rows], kind="stable")  # little padding
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            ids, mask = pad([rows[i] for i in index], value=self.tokenizer.pad_id, dtype=torch.long)
            batch = Batch(ids.to(self.device), None, None if mask is None else mask.to(self.device))
            # each text samples from its own seed, so its output does not depend on the others
            seeds = None if seed is None else [seed + int(i) for i in index]
            found = self.objective.decode_batch(
                self.model, batch, beam=beam or (1 if sampling else None), n_best=n_best,
                length_penalty=length_penalty, max_length=max_length, sampling=sampling, seed=seeds)
            for i, hyps in zip(index, found):
                out[i] = [Translation(self.objective.text(h.tokens), h.logprob, h.score) for h in hyps]
        return out

    def translate_file(self, path: str | Path, out: str | Path, **options) -> int:
        """Translate each line of ``path`` (plain text, one source per line) into ``out``:
        JSON Lines of ``{"source", "outputs": [{"text", "logprob", "score"}]}`` when the
        name ends in ``.jsonl``, else the best output per line. Returns the count."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read {path}: {e}") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                raise DataError(f"{path}:{n}: the source line is empty")
        results = self.translate(lines, **options)
        if str(out).endswith(".jsonl"):
            body = "".join(json.dumps({"source": s, "outputs": [t.__dict__ for t in r]},
                                      ensure_ascii=False) + "\n" for s, r in zip(lines, results))
        else:
            body = "".join(r[0].text + "\n" for r in results)
        atomic_write(Path(out), body.encode())
        return len(lines)


__all__ = ["Seq2SeqPipeline", "Translation"]
