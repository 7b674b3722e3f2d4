"""Checkpoints you can trust: safetensors only, checksummed, committed by rename.

Two rules shape this module:

* **Nothing is ever unpickled.** ``torch.load`` runs arbitrary code from the file
  (a pickle's ``__reduce__`` can call any function), so weights *and* trainer state
  (optimizer, RNG, counters) are stored as safetensors plus a JSON skeleton
  (:func:`flatten_state`). A pickle or ``torch.save`` archive is recognised by its
  magic bytes and refused before any parser sees it.
* **A crash at any instant leaves a usable checkpoint.** A step is written into a
  ``.tmp-`` directory, every file is fsynced, ``manifest.json`` (sizes and sha256 of
  every file) is written last, and only then is the directory renamed to
  ``step-NNNNNNNN``. Loading verifies the manifest and falls back to the previous
  step when the newest one is torn or corrupt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seqlab.errors import CheckpointError
from seqlab.io import TMP_PREFIX, fsync_dir, is_disk_full, remove_path, remove_stale
from seqlab.train.state import flatten_state, unflatten_state
from seqlab.weights_file import (_CHUNK, _read_weights, _serialize_weights, load_weights,
                                       save_weights)

__all__ = ["Checkpoint", "CheckpointManager", "flatten_state", "load_weights", "save_weights",
           "unflatten_state"]

logger = logging.getLogger(__name__)


MANIFEST = "manifest.json"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
SKELETON_FILE = "state.json"
_REQUIRED = (MODEL_FILE, STATE_FILE, SKELETON_FILE)
_STEP_DIR = re.compile(r"^step-(\d{8,})$")
_SET_ASIDE_DIR = re.compile(r"^" + re.escape(TMP_PREFIX) + r"old-step-(\d{8,})-\d+$")


# --------------------------------------------------------------------------- manager


def _write_file(path: Path, data: bytes) -> None:
    """Write and fsync one file of a checkpoint (the seam tests patch to inject crashes)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Checkpoint:
    """One verified, loaded checkpoint.

    Attributes:
        step: the training step it was saved at.
        path: the directory it was read from: ``step-NNNNNNNN``, or the set-aside copy
            that :meth:`CheckpointManager.checkpoints` lists after a crashed re-save.
        model: model weights, on the requested device.
        state: the nested trainer state given to ``save()``; its tensors are on CPU
            (``Optimizer.load_state_dict`` moves them to the parameters' device, and
            RNG states must be CPU byte tensors).
        metadata: the str -> str metadata given to ``save()``.
    """

    step: int
    path: Path
    model: dict[str, Tensor]
    state: Any
    metadata: dict


