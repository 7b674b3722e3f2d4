"""``seqlab export``: a trained run as graphs other runtimes execute, with the streaming
state as explicit inputs and outputs.

Two graphs per causal run (one, ``forward``, for a bidirectional one, and for a forecast
run, whose head reads a whole window: ``inputs`` (B, context + horizon, F) -> the
horizon's forecast parameters (B, horizon, targets, params)):

- ``prefill``: ``ids`` (B, T) -> ``logits`` and the state after them (every layer's
  state tensors, then ``seen``; outputs are named ``next.<name>``);
- ``step``: ``ids`` (B, 1) plus a state -> ``logits`` plus the next state: one decoding
  step. A runtime decodes with any causal mixer by feeding the outputs back (attention:
  its key/value cache, recurrent mixers: h[, c], SSMs: their scan and conv states).

Where a mixer's kernel cannot be traced for any length (torch unrolls recurrent kernels
over time), there is no ``prefill`` (``null`` in the manifest): the state then starts at
zeros (``state`` in the manifest gives the shapes) and the prompt goes through ``step``
one token at a time, which gives the same logits.

Feature inputs with ``model.patch`` P (patches, or a convolutional front end) read P
steps per position: ``step`` takes (B, P, F), and ``prefill`` and ``forward`` a multiple
of P steps (``steps_per_position`` in the manifest); a front end's pending input steps
travel in the state as ``front.I``.

Formats: ``onnx`` (``*.onnx``, through ``torch.onnx.export``; run with ONNX Runtime) and
``torch-export`` (``*.pt2``, ``torch.export.save``; ``torch.export.load`` runs it
without seqlab). ``export.json`` lists every input and output with its shape and
dtype, which axes are dynamic, and the tokenizer's special ids; ``tokenizer.json``
comes along. Batches are unpadded (rows of one length). A mixer whose state cannot be
expressed as plain tensors, or whose code cannot be traced, is refused with its name
and the reason.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from torch import Tensor, nn

from seqlab.errors import ConfigError
from seqlab.export_graphs import FORMATS, MANIFEST, StateLayout, Step, export_graph
from seqlab.export_seq2seq import seq2seq_graphs
from seqlab.io import atomic_write
from seqlab.models.lora import merge_lora
from seqlab.models.seq2seq import Seq2SeqModel
from seqlab.models.tts import SpeechSynthesizer
from seqlab.rundir import TARGET_TOKENIZER_FILE, TOKENIZER_FILE, check_run_dir

logger = logging.getLogger("seqlab")


class Prefill(nn.Module):
    """``ids`` -> logits and the state after them."""

    def __init__(self, model, layout: StateLayout):
        super().__init__()
        self.model, self.layout = model, layout

    def forward(self, ids: Tensor):
        state = self.model.init_state(ids.shape[0], ids.device)
        out = self.model(ids, state)
        return (out.logits, *self.layout.flatten(out.state))


class Forward(nn.Module):
    """``inputs`` -> the head's outputs (bidirectional models have no state)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor):
        return self.model(inputs).logits


