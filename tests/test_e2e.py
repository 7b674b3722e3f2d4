"""End-to-end runs of the real command line (slow: a few seconds each)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from seqlab.train.checkpoint import CheckpointManager

SEQLAB = [sys.executable, "-m", "seqlab"]


@pytest.mark.slow
def test_quickstart_leaves_a_run_that_generate_and_eval_accept(tmp_path):
    out = tmp_path / "qs"
    small = ["--set", "train.steps=20", "--set", "train.eval_every=10", "--set",
             "data.max_bytes=300000", "--set", "train.eval_batches=2"]
    proc = subprocess.run(SEQLAB + ["quickstart", "--out", str(out), *small, "-q"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bits_per_byte:" in proc.stdout and "sample:" in proc.stdout
    gen = subprocess.run(SEQLAB + ["generate", str(out), "--prompt", "import ", "--max-new-tokens",
                                   "20", "--seed", "0", "-q"], capture_output=True, text=True)
    assert gen.returncode == 0 and gen.stdout.startswith("import ")
    ev = subprocess.run(SEQLAB + ["eval", str(out), "-q"], capture_output=True, text=True)
    assert ev.returncode == 0 and "perplexity:" in ev.stdout


def endless_training(tmp_path, *, save_every: int, until: int, **popen):
    """``seqlab train`` of a tiny model for 100000 steps in a child process, returned
    once a checkpoint at step ``until`` or later exists; with the config file and the
    run's checkpoint manager."""
    (tmp_path / "data.txt").write_text("a stream of text for a tiny model. " * 300)
    config = {"model": {"preset": "gpt-tiny", "d_model": 32, "n_layers": 1, "context_length": 16},
              "data": {"path": str(tmp_path / "data.txt")},
              "train": {"steps": 100000, "batch_size": 4, "eval_every": 1000,
                        "save_every": save_every, "progress": False}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    child = subprocess.Popen(SEQLAB + ["train", str(tmp_path / "c.yaml"), "--out",
                                       str(tmp_path / "run")], **popen)
    manager = CheckpointManager(tmp_path / "run" / "trainer")
    deadline = time.time() + 120
    while (manager.latest_step() or 0) < until and time.time() < deadline:
        time.sleep(0.05)
    return child, tmp_path / "c.yaml", manager


@pytest.mark.slow
def test_kill_9_during_training_then_resume(tmp_path):
    child, config, manager = endless_training(tmp_path, save_every=1, until=5,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "run"
    os.kill(child.pid, signal.SIGKILL)  # lands at an arbitrary point, often mid-save
    child.wait()
    killed_at = manager.load_latest().step
    assert killed_at >= 5
    resumed = subprocess.run(SEQLAB + ["train", str(config), "--out", str(run),
                                       "--resume", "--set", f"train.steps={killed_at + 3}", "-q"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert manager.load_latest().step == killed_at + 3
    assert not [p for p in (run / "trainer").iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow
def test_sigterm_finishes_the_step_saves_and_exits(tmp_path):
    """What a scheduler or torchrun sends before killing: the run saves where it stopped."""
    child, _, manager = endless_training(tmp_path, save_every=50, until=50,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 130, err[-2000:]  # interrupted, not killed (-15)
    stopped = int(out.split("interrupted at step ")[1].split(";")[0])
    assert stopped >= 50 and manager.load_latest().step == stopped and "SIGTERM" in err
    assert "Traceback" not in err
