"""Nested trainer state (optimizer state dicts, RNG, counters) as tensors + JSON.

Tensors go to a safetensors file and the structure to a JSON skeleton with
placeholders, so resuming never unpickles anything and the round trip is bit- and
dtype-exact (int dict keys, tuples and NaN payloads included).
"""

from __future__ import annotations

import math
import struct
from typing import Any

from torch import Tensor

from seqlab.errors import CheckpointError

_TENSOR, _TUPLE, _DICT, _FLOAT = "__tensor__", "__tuple__", "__dict__", "__float__"
_MARKERS = frozenset((_TENSOR, _TUPLE, _DICT, _FLOAT))
_CANONICAL_NAN = struct.pack(">d", math.nan)


def _encode_float(x: float) -> Any:
    """Finite floats are plain JSON; others are tagged so state.json stays strict JSON."""
    if math.isfinite(x):
        return x
    if math.isinf(x):
        return {_FLOAT: "inf" if x > 0 else "-inf"}
    bits = struct.pack(">d", x)
    return {_FLOAT: "nan" if bits == _CANONICAL_NAN else "nan:" + bits.hex()}


def _decode_float(tag: str) -> float:
    if tag.startswith("nan:"):
        return struct.unpack(">d", bytes.fromhex(tag[4:]))[0]
    return float(tag)


def flatten_state(obj: Any) -> tuple[dict[str, Tensor], Any]:
    """Split nested state into tensors (for safetensors) and a JSON-able skeleton.

    Handles what trainer state holds: dicts (keys may be str, int, bool, float, None or
    tuples of those; optimizer state dicts key by int parameter id), lists, tuples,
    tensors, ints, floats, bools, str and None. Tensors become ``{"__tensor__": key}``
    keyed by their path; tuples ``{"__tuple__": [...]}``; dicts with non-str keys
    ``{"__dict__": [[key, value], ...]}`` so key types survive JSON; non-finite floats
    ``{"__float__": "nan"}``. Subclasses (IntEnum, namedtuple, numpy floats) come back
    as the plain built-in type.

    Returns:
        ``(tensors, skeleton)``; :func:`unflatten_state` inverts it exactly.

    Raises:
        TypeError: for a value of any other type, naming its path.
    """
    tensors: dict[str, Tensor] = {}

    def encode(x: Any, path: str, allow_tensor: bool = True) -> Any:
        if isinstance(x, Tensor):
            if not allow_tensor:
                raise TypeError(f"state at {path or '<root>'}: a tensor cannot be a dict key")
            key, i = path or "root", 1
            while key in tensors:
                key, i = f"{path or 'root'}#{i}", i + 1
            tensors[key] = x
            return {_TENSOR: key}
        if x is None or isinstance(x, bool):
            return x
        if isinstance(x, int):
            return int(x)
        if isinstance(x, float):
            return _encode_float(float(x))
        if isinstance(x, str):
            return str(x)
        if isinstance(x, list):
            return [encode(v, f"{path}/{i}", allow_tensor) for i, v in enumerate(x)]
        if isinstance(x, tuple):
            return {_TUPLE: [encode(v, f"{path}/{i}", allow_tensor) for i, v in enumerate(x)]}
        if isinstance(x, dict) and allow_tensor:
            if all(type(k) is str for k in x) and not _MARKERS.intersection(x):
                return {k: encode(v, f"{path}/{k}") for k, v in x.items()}
            return {_DICT: [[encode(k, f"{path}/{k}", False), encode(v, f"{path}/{k}")]
                            for k, v in x.items()]}
        raise TypeError(f"state at {path or '<root>'} has type {type(x).__name__}, which "
                        "checkpoints cannot store (use tensors, numbers, str, None, "
                        "lists, tuples and dicts)")

    return tensors, encode(obj, "")


def unflatten_state(tensors: dict[str, Tensor], skeleton: Any) -> Any:
    """Rebuild what :func:`flatten_state` split, with the same types, keys and order.

    Raises:
        CheckpointError: when the skeleton names a tensor that is missing or is malformed.
    """

    def decode(x: Any) -> Any:
        if isinstance(x, list):
            return [decode(v) for v in x]
        if not isinstance(x, dict):
            return x
        if len(x) == 1:
            (tag, value), = x.items()
            if tag == _TENSOR:
                if value not in tensors:
                    raise CheckpointError(f"state refers to tensor {value!r}, which is not "
                                          "among the saved tensors")
                return tensors[value]
            if tag == _TUPLE:
                return tuple(decode(v) for v in value)
            if tag == _DICT:
                return {decode(k): decode(v) for k, v in value}
            if tag == _FLOAT:
                return _decode_float(value)
        return {k: decode(v) for k, v in x.items()}

    try:
        return decode(skeleton)
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"state skeleton is malformed ({exc})") from None
