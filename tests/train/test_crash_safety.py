"""kill -9 at every risky moment of a save; what was saved before still loads, exactly.

Each test runs ``crash_child.py`` in a subprocess. The child commits some weights or
checkpoints, arms a fault-injection seam and starts one more save; the seam stops the
save at the chosen moment (after doing the part of the operation that precedes it),
writes ``marker.json`` and prints ``ready``. The parent then sends SIGKILL, checks on
disk that the kill landed mid-operation, loads, and checks that a later save plus the
start-up cleanup leave no ``.tmp-`` leftovers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from seqlab.io import remove_stale
from seqlab.train.checkpoint import CheckpointManager
from seqlab.weights_file import load_weights, save_weights

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("crash_child.py")
_spec = importlib.util.spec_from_file_location("crash_child", CHILD)
child = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(child)

# moment -> what must load afterwards: ("weights", version or None for no file) or
# ("checkpoint", step, version). A kill before a commit keeps the previous step; one
# after it (dropping the replaced copy, pruning) keeps the step just committed.
SURVIVOR = {
    "weights-mid-write": ("weights", 1),
    "weights-before-rename": ("weights", 1),
    "weights-first-write": ("weights", None),
    "model-write": ("checkpoint", 1, 0),
    "manifest-write": ("checkpoint", 1, 0),
    "commit-rename": ("checkpoint", 1, 0),
    "resave-between-renames": ("checkpoint", 2, 0),
    "resave-drop-old": ("checkpoint", 2, 1),
    "prune": ("checkpoint", 3, 0),
}
assert set(SURVIVOR) == set(child.MOMENTS)


def kill_at(moment: str, root: Path) -> dict:
    """Run the child until its seam fires, SIGKILL it there, return its marker."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.Popen([sys.executable, str(CHILD), moment, str(root)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        line = proc.stdout.readline()
        if line == "ready\n":
            proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
    finally:
        watchdog.cancel()
    assert line == "ready\n", f"the seam never fired: {line + out!r}\n{err}"
    assert proc.returncode == -signal.SIGKILL, err
    assert "save returned" not in out
    return json.loads((root / "marker.json").read_text())


def assert_killed_mid_operation(marker: dict) -> None:
    """What the seam did before blocking is on disk, under a ``.tmp-`` name."""
    path = Path(marker["path"])
    assert path.exists(), marker
    assert path.name.startswith(".tmp-") or path.parent.name.startswith(".tmp-"), marker
    if "size" in marker:  # a file written up to here
        assert path.stat().st_size == marker["size"], marker
        if "total" in marker:
            assert 0 < marker["size"] < marker["total"], marker
    if "missing" in marker:  # a directory deleted up to here
        assert not Path(marker["missing"]).exists() and any(path.iterdir()), marker


def assert_checkpoint(ckpt, step: int, version: int) -> None:
    assert ckpt.step == step
    expected = child.model_for(step, version)
    assert ckpt.model.keys() == expected.keys()
    for name, tensor in expected.items():
        assert ckpt.model[name].dtype == tensor.dtype and torch.equal(ckpt.model[name], tensor), name
    assert ckpt.metadata == {"version": str(version)}
    state = child.state_for(step, version)
    assert ckpt.state.keys() == state.keys()
    assert (ckpt.state["step"], ckpt.state["version"]) == (step, version)
    assert torch.equal(ckpt.state["moments"], state["moments"])
    assert torch.equal(ckpt.state["rng"], state["rng"])


def tmp_leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".tmp-"))


@pytest.mark.parametrize("moment", [m for m in child.MOMENTS if m.startswith("weights-")])
def test_kill_while_writing_run_weights(tmp_path, moment):
    marker = kill_at(moment, tmp_path)
    assert_killed_mid_operation(marker)
    weights = tmp_path / "model.safetensors"
    assert tmp_leftovers(tmp_path) == [Path(marker["path"]).name]

    _, version = SURVIVOR[moment]
    if version is None:
        assert not weights.exists()  # a first write leaves no torn file at the final name
    else:
        tensors, metadata = load_weights(weights)
        assert metadata == {"version": str(version)}
        expected = child.model_for(version)
        assert tensors.keys() == expected.keys()
        assert all(torch.equal(tensors[k], expected[k]) for k in expected)

    # The next start removes the leftover; the next save lands whole.
    assert remove_stale(tmp_path) == [Path(marker["path"])]
    save_weights(weights, child.model_for(3), {"version": "3"})
    assert tmp_leftovers(tmp_path) == []
    tensors, _ = load_weights(weights)
    assert torch.equal(tensors["w"], child.model_for(3)["w"])


@pytest.mark.parametrize("moment", [m for m in child.MOMENTS if not m.startswith("weights-")])
def test_kill_during_checkpoint_save_keeps_last_good_step(tmp_path, moment):
    marker = kill_at(moment, tmp_path)
    assert_killed_mid_operation(marker)
    directory = tmp_path / "trainer"
    _, step, version = SURVIVOR[moment]
    if moment == "resave-between-renames":
        # The seam fired between _commit's two renames: the old step-2 is set aside
        # and the new one is still a .tmp- directory; no step-00000002 exists.
        assert len(marker["asides"]) == 1 and not (directory / "step-00000002").exists()
    if moment == "prune":
        # Whatever is left of a pruned checkpoint is no longer under a committed name.
        assert sorted(p.name for p in directory.glob("step-*")) == ["step-00000002",
                                                                     "step-00000003"]
    assert tmp_leftovers(directory)  # the kill left something to clean up

    manager = CheckpointManager(directory, keep=2)
    assert manager.latest_step() == step
    assert_checkpoint(manager.load_latest(), step, version)

    # The next start cleans up without losing the survivor; the next save lands whole.
    manager.clean_stale()
    assert tmp_leftovers(directory) == []
    survivor = manager.load_latest()
    assert_checkpoint(survivor, step, version)
    assert survivor.path == directory / f"step-{step:08d}"
    child.save(manager, 9)
    assert tmp_leftovers(directory) == []
    assert [s for s, _ in manager.checkpoints()] == [9, step]
    assert sorted(p.name for p in directory.iterdir()) == [f"step-{step:08d}", "step-00000009"]
    assert_checkpoint(manager.load_latest(), 9, 0)