def export_run(run_dir: str | Path, out_dir: str | Path, *, fmt: str = "onnx",
               opset: int = 18) -> dict:
    """Export ``run_dir`` to ``out_dir`` in ``fmt``; returns the manifest.

    Raises:
        ConfigError: an unknown format, or a model that cannot be exported (the mixer
            and the reason named).
    """
    import seqlab

    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    run_dir, out_dir = check_run_dir(run_dir), Path(out_dir)
    pipeline = seqlab.load(run_dir)
    model = pipeline.model.eval()
    merge_lora(model)  # a LoRA run exports merged: plain weights, the same outputs
    cfg = pipeline.config.model
    kind = "ids" if cfg.input == "tokens" else "features"
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(model, SpeechSynthesizer):
        model.decoder.embed.always = False  # graphs are deterministic: no pre-net dropout
    if isinstance(model, Seq2SeqModel):
        tokenizer = getattr(pipeline.objective, "output_tokenizer", pipeline.tokenizer)
        graphs = seq2seq_graphs(model, cfg, tokenizer, out_dir, fmt, opset)
    else:
        graphs = _stack_graphs(model, cfg, kind, out_dir, fmt, opset)
    tokenizer = pipeline.tokenizer
    manifest = {"format": fmt, "run": str(run_dir), "objective": pipeline.config.task,
                "input": kind, "context_length": cfg.context_length, "graphs": graphs,
                "steps_per_position": cfg.patch if kind == "features" else 1,
                "tokenizer": None if tokenizer is None else {
                    "file": TOKENIZER_FILE, "vocab_size": tokenizer.vocab_size,
                    "eos_id": tokenizer.eos_id, "bos_id": tokenizer.bos_id,
                    "pad_id": tokenizer.pad_id}}
    if tokenizer is not None:
        shutil.copyfile(run_dir / TOKENIZER_FILE, out_dir / TOKENIZER_FILE)
    target = getattr(pipeline.objective, "target_tokenizer", None)
    if target is not None:  # seq2seq targets with their own tokenizer: decoding's ids are its
        manifest["target_tokenizer"] = {
            "file": TARGET_TOKENIZER_FILE, "vocab_size": target.vocab_size,
            "eos_id": target.eos_id, "bos_id": target.bos_id, "pad_id": target.pad_id}
        shutil.copyfile(run_dir / TARGET_TOKENIZER_FILE, out_dir / TARGET_TOKENIZER_FILE)
    atomic_write(out_dir / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def _stack_graphs(model, cfg, kind: str, out_dir: Path, fmt: str, opset: int) -> dict:
    """The graphs of a single-stack model: prefill and step, or forward."""
    B, T = 2, 3

    def example_inputs(t: int) -> Tensor:
        if kind == "ids":
            return torch.randint(0, cfg.vocab_size, (B, t))
        return torch.randn(B, t, cfg.input_dim)

    # A forecast head reads the last ``horizon`` positions of a whole window: it has a
    # forward graph only, over more positions than that (a window has a context too).
    # Patched features (model.patch P): the steps are P times the positions.
    # A head over every position (next-step forecasts, anomaly scoring, pre-training)
    # exports like a language model's: prefill and step graphs with the state when
    # the model is causal, else a forward graph over any length.
    window = None if getattr(model.head, "every_position", False) else \
        getattr(model.head, "horizon", None)
    patch = cfg.patch
    batch = torch.export.Dim("batch", min=1, max=4096)
    fewest = (window or 0) // patch + 1  # positions
    if patch > 1:
        time = patch * torch.export.Dim("patches", min=fewest, max=max(cfg.context_length, 2))
    else:
        time = torch.export.Dim("time", min=fewest, max=max(cfg.context_length, 2))
    graphs: dict = {}
    if model.causal and window is None:
        with torch.no_grad():
            state = model(example_inputs(patch * T), model.init_state(B)).state
            longer = model(example_inputs(patch * (T + 1)), model.init_state(B)).state
        layout = StateLayout(model, state, longer)
        flat = [t.contiguous() for t in layout.flatten(state)]  # a runtime passes dense arrays
        dims = {"batch": batch, "cache": torch.export.Dim.DYNAMIC}
        graphs["step"] = export_graph(Step(model, layout), (example_inputs(patch), flat),
                                 ({0: batch}, [{d: dims[n] for d, n in axes.items()}
                                               for axes in layout.axes]),
                                 out_dir, "step", fmt, opset, ["ids", *layout.names],
                                 ["logits", *(f"next.{n}" for n in layout.names)], cfg)
        graphs["state"] = [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                            "dynamic": {str(d): a for d, a in axes.items()}}
                           for n, t, axes in zip(layout.names, flat, layout.axes)]
        try:
            graphs["prefill"] = export_graph(Prefill(model, layout), (example_inputs(patch * T),),
                                        ({0: batch, 1: time},), out_dir, "prefill", fmt, opset,
                                        ["ids"], ["logits", *(f"next.{n}" for n in layout.names)], cfg)
        except ConfigError:
            # Recurrent kernels unroll over time when traced: no graph for any length.
            # Decoding then starts from the zero state and steps through the prompt.
            empty = model.init_state(1)
            if layout.names != StateLayout(model, empty).names or not all(
                    bool((t == 0).all()) for t in layout.flatten(empty)):
                raise
            graphs["prefill"] = None
            logger.info("no prefill graph for %s: prompts go through the step graph one token "
                        "at a time, from the zero state", ", ".join(sorted(set(cfg.mixers))))
    else:
        graphs["forward"] = export_graph(Forward(model), (example_inputs(patch * max(T, fewest)),),
                                    ({0: batch, 1: time},),
                                    out_dir, "forward", fmt, opset, ["inputs"], ["outputs"], cfg)
    return graphs


