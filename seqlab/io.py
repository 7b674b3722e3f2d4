"""Crash-safe file writes.

A file is written to a temporary name in the same directory, flushed to disk, then
renamed over the target, so a crash at any instant leaves either the old file or the
new one, never a torn one. Temporary names start with ``.tmp-`` so that stale ones
can be recognised and removed at the next start.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

TMP_PREFIX = ".tmp-"

logger = logging.getLogger("seqlab")


def remove_path(path: Path) -> None:
    """Remove a file, a symbolic link, or a directory tree."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def remove_stale(directory: Path) -> list[Path]:
    """Remove the ``.tmp-`` leftovers of interrupted writes directly inside ``directory``.

    Call it at start-up, while no other process writes there: a write in progress is a
    ``.tmp-`` entry too. One that cannot be removed is logged and kept.

    Returns:
        What was removed, sorted by name.
    """
    if not directory.is_dir():
        return []
    removed = []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(TMP_PREFIX):
            try:
                remove_path(entry)
            except OSError as exc:
                logger.warning("could not remove stale %s: %s", entry, exc)
                continue
            removed.append(entry)
    return removed


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename).

    Raises:
        OSError: as raised by the file system, with ``path`` as its file name (a
            file object's write names no file, and the temporary name is gone); the
            target is untouched and the temporary file is removed. ``ENOSPC`` (disk
            full) keeps its errno.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes owner-only files; give the usual mode
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename in (None, tmp):
            raise OSError(exc.errno, exc.strerror, str(path)) from exc  # keeps the subclass
        raise
    fsync_dir(path.parent)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
