"""The process ``test_crash_safety.py`` kills: it saves, then stops dead at a chosen moment.

Usage: ``python crash_child.py MOMENT ROOT``

It commits what the moment needs under ``ROOT`` (``ROOT/model.safetensors`` or the
checkpoints in ``ROOT/trainer``), arms one fault-injection seam and starts one more
save. When that save reaches the moment, the seam does the part of the operation that
comes before it (half a file's bytes, one file of a directory being deleted), records
what it did in ``ROOT/marker.json`` so the parent can check it on disk, prints ``ready``
and blocks until the parent's SIGKILL. ``save returned`` on stdout means the seam never
fired.

The parent imports this file too, for :func:`model_for` and :func:`state_for`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

MOMENTS = (
    "weights-mid-write",        # model.safetensors half written to its temporary file
    "weights-before-rename",    # temporary file complete, os.replace not yet called
    "weights-first-write",      # as mid-write, with no earlier model.safetensors
    "model-write",              # a new step's model.safetensors half written
    "manifest-write",           # a new step's manifest.json half written
    "commit-rename",            # a new step complete, its directory not yet renamed
    "resave-between-renames",   # same step saved again: old one moved aside, new one not in
    "resave-drop-old",          # same step saved again: new one in, old one half deleted
    "prune",                    # an old checkpoint half deleted by _prune
)


def model_for(step: int, version: int = 0) -> dict[str, torch.Tensor]:
    """Weights that tell every (step, version) pair apart, in two dtypes."""
    base = step * 1000 + version * 100
    return {
        "w": torch.arange(48, dtype=torch.float32).reshape(6, 8) / 7 + base,
        "emb": (torch.arange(12, dtype=torch.int64) + base).to(torch.bfloat16),
    }


def state_for(step: int, version: int = 0) -> dict:
    return {"step": step, "version": version, "moments": torch.arange(5, dtype=torch.float64) * step
            + version, "rng": torch.Generator().manual_seed(step * 10 + version).get_state()}


def save(manager, step: int, version: int = 0):
    return manager.save(step, model=model_for(step, version), state=state_for(step, version),
                        metadata={"version": str(version)})


def main(moment: str, root: Path) -> None:
    from seqlab.train.checkpoint import CheckpointManager
    from seqlab.weights_file import save_weights

    import seqlab.train.checkpoint as ck

    marker = root / "marker.json"

    def stop_here(**info) -> None:
        marker.write_text(json.dumps({"moment": moment, **info}))
        print("ready", flush=True)
        time.sleep(60)  # the parent's SIGKILL lands here
        sys.exit("not killed")

    def torn_write(path: Path, data: bytes) -> None:
        """Write and fsync the first half of ``data``, then stop."""
        half = len(data) // 2
        with open(path, "wb") as f:
            f.write(data[:half])
            f.flush()
            os.fsync(f.fileno())
        stop_here(path=str(path), size=half, total=len(data))

    def arm_atomic_write() -> None:
        # seqlab.io.atomic_write: mkstemp, fdopen + write + fsync, os.replace.
        real_mkstemp, real_fdopen, real_replace = tempfile.mkstemp, os.fdopen, os.replace
        temporaries: dict[int, str] = {}

        def mkstemp(*args, **kwargs):
            fd, name = real_mkstemp(*args, **kwargs)
            temporaries[fd] = name
            return fd, name

        class TornFile:
            def __init__(self, fd, name):
                self.fd, self.name = fd, name

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                os.close(self.fd)

            def write(self, data):
                os.close(self.fd)
                torn_write(Path(self.name), bytes(data))

        def fdopen(fd, *args, **kwargs):
            name = temporaries.get(fd, "")
            if moment != "weights-before-rename" and Path(name).name.startswith(
                    ".tmp-model.safetensors"):
                return TornFile(fd, name)
            return real_fdopen(fd, *args, **kwargs)

        def replace(src, dst, *args, **kwargs):
            if moment == "weights-before-rename" and Path(dst).name == "model.safetensors":
                stop_here(path=str(src), size=Path(src).stat().st_size)
            return real_replace(src, dst, *args, **kwargs)

        tempfile.mkstemp, os.fdopen, os.replace = mkstemp, fdopen, replace

    def arm_write_file(name: str) -> None:
        real = ck._write_file

        def write_file(path, data):
            if path.name == name:
                torn_write(path, data)
            real(path, data)

        ck._write_file = write_file

    def arm_commit_rename() -> None:
        real = os.rename

        def rename(src, dst, *args, **kwargs):
            if Path(src).name.startswith(".tmp-step-"):
                stop_here(path=str(src), asides=sorted(
                    p.name for p in Path(src).parent.glob(".tmp-old-*")))
            return real(src, dst, *args, **kwargs)

        os.rename = rename

    def arm_rmtree(contains: str) -> None:
        real = shutil.rmtree

        def rmtree(path, *args, **kwargs):
            path = Path(path)
            if contains in path.name and (path / "model.safetensors").is_file():
                (path / "model.safetensors").unlink()  # the first of its files to go
                stop_here(path=str(path), missing=str(path / "model.safetensors"))
            return real(path, *args, **kwargs)

        shutil.rmtree = rmtree

    weights = root / "model.safetensors"
    manager = CheckpointManager(root / "trainer", keep=2)
    if moment.startswith("weights-"):
        if moment != "weights-first-write":
            save_weights(weights, model_for(1), {"version": "1"})
        arm_atomic_write()
        save_weights(weights, model_for(2), {"version": "2"})
    elif moment in ("model-write", "manifest-write", "commit-rename"):
        save(manager, 1)
        if moment == "commit-rename":
            arm_commit_rename()
        else:
            arm_write_file("model.safetensors" if moment == "model-write" else "manifest.json")
        save(manager, 2)
    elif moment.startswith("resave-"):
        save(manager, 1)
        save(manager, 2)
        if moment == "resave-between-renames":
            arm_commit_rename()
        else:
            arm_rmtree("old-step-00000002")
        save(manager, 2, version=1)
    elif moment == "prune":
        save(manager, 1)
        save(manager, 2)
        arm_rmtree("step-00000001")
        save(manager, 3)
    else:
        sys.exit(f"unknown moment {moment!r}")
    print("save returned", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
