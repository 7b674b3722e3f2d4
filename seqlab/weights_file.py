"""Weights files: safetensors with a checksum, never pickle.

``torch.load`` runs arbitrary code from the file (a pickle's ``__reduce__`` can call
any function), so weights are safetensors only. A pickle or ``torch.save`` archive is
recognised by its magic bytes and refused before any parser sees it, and a sha256 of
the data section, stored in the header, catches bit flips that still parse.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import safetensors.torch
import torch
from safetensors import safe_open
from torch import Tensor

from seqlab.errors import CheckpointError
from seqlab.io import atomic_write

_SHA_KEY = "seqlab.sha256"
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
_PICKLE_MAGIC = b"\x80"  # PROTO opcode that opens every pickle of protocol >= 2
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) archive
_CHUNK = 1 << 20


def _prepare(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous, detached copies safetensors accepts.

    Moving to CPU first means a run saved on GPU loads anywhere. safetensors refuses
    tensors that share memory (it cannot tell a tie from an accident), so a tensor
    whose storage was already seen is cloned; callers should pass each tie once.
    """
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        if not isinstance(name, str) or not isinstance(t, Tensor):
            raise TypeError(f"weights must map str to Tensor; got {name!r}: {type(t).__name__}")
        t = t.detach().to("cpu").contiguous()
        if t.numel():
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen:
                t = t.clone()
            else:
                seen.add(ptr)
        out[name] = t
    return out


def _data_start(blob: bytes) -> int:
    return 8 + int.from_bytes(blob[:8], "little")


def _serialize_weights(tensors: dict[str, Tensor], metadata: dict[str, str] | None) -> bytes:
    """safetensors bytes whose metadata carries the sha256 of the data section.

    The data section does not depend on the metadata (only the header does), so the
    tensors are serialized once without it to hash the data, then again with it.
    """
    meta = dict(metadata or {})
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"checkpoint metadata must map str to str; got {key!r}: {value!r}")
    if _SHA_KEY in meta:
        raise ValueError(f"metadata key {_SHA_KEY!r} is reserved for the checksum")
    prepared = _prepare(tensors)
    blob = safetensors.torch.save(prepared)
    meta[_SHA_KEY] = hashlib.sha256(memoryview(blob)[_data_start(blob):]).hexdigest()
    del blob
    return safetensors.torch.save(prepared, metadata=meta)


def save_weights(path: str | os.PathLike, tensors: dict[str, Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to a safetensors file atomically, with a data checksum.

    Args:
        path: target file; written via a ``.tmp-`` file and renamed, so a crash
            leaves the old file or the new one.
        tensors: name -> tensor, each storage once (tied weights under one name).
        metadata: extra str -> str pairs stored in the header.
    """
    atomic_write(path, _serialize_weights(tensors, metadata))


def _refuse_pickle(path: Path, head: bytes) -> None:
    """Refuse pickles and torch.save archives by their first bytes, before any parsing.

    A safetensors file starts with a u64 header length whose low byte may happen to be
    0x80, so a file whose byte 8 opens the JSON header (``{``) is taken as safetensors.
    """
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= _MAX_HEADER:
        return
    if head.startswith(_PICKLE_MAGIC) or head.startswith(_ZIP_MAGIC):
        raise CheckpointError(
            f"{path} is not a safetensors file (it looks like a Python pickle / torch.save "
            "archive); seqlab never unpickles files, because loading a pickle can run "
            "arbitrary code. Convert it with code you trust (safetensors.torch.save_file)."
        )


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a safetensors file")
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")


def _read_header(f, path: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """The tensor entries and metadata of the open safetensors file ``f`` (left just
    past the header), checked against the file's size."""
    size = path.stat().st_size
    head = f.read(9)
    _refuse_pickle(path, head)
    if len(head) < 8:
        raise CheckpointError(f"{path} is truncated: {size} bytes, too short for a "
                              "safetensors header (at least 8 bytes)")
    n = int.from_bytes(head[:8], "little")
    if n > _MAX_HEADER:
        raise CheckpointError(f"{path} has a corrupt header: its length field reads {n} bytes")
    if 8 + n > size:
        raise CheckpointError(f"{path} is truncated: expected at least {8 + n} bytes "
                              f"(header alone), found {size}")
    f.seek(8)
    try:
        header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("__metadata__ is not a str -> str map")
        end = max((int(info["data_offsets"][1]) for info in header.values()), default=0)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise CheckpointError(f"{path} has a corrupt header ({exc})") from None
    data_size = size - 8 - n
    if data_size < end:
        raise CheckpointError(f"{path} is truncated: expected {8 + n + end} bytes, "
                              f"found {size}")
    if data_size > end:
        raise CheckpointError(f"{path} is corrupt: {data_size - end} bytes follow its "
                              "last tensor")
    return header, meta


def read_header(path: str | os.PathLike) -> tuple[dict[str, dict], dict[str, str]]:
    """The tensor entries (``dtype``, ``shape``, ``data_offsets`` per name) and the
    metadata (without the checksum key) of a safetensors file, without reading its data.

    Raises:
        CheckpointError: as :func:`load_weights`, for the header's faults.
    """
    path = Path(path)
    _check_file(path)
    with open(path, "rb") as f:
        header, meta = _read_header(f, path)
    meta.pop(_SHA_KEY, None)
    return header, meta


def _read_weights(path: Path, *, device: str | torch.device, verify: bool
                  ) -> tuple[dict[str, Tensor], dict[str, str]]:
    _check_file(path)
    with open(path, "rb") as f:
        header, meta = _read_header(f, path)
        expected = meta.pop(_SHA_KEY, None)
        if verify and expected is not None:
            digest = hashlib.sha256()
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
            if digest.hexdigest() != expected:
                raise CheckpointError(f"{path} is corrupt: its data does not match the "
                                      "checksum written with it")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as st:
            tensors = {name: st.get_tensor(name) for name in st.keys()}
    except Exception as exc:  # safetensors' own error type carries the detail
        raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from None
    dev = torch.device(device)
    if dev.type != "cpu":
        tensors = {name: t.to(dev) for name, t in tensors.items()}
    return tensors, meta


def load_weights(path: str | os.PathLike, *, device: str | torch.device = "cpu"
                 ) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a safetensors file written by :func:`save_weights` (or any safetensors file).

    Never unpickles: pickles and ``torch.save`` archives are refused by their magic
    bytes. When the file carries a ``seqlab.sha256`` checksum it is verified.

    Returns:
        ``(tensors, metadata)``; metadata without the checksum key.

    Raises:
        CheckpointError: naming the file, when it is missing, a pickle, truncated,
            has a corrupt header, or fails its checksum.
    """
    return _read_weights(Path(path), device=device, verify=True)
