"""Training many configs on 2 ranks in one torchrun launch.

Starting torchrun, two Python processes, torch and a process group costs several seconds
per launch; the conformance suites train a dozen configs each, so they train them all in
one launch: ``train_all`` writes the configs and runs this module under torchrun, which
joins one process group and trains each config in turn through the ``seqlab train``
command (the Trainer uses a process group that is already formed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def train_all(configs: dict, folder: Path, timeout: int = 600) -> dict[str, tuple[Path, str | None]]:
    """Train each ``name -> RunConfig`` on 2 ranks into ``folder/name``; returns each
    name's run directory and, when it failed, the launch's error output."""
    jobs = []
    for name, config in configs.items():
        path = folder / f"{name}.yaml"
        path.write_text(config.to_yaml())
        jobs.append({"name": name, "config": str(path), "out": str(folder / name)})
    (folder / "jobs.json").write_text(json.dumps(jobs))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", __file__, str(folder / "jobs.json")],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1",
                               "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    results = {}
    for job in jobs:
        failed = Path(job["out"] + ".failed")
        error = None
        if done.returncode != 0 or failed.exists():
            error = (failed.read_text() if failed.exists() else "") + done.stderr[-3000:]
        results[job["name"]] = (Path(job["out"]), error)
    return results


def _worker(jobs_file: str) -> int:
    import torch.distributed as dist

    from seqlab.cli import main

    dist.init_process_group("gloo")
    failures = 0
    for job in json.loads(Path(jobs_file).read_text()):
        code = main(["train", job["config"], "--out", job["out"], "-q"])
        if code != 0:
            failures += 1
            Path(job["out"] + ".failed").write_text(f"seqlab train exited with {code}\n")
    dist.destroy_process_group()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
