"""Model <-> flat tensor dicts, with tied weights stored once and clear shape errors."""

from __future__ import annotations

from torch import Tensor, nn

from seqlab.errors import CheckpointError


def model_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The model's parameters and persistent buffers, each storage once (tied weights
    such as a head tied to the embedding are stored under their first name only)."""
    seen: set[int] = set()
    out: dict[str, Tensor] = {}
    for name, t in model.state_dict().items():
        key = t.data_ptr() if t.numel() else id(t)
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach()
    return out


def load_model_tensors(model: nn.Module, tensors: dict[str, Tensor], *, source: str) -> None:
    """Load ``tensors`` into ``model``, or raise a CheckpointError listing every tensor
    that is missing, unexpected, or of the wrong shape (with both shapes)."""
    check_model_tensors(model_tensors(model), tensors, source=source)
    model.load_state_dict(tensors, strict=False)


def check_model_tensors(expected: dict[str, Tensor], tensors: dict[str, Tensor], *,
                        source: str) -> None:
    """Raise a CheckpointError listing every tensor of ``tensors`` that is missing from,
    not in, or shaped unlike ``expected`` (a model's ``model_tensors``)."""
    problems = []
    for name, t in expected.items():
        if name not in tensors:
            problems.append(f"{name}: missing (model expects {tuple(t.shape)})")
        elif tuple(tensors[name].shape) != tuple(t.shape):
            problems.append(f"{name}: checkpoint {tuple(tensors[name].shape)} vs model "
                            f"{tuple(t.shape)}")
    for name in tensors:
        if name not in expected:
            problems.append(f"{name}: not in this model (checkpoint {tuple(tensors[name].shape)})")
    if problems:
        shown = "; ".join(problems[:12]) + (f"; and {len(problems) - 12} more" if len(problems) > 12 else "")
        raise CheckpointError(f"weights in {source} do not match the model built from the "
                              f"config: {shown}")
