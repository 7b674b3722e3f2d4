"""A torchrun worker for ``test_distributed.py``: ``seqlab train`` with a fault armed.

Usage (under torchrun): ``python dist_child.py CONFIG OUT [--fault KIND --rank R --step S]``

``--fault exit`` makes rank R die (``os._exit(1)``) in step S; ``--fault sigterm`` sends
rank R alone a SIGTERM there, as a scheduler preempting one node would. Either fires in
the first attempt only, so a worker group that torchrun restarts runs clean.
``--rows DIR`` records the example indices each rank trains on.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from seqlab import cli
from seqlab.train.trainer import Trainer


def arm(fault: str, rank: int, step: int) -> None:
    original = Trainer._train_step

    def train_step(self, *args, **kwargs):
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if first_attempt and self.ranks.rank == rank and self.step + 1 == step:
            if fault == "exit":
                os._exit(1)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    Trainer._train_step = train_step


def record_rows(folder: str) -> None:
    """Write, per rank, the example indices of every batch share the rank trains on."""
    from seqlab.train.distributed import ObjectiveLoss

    original = ObjectiveLoss.forward

    def forward(self, batch):
        rank = os.environ.get("RANK", "0")
        with open(os.path.join(folder, f"rank{rank}.jsonl"), "a") as f:
            f.write(json.dumps(batch.index.tolist()) + "\n")
        return original(self, batch)

    ObjectiveLoss.forward = forward


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("out")
    parser.add_argument("--fault", choices=["exit", "sigterm"])
    parser.add_argument("--rank", type=int, default=1)
    parser.add_argument("--step", type=int, default=3)
    parser.add_argument("--rows", help="folder to record each rank's example indices in")
    args = parser.parse_args()
    if args.rows:
        record_rows(args.rows)
    if args.fault:
        arm(args.fault, args.rank, args.step)
    sys.exit(cli.main(["train", args.config, "--out", args.out, "-q"]))
