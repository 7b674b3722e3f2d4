"""``seqlab data prepare``: tokenise a text corpus once, in parallel processes, into
memory-mapped shards (``seqlab.data.shards``) that training reads lazily.

The corpus is what a config's ``text`` source would read (its files, order, cap and
tokenizer), so ``data: {source: shards, path: DIR}`` trains on the very stream
``data: {source: text, ...}`` would have built in memory. The files are split into
contiguous parts of about equal size; each worker process encodes its part one file at
a time and writes shards of at most ``shard_tokens`` ids, so no process ever holds more
than one file and one shard buffer. ``index.json`` is written last: a directory without
one is an unfinished preparation, which the next run clears and redoes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from seqlab.data.shards import DTYPES, FORMAT, INDEX_FILE, SHARD_TOKENIZER_FILE, VERSION, dtype_for
from seqlab.data.text import byte_budget, encode_file
from seqlab.data.tokenizer_base import load_tokenizer
from seqlab.errors import ConfigError, DataError
from seqlab.io import atomic_write, file_sha256, remove_path
from seqlab.tasks import OBJECTIVES

logger = logging.getLogger("seqlab")

DEFAULT_SHARD_TOKENS = 1 << 27  # 128 Mi ids: 256 MiB of uint16 per shard


def prepare_shards(config, out: str | os.PathLike, *, workers: int | None = None,
                   shard_tokens: int = DEFAULT_SHARD_TOKENS) -> dict:
    """Write ``config``'s text corpus to ``out`` as token shards; returns the index.

    Args:
        config: a RunConfig whose ``data.source`` is ``text`` (its ``tokenizer`` section
            says how to encode; a vocabulary is learned from the files when needed).
        out: the directory to write; it must not hold a finished preparation.
        workers: encoding processes (default: the CPUs, at most one per file part).
        shard_tokens: the most ids per shard file.

    Raises:
        ConfigError: the config does not read a text source, or bad worker/shard counts.
        DataError: ``out`` already holds prepared shards, or the files cannot be read.
    """
    if config.data.source != "text":
        raise ConfigError(f"seqlab data prepare encodes a text corpus (data.source: text); this "
                          f"config's data.source is {config.data.source!r}")
    if shard_tokens < 1 or (workers is not None and workers < 1):
        raise ConfigError("--workers and --shard-tokens must be positive")
    out = Path(out)
    if (out / INDEX_FILE).exists():
        raise DataError(f"{out} already holds prepared shards ({INDEX_FILE}); choose another "
                        "--out or delete it")
    _clear_unfinished(out)
    started = time.perf_counter()
    objective = OBJECTIVES.get(config.task).cls(config)
    files = objective.source.files()
    tokenizer = objective.build_tokenizer()
    tokenizer.save(out / SHARD_TOKENIZER_FILE)
    plan = byte_budget(files, config.data.max_bytes)
    dtype = dtype_for(tokenizer.vocab_size)
    parts = _split(plan, workers or os.cpu_count() or 1)
    jobs = [(k, part, str(out), dtype, shard_tokens, k == 0) for k, part in enumerate(parts)]
    if len(jobs) == 1:
        results = [_encode_part(jobs[0])]
    else:
        # spawn, not fork: the parent has torch's threads running.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=len(jobs), mp_context=context) as pool:
            results = list(pool.map(_encode_part, jobs))
    shards = [shard for part in results for shard in part]
    total = sum(s["tokens"] for s in shards)
    index = {"format": FORMAT, "version": VERSION, "dtype": dtype,
             "vocab_size": tokenizer.vocab_size, "tokenizer": SHARD_TOKENIZER_FILE,
             "tokens": total, "documents": len(plan), "shards": shards,
             "made_from": {"paths": config.data.path, "files": len(plan),
                           "bytes": sum(min(p.stat().st_size, limit or p.stat().st_size)
                                        for p, limit in plan),
                           "seed": config.seed, "shuffle_files": config.data.shuffle_files,
                           "max_bytes": config.data.max_bytes, "tokenizer_kind": tokenizer.kind,
                           "workers": len(jobs), "seconds": round(time.perf_counter() - started, 2)}}
    atomic_write(out / INDEX_FILE, json.dumps(index, indent=1))
    return index


def _clear_unfinished(out: Path) -> None:
    """Remove what an interrupted preparation left in ``out`` (shards, tokenizer)."""
    if not out.exists():
        out.mkdir(parents=True)
        return
    if not out.is_dir():
        raise DataError(f"--out {out} is a file, not a directory")
    for path in out.iterdir():
        if path.name.startswith("tokens-") or path.name == SHARD_TOKENIZER_FILE or \
                path.name.endswith(".tmp"):
            remove_path(path)
            logger.info("removed %s left by an unfinished preparation", path)


def _split(plan: list, n: int) -> list[list]:
    """Contiguous parts of ``plan`` with about equal bytes each (at most ``n``, none empty)."""
    sizes = np.array([min(p.stat().st_size, limit if limit is not None else p.stat().st_size)
                      for p, limit in plan], dtype=np.float64)
    n = max(1, min(n, len(plan)))
    ends = np.cumsum(sizes)
    cuts = np.searchsorted(ends, ends[-1] * np.arange(1, n) / n, side="left") + 1
    bounds = sorted(set([0, *cuts.tolist(), len(plan)]))
    return [plan[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def _encode_part(job) -> list[dict]:
    """Worker: encode one part's files, each followed by ``eos`` (the first part starts
    with ``eos`` too), into shards ``tokens-KKKKK-JJJJJ.bin``."""
    k, part, out, dtype, shard_tokens, leading_eos = job
    out = Path(out)
    tokenizer = load_tokenizer(out / SHARD_TOKENIZER_FILE)
    eos = np.array([tokenizer.eos_id], dtype=DTYPES[dtype])
    writer = _ShardWriter(out, k, DTYPES[dtype], shard_tokens)
    try:
        if leading_eos:
            writer.write(eos)
        for path, limit in part:
            ids = encode_file(Path(path), tokenizer, limit)
            if ids.size and int(ids.max()) >= tokenizer.vocab_size:
                raise DataError(f"{path}: the tokenizer gave id {int(ids.max())} outside its "
                                f"vocabulary of {tokenizer.vocab_size}")
            writer.write(ids.astype(DTYPES[dtype], copy=False))
            writer.write(eos)
    finally:
        writer.close()
    return writer.shards


class _ShardWriter:
    """Appends ids to shard files of at most ``limit`` ids each."""

    def __init__(self, out: Path, part: int, dtype: np.dtype, limit: int):
        self.out, self.part, self.dtype, self.limit = out, part, dtype, limit
        self.shards: list[dict] = []
        self.file = None
        self.count = 0

    def write(self, ids: np.ndarray) -> None:
        while ids.size:
            if self.file is None:
                name = f"tokens-{self.part:05d}-{len(self.shards):05d}.bin"
                self.file = open(self.out / name, "wb")
                self.name, self.count = name, 0
            take = min(ids.size, self.limit - self.count)
            self.file.write(ids[:take].tobytes())
            self.count += take
            ids = ids[take:]
            if self.count == self.limit:
                self._finish()

    def _finish(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.file = None
        self.shards.append({"file": self.name, "tokens": self.count,
                            "sha256": file_sha256(self.out / self.name)})

    def close(self) -> None:
        if self.file is not None:
            if self.count:
                self._finish()
            else:
                self.file.close()
                (self.out / self.name).unlink()
                self.file = None
