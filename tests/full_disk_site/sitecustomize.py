"""A disk that fills up, for ``tests/test_cli_errors.py``: put this folder first on PYTHONPATH.

With ``SEQLAB_TEST_FULL_DISK=DIR:BYTES`` set, writes into files under ``DIR`` succeed
until they add up to ``BYTES``; the write that would pass that raises
``OSError(ENOSPC)``, as a full disk does. Every Python-level way to write a file is
covered: ``open`` and ``io.open`` (so ``Path.write_*``, ``os.fdopen`` and every file
object) and ``os.write``. Without the variable this file does nothing. Another
``sitecustomize`` further down ``sys.path`` still runs.
"""

import builtins
import errno
import importlib.machinery
import importlib.util
import io
import os
import sys


def _install(directory: str, quota: int) -> None:
    directory = os.path.realpath(directory)
    used = [0]
    real_open, real_write = io.open, os.write

    def inside(file) -> bool:
        try:
            if isinstance(file, int):
                file = os.readlink(f"/proc/self/fd/{file}")
            path = os.path.realpath(os.fspath(file))
        except (OSError, TypeError):
            return False
        return path == directory or path.startswith(directory + os.sep)

    def charge(n: int) -> None:
        if used[0] + n > quota:
            # As a file object's write raises it: with the errno, without a file name.
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        used[0] += n

    class FullDiskFile:
        """A writable file object whose writes draw on the quota."""

        def __init__(self, f):
            self._f = f

        def write(self, data):
            charge(len(data.encode() if isinstance(data, str) else memoryview(data).cast("B")))
            return self._f.write(data)

        def writelines(self, lines):
            for line in lines:
                self.write(line)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

        def __iter__(self):
            return iter(self._f)

        def __getattr__(self, name):
            return getattr(self._f, name)

    def open_(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if any(c in mode for c in "wax+") and inside(file):
            return FullDiskFile(f)
        return f

    def write(fd, data):
        if inside(fd):
            charge(len(data))
        return real_write(fd, data)

    builtins.open = io.open = open_
    os.write = write


def _chain() -> None:
    """Run the ``sitecustomize`` this one shadows, if there is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


_spec = os.environ.get("SEQLAB_TEST_FULL_DISK")
if _spec:
    _dir, _, _bytes = _spec.rpartition(":")
    _install(_dir, int(_bytes))
_chain()
