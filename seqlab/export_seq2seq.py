"""Exporting an encoder-decoder: two graphs around the decoder's state.

- ``start``: ``source`` (B, S) ids, or (B, P x S, F) frames for a recogniser whose
  encoder reads P frames per position, -> the logits of the first target token and the state
  after ``<bos>``: the source is encoded once, and each decoder layer's cross-attention
  keys and values over it (``memory.I.k``, ``memory.I.v``) travel in the state with the
  layers' own states;
- ``step``: ``ids`` (B, 1) plus a state -> logits plus the next state, as for a causal
  language model.

A speech synthesiser's decoder reads and makes frames: ``start`` feeds it a zero frame,
``step`` takes (B, 1, frames_per_step x n_mels) and gives those values and a stop logit;
its pre-net's dropout, on in seqlab's synthesis, is off in the graphs (they are
deterministic; a runtime may add its own noise).

A runtime decodes by calling ``start`` once per batch of sources, then ``step`` with
each chosen token (``ExportedModel.translate`` does greedily). Rows are unpadded: one
source length per batch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from seqlab.export_graphs import StateLayout, Step, export_graph
from seqlab.models.tts import SpeechSynthesizer


class Start(nn.Module):
    """``source`` -> the first step's logits and the decoder state after ``<bos>`` (a
    speech synthesiser's zero "go" frame)."""

    def __init__(self, model, layout: StateLayout, bos_id: int):
        super().__init__()
        self.model, self.layout, self.bos_id = model, layout, bos_id

    def forward(self, source: Tensor):
        state = self.model.start(source)
        out = self.model(_first(self.model, source.shape[0], self.bos_id, source.device), state)
        return (out.logits, *self.layout.flatten(out.state))


def _first(model, batch: int, bos_id: int, device=None) -> Tensor:
    if isinstance(model, SpeechSynthesizer):
        return torch.zeros(batch, 1, model.n_out, device=device)
    return torch.full((batch, 1), bos_id, dtype=torch.long, device=device)


def seq2seq_graphs(model, cfg, tokenizer, out_dir: Path, fmt: str, opset: int) -> dict:
    """Export ``start`` and ``step``; returns the manifest's ``graphs`` entry."""
    B, S, V = 2, 5, cfg.vocab_size
    encoder = cfg.encoder_config()
    source_vocab = encoder.vocab_size or V  # its own when the sources have a tokenizer
    frames = (encoder.input or "tokens") != "tokens"  # a recogniser: (B, patch * S, features)
    per = encoder.patch if frames else 1
    start = Start(model, None, tokenizer.bos_id)

    def sources_of(n: int) -> Tensor:
        if frames:
            return torch.randn(B, per * n, encoder.input_dim)
        return torch.randint(0, source_vocab, (B, n))

    speech_out = isinstance(model, SpeechSynthesizer)  # frames in and out of the decoder

    def targets_of(n: int) -> Tensor:
        return torch.randn(B, n, model.n_out) if speech_out else torch.randint(0, V, (B, n))

    def state_after(targets: int, sources: int):
        ids = torch.cat([_first(model, B, tokenizer.bos_id), targets_of(targets - 1)], 1)
        return model(ids, model.start(sources_of(sources))).state

    with torch.no_grad():
        # A step's example state holds two tokens (a length-1 axis would be traced as
        # fixed); the longer one has one more token and a longer source, so the axes
        # that grow with either are dynamic.
        first, longer = state_after(2, S), state_after(3, S + 2)
    layout = StateLayout(model, first, longer)
    start.layout = layout
    batch = torch.export.Dim("batch", min=1, max=4096)
    source = per * torch.export.Dim("source", min=2, max=max(encoder.context_length, 3))
    flat = [t.contiguous() for t in layout.flatten(first)]
    dims = {"batch": batch, "cache": torch.export.Dim.DYNAMIC}
    outputs = ["logits", *(f"next.{n}" for n in layout.names)]
    graphs = {
        "start": export_graph(start, (sources_of(S),), ({0: batch, 1: source},),
                              out_dir, "start", fmt, opset, ["source"], outputs, cfg),
        "step": export_graph(Step(model, layout), (targets_of(1), flat),
                             ({0: batch}, [{d: dims[n] for d, n in axes.items()}
                                           for axes in layout.axes]),
                             out_dir, "step", fmt, opset, ["ids", *layout.names], outputs, cfg),
        "state": [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                   "dynamic": {str(d): a for d, a in axes.items()}}
                  for n, t, axes in zip(layout.names, flat, layout.axes)],
    }
    return graphs


__all__ = ["Start", "seq2seq_graphs"]