class _Unusable(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class CheckpointManager:
    """Writes, prunes and loads the step checkpoints of one run (``RUN/trainer``).

    Args:
        directory: where ``step-NNNNNNNN`` directories live.
        keep: how many committed checkpoints to retain (at least 1). Keeping two means
            a checkpoint corrupted after it was written still leaves one to resume from.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 2) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an int >= 1, got {keep!r}")
        self.directory = Path(directory)
        self.keep = keep

    def _step_dir(self, step: int) -> Path:
        return self.directory / f"step-{step:08d}"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Committed checkpoint directories, newest first (not verified).

        These are the ``step-NNNNNNNN`` directories, plus any committed one that a re-save
        of the same step moved aside (:meth:`_commit`) and that a crash kept from being
        replaced: while its step has no ``step-NNNNNNNN``, it is still that step's last
        good copy (and :meth:`clean_stale` renames it back).
        """
        if not self.directory.is_dir():
            return []
        found, set_aside = [], []
        for entry in self.directory.iterdir():
            match = _STEP_DIR.match(entry.name)
            if match and entry.is_dir():
                found.append((int(match.group(1)), entry))
            match = _SET_ASIDE_DIR.match(entry.name)
            if match and entry.is_dir():
                set_aside.append((int(match.group(1)), entry))
        committed = {step for step, _ in found}
        found += [(step, path) for step, path in sorted(set_aside) if step not in committed]
        return sorted(found, key=lambda item: item[0], reverse=True)

    def latest_step(self) -> int | None:
        """Step of the newest directory with a manifest (cheap; contents not verified)."""
        for step, path in self.checkpoints():
            if (path / MANIFEST).is_file():
                return step
        return None

    def clean_stale(self) -> list[Path]:
        """Remove ``.tmp-`` leftovers of a save that crashed; returns what was removed.

        A committed checkpoint that a crashed re-save of its step had moved aside is
        renamed back to ``step-NNNNNNNN`` instead, when it verifies (an ``OSError``
        from that rename propagates, and the copy is kept).

        Call it at start-up, while no other process saves into this directory: a save
        in progress is a ``.tmp-`` directory too.
        """
        for step, path in self.checkpoints():
            final = self._step_dir(step)
            if path == final or final.exists():
                continue
            try:
                self._verify(step, path)
            except _Unusable:
                continue  # a torn copy is no better than none: remove_stale takes it
            os.rename(path, final)
            fsync_dir(self.directory)
            logger.warning("restored checkpoint %s, which a re-save of the same step had moved "
                           "aside when it was interrupted", final)
        removed = remove_stale(self.directory)
        if removed:
            logger.warning("removed leftovers of an interrupted checkpoint save in %s: %s",
                           self.directory, ", ".join(p.name for p in removed))
        return removed

    def save(self, step: int, *, model: dict[str, Tensor], state: Any,
             metadata: dict[str, str] | None = None) -> Path:
        """Write checkpoint ``step`` and commit it by renaming its directory into place.

        Args:
            step: the training step (>= 0); a checkpoint already at this step is replaced.
            model: model weights, each storage once.
            state: nested trainer state (optimizer state dict, RNG states, counters);
                see :func:`flatten_state` for what it may hold.
            metadata: str -> str pairs stored in ``model.safetensors``.

        Returns:
            The committed ``step-NNNNNNNN`` directory.

        Raises:
            CheckpointError: when the file system fails (disk full, permissions); the
                partial write is removed and earlier checkpoints are untouched.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        final = self._step_dir(step)
        tmp = self.directory / f"{TMP_PREFIX}{final.name}-{os.getpid()}"
        previous = self.latest_step()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                remove_path(tmp)
            tmp.mkdir()
            files: dict[str, dict[str, Any]] = {}

            def put(name: str, data: bytes) -> None:
                _write_file(tmp / name, data)
                files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

            put(MODEL_FILE, _serialize_weights(model, metadata))
            tensors, skeleton = flatten_state(state)
            put(STATE_FILE, _serialize_weights(tensors, None))
            put(SKELETON_FILE, json.dumps({"format": "seqlab-state", "version": 1,
                                           "skeleton": skeleton}, allow_nan=False).encode())
            manifest = {"format": "seqlab-checkpoint", "version": 1, "step": step, "files": files}
            _write_file(tmp / MANIFEST, json.dumps(manifest, indent=2).encode())
            fsync_dir(tmp)
            self._commit(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if not isinstance(exc, OSError):
                raise
            why = "no space left on device" if is_disk_full(exc) else (exc.strerror or str(exc))
            if exc.filename and not is_disk_full(exc):
                why += f" ({exc.filename})"
            kept = ("there is no previous checkpoint" if previous is None else
                    f"the previous checkpoint (step {previous}) is untouched")
            raise CheckpointError(f"could not write checkpoint for step {step} to "
                                  f"{self.directory}: {why}; {kept}") from exc
        logger.info("saved checkpoint %s", final)
        self._prune(keep_path=final)
        return final

    def _commit(self, tmp: Path, final: Path) -> None:
        """Rename ``tmp`` to ``final``; an existing ``final`` is moved aside, not overwritten.

        POSIX cannot rename a directory over a non-empty one, so the old one is renamed
        to a ``.tmp-old-`` name first. A crash between the two renames leaves no
        ``step-NNNNNNNN``: :meth:`checkpoints` then lists the set-aside copy, and
        :meth:`clean_stale` renames it back; once the new one is in, the old one is a
        leftover that ``clean_stale`` removes.
        """
        if not final.exists():
            os.rename(tmp, final)
            fsync_dir(self.directory)
            return
        aside = self.directory / f"{TMP_PREFIX}old-{final.name}-{os.getpid()}"
        if aside.exists():
            remove_path(aside)
        os.rename(final, aside)
        try:
            os.rename(tmp, final)
        except BaseException:
            os.rename(aside, final)
            raise
        fsync_dir(self.directory)
        shutil.rmtree(aside, ignore_errors=True)

    def _prune(self, keep_path: Path) -> None:
        """Delete committed checkpoints beyond the newest ``keep`` (never the one just saved).

        Each is renamed to a ``.tmp-`` name before its files go, so a crash mid-delete
        leaves a leftover for ``clean_stale``, never a torn ``step-NNNNNNNN``.
        """
        for _, path in self.checkpoints()[self.keep:]:
            if path == keep_path:
                continue
            try:
                if not path.name.startswith(TMP_PREFIX):
                    doomed = self.directory / f"{TMP_PREFIX}pruned-{path.name}-{os.getpid()}"
                    if doomed.exists():
                        remove_path(doomed)
                    os.rename(path, doomed)
                    path = doomed
                shutil.rmtree(path)
                logger.debug("pruned old checkpoint %s", path)
            except OSError as exc:
                logger.warning("could not prune old checkpoint %s: %s", path, exc)

    def _verify(self, step: int, path: Path) -> None:
        """Check the manifest and every file's size and sha256, or raise _Unusable."""
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise _Unusable("incomplete", f"no {MANIFEST}; its write was interrupted")
        try:
            manifest = json.loads(manifest_path.read_bytes())
            files = manifest["files"]
            if manifest.get("format") != "seqlab-checkpoint" or not isinstance(files, dict):
                raise ValueError("not a seqlab checkpoint manifest")
        except (ValueError, TypeError, KeyError) as exc:
            raise _Unusable("corrupt", f"{MANIFEST} is unreadable: {exc}") from None
        if manifest.get("step") != step:
            raise _Unusable("corrupt", f"{MANIFEST} says step {manifest.get('step')!r}")
        for name in _REQUIRED:
            if name not in files:
                raise _Unusable("corrupt", f"{MANIFEST} does not list {name}")
        for name, entry in files.items():
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                raise _Unusable("corrupt", f"{MANIFEST} lists a bad file name {name!r}")
            file = path / name
            if not file.is_file():
                raise _Unusable("corrupt", f"{name}: missing")
            try:
                size, sha = int(entry["size"]), str(entry["sha256"])
            except (TypeError, KeyError, ValueError):
                raise _Unusable("corrupt", f"{MANIFEST} entry for {name} is malformed") from None
            actual = file.stat().st_size
            if actual != size:
                raise _Unusable("corrupt", f"{name}: {actual} bytes, manifest says {size}")
            if _sha256_file(file) != sha:
                raise _Unusable("corrupt", f"{name}: sha256 mismatch")

    def _load(self, step: int, path: Path, device: str | torch.device) -> Checkpoint:
        self._verify(step, path)
        try:
            # The manifest's sha256 already covered every byte of these files.
            model, metadata = _read_weights(path / MODEL_FILE, device=device, verify=False)
            tensors, _ = _read_weights(path / STATE_FILE, device="cpu", verify=False)
            doc = json.loads((path / SKELETON_FILE).read_bytes())
            if not isinstance(doc, dict) or doc.get("format") != "seqlab-state":
                raise CheckpointError(f"{SKELETON_FILE} is not a seqlab state file")
            state = unflatten_state(tensors, doc["skeleton"])
        except (CheckpointError, ValueError, KeyError) as exc:
            raise _Unusable("corrupt", str(exc)) from None
        return Checkpoint(step=step, path=path, model=model, state=state, metadata=metadata)

    def load_latest(self, *, device: str | torch.device = "cpu") -> Checkpoint:
        """Load the newest checkpoint that verifies, falling back past torn or corrupt ones.

        Args:
            device: where to put the model weights (the state stays on CPU).

        Raises:
            CheckpointError: when there is no checkpoint, or none is usable (each listed
                with its problem).
        """
        candidates = self.checkpoints()
        if not candidates:
            raise CheckpointError(f"no checkpoint in {self.directory} to resume from "
                                  "(train without --resume to start a new run)")
        problems = []
        for i, (step, path) in enumerate(candidates):
            try:
                checkpoint = self._load(step, path, device)
            except _Unusable as bad:
                problem = f"{path.name} is {bad.kind} ({bad.reason})"
                problems.append(problem)
                nxt = (f"falling back to {candidates[i + 1][1].name}" if i + 1 < len(candidates)
                       else "no older checkpoint to fall back to")
                logger.warning("checkpoint %s; %s", problem, nxt)
                continue
            logger.info("loaded checkpoint %s", path)
            return checkpoint
        raise CheckpointError(f"no usable checkpoint in {self.directory}: " + "; ".join(problems))
