"""Predictions of labelled objectives, in Python and to CSV or JSON Lines files.

``LabelPipeline.predict(inputs)`` takes texts (token runs) or arrays (feature runs) and
returns one dict per input: ``{"label", "probabilities"}`` (classify), ``{"tags",
"confidence"}`` (tag) or ``{"value"}`` / ``{"values"}`` (regress). ``predict_file`` reads a
data file the way training read its data, without needing labels, and writes one row
per example, in the file's order, named by where it came from.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable

import torch

from seqlab.data.batch import Batch
from seqlab.errors import ConfigError
from seqlab.io import atomic_write
from seqlab.tasks.pipeline import Pipeline
from seqlab.tasks.strand import StrandAveraged

OUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


class LabelPipeline(Pipeline):
    """A trained classify, tag or regress run: ``.predict``, ``.predict_file``, ``.evaluate``."""

    @torch.no_grad()
    def _outputs(self, batches: Iterable[Batch], *, reverse_complement: bool = False) -> dict[int, dict]:
        rows: dict[int, dict] = {}
        kind = self.config.task
        names = self.labels.names
        model = self._strand_model() if reverse_complement else self.model
        for batch in batches:
            batch = batch.to(self.device)
            out = model(batch.inputs, padding_mask=batch.padding_mask).logits
            pred = self.model.head.predict(out).cpu()
            mask = batch.padding_mask.cpu() if batch.padding_mask is not None else None
            for row, index in enumerate(batch.index.tolist()):
                if kind == "classify":
                    probs = pred[row]
                    rows[index] = {"label": _plain(names[int(probs.argmax())]),
                                   "probabilities": {str(n): round(float(p), 6)
                                                     for n, p in zip(names, probs)}}
                elif kind == "tag":
                    n = int(mask[row].sum()) if mask is not None else pred.shape[1]
                    probs = pred[row, :n]
                    rows[index] = {"tags": [_plain(names[i]) for i in probs.argmax(-1).tolist()],
                                   "confidence": [round(float(p), 4) for p in probs.max(-1).values]}
                else:
                    values = [float(v) for v in pred[row]]
                    rows[index] = ({"value": values[0]} if len(values) == 1 else
                                   {"values": dict(zip(map(str, names), values))})
        return rows

    def predict(self, inputs, *, batch_size: int = 32,
                reverse_complement: bool = False) -> list[dict] | dict:
        """Predictions for one input or a list of them: texts (or lists of token ids) for
        token runs, arrays of shape (time, features) for feature runs.

        ``reverse_complement`` (runs with a dna or rna tokenizer): each sequence is read on
        both strands and the outputs averaged (per position, in the given strand's order,
        for tags), so either strand of a molecule gets the same prediction."""
        single = isinstance(inputs, str) or (hasattr(inputs, "ndim") and inputs.ndim <= 2)
        items = [inputs] if single else list(inputs)
        if not items:
            return []
        self._resize(batch_size=batch_size)
        rows = self._outputs(self.objective.source.from_inputs(items)(),
                             reverse_complement=reverse_complement)
        result = [rows[i] for i in range(len(items))]
        return result[0] if single else result

    def evaluate(self, data=None, *, max_batches: int | None = None,
                 batch_size: int | None = None, reverse_complement: bool = False) -> dict[str, float]:
        """The objective's metrics on ``data`` (default: the run's validation split);
        ``reverse_complement`` scores the strand-averaged outputs (see ``predict``)."""
        model = self._strand_model() if reverse_complement else self.model
        return self._evaluate(model, data, max_batches=max_batches, batch_size=batch_size)

    def _strand_model(self) -> StrandAveraged:
        complement = getattr(self.tokenizer, "complement_ids", None)
        if complement is None:
            raise ConfigError(f"reverse-complement averaging needs a run with a dna or rna "
                              f"tokenizer (one token per base), this run's is "
                              f"{getattr(self.tokenizer, 'kind', None)!r}")
        keep_first = int(self.objective.source.ctx.add_bos and self.tokenizer.bos_id is not None)
        return StrandAveraged(self.model, complement(), keep_first=keep_first,
                              per_position=self.config.task == "tag").to(self.device).eval()

    def predict_file(self, data, out: str | Path, *, reverse_complement: bool = False) -> int:
        """Predict every example in ``data`` and write ``out`` (.csv, .tsv or .jsonl);
        returns how many rows were written. ``reverse_complement``: as for ``predict``."""
        out = Path(out)
        fmt = OUT_FORMATS.get(out.suffix.lower())
        if fmt is None:
            raise ConfigError(f"cannot tell the output format of {out}: name it .csv, .tsv or "
                              ".jsonl")
        batches = self.objective.source.read(data, labelled=False)
        rows = self._outputs(batches(), reverse_complement=reverse_complement)
        names = self.objective.source.names(data)
        ordered = [{"id": names[i] if i < len(names) else str(i), **rows[i]} for i in sorted(rows)]
        atomic_write(out, _jsonl(ordered) if fmt == "jsonl" else _delimited(ordered, fmt))
        return len(ordered)


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _flat(row: dict) -> dict:
    """One CSV row: probabilities and several values become columns, tags one string
    (letters joined when every tag is one character, else separated by spaces)."""
    flat = {}
    for key, value in row.items():
        if isinstance(value, dict):
            prefix = "p_" if key == "probabilities" else ""
            flat.update({f"{prefix}{k}": v for k, v in value.items()})
        elif key == "tags":
            tags = [str(t) for t in value]
            flat[key] = "".join(tags) if all(len(t) == 1 for t in tags) else " ".join(tags)
        elif key == "confidence":
            flat["mean_confidence"] = round(sum(value) / max(len(value), 1), 4)
        else:
            flat[key] = value
    return flat


def _delimited(rows: list[dict], fmt: str) -> str:
    flat = [_flat(r) for r in rows]
    columns = list(dict.fromkeys(k for r in flat for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, delimiter="\t" if fmt == "tsv" else ",",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buf.getvalue()
