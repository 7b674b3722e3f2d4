"""What every export shares: how a model's streaming state flattens into named tensors
(``StateLayout``) and how one graph is traced and written (``export_graph``)."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from seqlab.errors import ConfigError, SeqlabError
from seqlab.models.backbone import BackboneState
from seqlab.models.seq2seq import DecoderState
from seqlab.nn.cross_attention import MemoryKV
from seqlab.nn.mixer import BatchState

logger = logging.getLogger("seqlab")

FORMATS = {"onnx": ".onnx", "torch-export": ".pt2"}
MANIFEST = "export.json"


class StateLayout:
    """How a model's streaming state flattens into named tensors and back.

    Each layer's state is a BatchState (its tensor fields by name) or a tuple of tensors
    (recurrent h[, c]); the names are ``layers.I.FIELD`` and ``seen``. A decoder's state
    (``DecoderState``) also holds each layer's cross-attention keys and values over the
    source, named ``memory.I.k`` and ``memory.I.v`` (exported rows are unpadded, so no
    source mask). A streaming front end's pending input steps are ``front.I``.
    """

    def __init__(self, model, example: BackboneState, longer: BackboneState | None = None):
        self.memory = len(example.memory) if isinstance(example, DecoderState) else 0
        self.front = len(example.front) if example.front is not None else 0
        blocks = model.decoder.blocks if self.memory else model.backbone.blocks
        self.kinds = []
        for i, layer in enumerate(example.layers):
            if isinstance(layer, BatchState):
                self.kinds.append((type(layer), list(layer.tensors())))
            elif isinstance(layer, tuple) and all(isinstance(t, Tensor) for t in layer):
                self.kinds.append((tuple, [f"s{j}" for j in range(len(layer))]))
            else:
                mixer = type(blocks[i].mixer).__name__
                raise ConfigError(f"layer {i} ({mixer}) keeps a state of type "
                                  f"{type(layer).__name__}, which is not plain tensors; it "
                                  "cannot be exported with its state")

        self.axes: list[dict[int, str]] = []
        if longer is not None:  # which axes hold the batch, and which grow with the input
            for kind, a, b in zip(self._tensor_kinds(), self.flatten(example), self.flatten(longer)):
                axes = {1 if kind is tuple else 0: "batch"}
                axes.update({d: "cache" for d in range(a.dim()) if a.shape[d] != b.shape[d]})
                self.axes.append(axes)

    def _tensor_kinds(self) -> list:
        return ([kind for kind, fields in self.kinds for _ in fields]
                + [MemoryKV] * (2 * self.memory) + [None] * (self.front + 1))

    @property
    def names(self) -> list[str]:
        return ([f"layers.{i}.{f}" for i, (_, fields) in enumerate(self.kinds) for f in fields]
                + [f"memory.{i}.{f}" for i in range(self.memory) for f in ("k", "v")]
                + [f"front.{i}" for i in range(self.front)] + ["seen"])

    def flatten(self, state: BackboneState) -> list[Tensor]:
        out = []
        for layer, (kind, fields) in zip(state.layers, self.kinds):
            out += list(layer) if kind is tuple else [layer.tensors()[f] for f in fields]
        for kv in (state.memory if self.memory else []):
            out += [kv.k, kv.v]
        return out + list(state.front or ()) + [state.seen]

    def unflatten(self, flat: list[Tensor]) -> BackboneState:
        layers, i = [], 0
        for kind, fields in self.kinds:
            part = flat[i:i + len(fields)]
            i += len(fields)
            layers.append(tuple(part) if kind is tuple else kind.from_tensors(dict(zip(fields, part))))
        if not self.memory:
            front = tuple(flat[i:i + self.front]) if self.front else None
            return BackboneState(layers, flat[i + self.front], front)
        memory = [MemoryKV(flat[i + 2 * j], flat[i + 2 * j + 1]) for j in range(self.memory)]
        return DecoderState(layers, flat[i + 2 * self.memory], memory=memory)


class Step(nn.Module):
    """``ids`` and a state (a language model's or a decoder's) -> logits and the next state."""

    def __init__(self, model, layout: StateLayout):
        super().__init__()
        self.model, self.layout = model, layout

    def forward(self, ids: Tensor, state: list[Tensor]):
        out = self.model(ids, self.layout.unflatten(list(state)))
        return (out.logits, *self.layout.flatten(out.state))


def export_graph(module: nn.Module, args: tuple, shapes: tuple, out_dir: Path, name: str, fmt: str,
            opset: int, inputs: list[str], outputs: list[str], cfg) -> dict:
    path = out_dir / f"{name}{FORMATS[fmt]}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(module, args, dynamic_shapes=shapes, strict=False)
            if fmt == "torch-export":
                torch.export.save(program, str(path))
            else:
                onnx_program = torch.onnx.export(program, args, input_names=inputs,
                                                 output_names=outputs, opset_version=opset,
                                                 dynamo=True, verbose=False)
                onnx_program.save(str(path))
    except SeqlabError:
        raise
    except Exception as e:  # noqa: BLE001 - torch's tracing errors, reworded below
        logger.debug("export of %s failed", name, exc_info=True)
        mixers = ", ".join(sorted(set(cfg.mixers)))
        raise ConfigError(f"cannot export the {name} graph of this model (mixers: {mixers}): "
                          f"{_reason(e)}") from None
    return {"file": path.name, "inputs": inputs, "outputs": outputs}


_HINTS = (("complex", "ONNX has no complex numbers, which this mixer computes with; "
                      "--format torch-export keeps them"),
          ("data-dependent", "the mixer's code decides shapes from tensor values, which a "
                             "traced graph cannot"),
          ("Constraints violated (time)", "the mixer's kernel unrolls over time when traced, so "
                                          "no graph takes inputs of any length"))


def _reason(error: Exception) -> str:
    """The root cause in a tracing or ONNX conversion error, in one line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    causes = re.findall(r"^<class '[^']+'>: (.+)$", text, re.M)
    line = causes[0] if causes else next((x for x in text.splitlines() if x.strip()),
                                        type(error).__name__)
    hint = next((h for key, h in _HINTS if key in text), None)
    return line.strip()[:300] + (f" ({hint})" if hint else "")


