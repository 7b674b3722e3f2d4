"""metrics.jsonl: one JSON object per log line."""

from __future__ import annotations

import json
from pathlib import Path

from seqlab.io import atomic_write


class MetricsLog:
    """Append-only JSON lines; on resume, lines past the resumed step are dropped so a
    crash between a log line and the next checkpoint leaves no duplicate steps."""

    def __init__(self, path: Path):
        self.path = path

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [line for line in self.read() if line.get("step", 0) <= step]
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a crash
        return records