class ExportedModel:
    """Runs an export directory without seqlab's model code: ONNX Runtime for ``onnx``,
    ``torch.export.load`` for ``torch-export``. ``prefill`` continues from nothing (or,
    without a prefill graph, steps through the prompt from the zero state); ``step``
    takes one token per row; ``greedy`` decodes."""

    def __init__(self, directory: str | Path, *, threads: int | None = None):
        self.directory = Path(directory)
        self.manifest = json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))
        graphs = self.manifest["graphs"]
        self.state_spec = graphs.get("state", [])
        self.names = [s["name"] for s in self.state_spec]
        files = {k: graphs[k]["file"] for k in ("prefill", "step", "forward", "start")
                 if graphs.get(k)}
        if self.manifest["format"] == "onnx":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            if threads:
                options.intra_op_num_threads = options.inter_op_num_threads = threads
            self._graphs = {k: onnxruntime.InferenceSession(str(self.directory / f), options)
                            for k, f in files.items()}
        else:
            self._graphs = {k: torch.export.load(str(self.directory / f)).module()
                            for k, f in files.items()}

    def _run(self, graph: str, ids: Tensor, state: list[Tensor] | None = None):
        if self.manifest["format"] == "onnx":
            feeds = {{"forward": "inputs", "start": "source"}.get(graph, "ids"): ids.numpy()}
            if state is not None:
                feeds.update({n: t.numpy() for n, t in zip(self.names, state)})
            out = [torch.from_numpy(o) for o in self._graphs[graph].run(None, feeds)]
        else:
            module = self._graphs[graph]
            out = module(ids) if state is None else module(ids, list(state))
            out = [out] if isinstance(out, Tensor) else list(out)  # forward returns one tensor
        return out[0], out[1:]

    def forward(self, inputs: Tensor) -> Tensor:
        return self._run("forward", inputs)[0]

    def zero_state(self, batch: int) -> list[Tensor]:
        return [torch.zeros([batch if s["dynamic"].get(str(d)) == "batch" else n
                             for d, n in enumerate(s["shape"])], dtype=getattr(torch, s["dtype"]))
                for s in self.state_spec]

    def prefill(self, ids: Tensor) -> tuple[Tensor, list[Tensor]]:
        if "prefill" in self._graphs:
            return self._run("prefill", ids)
        state, logits = self.zero_state(ids.shape[0]), []
        every = self.manifest.get("steps_per_position", 1)  # what one step reads
        for t in range(0, ids.shape[1], every):
            out, state = self._run("step", ids[:, t:t + every], state)
            logits.append(out)
        return torch.cat(logits, 1), state

    def step(self, ids: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        return self._run("step", ids, state)

    def start(self, source: Tensor) -> tuple[Tensor, list[Tensor]]:
        """An encoder-decoder's first step: (B, S) source ids -> the logits after
        ``<bos>`` and the decoder state (unpadded rows: one source length)."""
        return self._run("start", source)

    def translate(self, source: Tensor, max_length: int) -> list[list[int]]:
        """Greedy outputs of an encoder-decoder, each up to ``<eos>`` (not included)."""
        eos = (self.manifest.get("target_tokenizer") or self.manifest["tokenizer"])["eos_id"]
        logits, state = self.start(source)
        out = [[] for _ in range(source.shape[0])]
        done = [False] * len(out)
        for _ in range(max_length):
            token = logits[:, -1].argmax(-1, keepdim=True)
            for row, t in enumerate(token[:, 0].tolist()):
                done[row] = done[row] or t == eos
                if not done[row]:
                    out[row].append(t)
            if all(done):
                break
            logits, state = self.step(token, state)
        return out

    def greedy(self, ids: Tensor, max_new_tokens: int) -> Tensor:
        """(B, T) prompt ids -> (B, max_new_tokens) greedily decoded ids."""
        logits, state = self.prefill(ids)
        out = []
        for _ in range(max_new_tokens):
            token = logits[:, -1].argmax(-1, keepdim=True)
            out.append(token)
            logits, state = self.step(token, state)
        return torch.cat(out, 1)
