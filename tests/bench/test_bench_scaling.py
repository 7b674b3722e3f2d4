import csv
import subprocess

import pytest
import torch

from seqlab.bench import scaling
from seqlab.bench.scaling import COLUMNS, run_scaling

TINY = dict(d_model=32, n_layers=1, n_heads=4, decode_tokens=2)


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread: two threads on two shared, busy cores are hundreds of times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def in_process(monkeypatch):
    """Measure in this process instead of one subprocess per row (saves ~2 s a row)."""
    monkeypatch.setattr(scaling, "_measure_isolated", lambda job, timeout_s: scaling.measure(job))


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_tiny_run_writes_csv_markdown_and_plot(tmp_path, in_process):
    rows = run_scaling(["attention", "lstm"], [16, 32], out_dir=tmp_path, **TINY)
    assert [(r["mixer"], r["length"]) for r in rows] == [
        ("attention", 16), ("attention", 32), ("lstm", 16), ("lstm", 32)]
    for row in rows:
        assert row["status"] == "ok"
        assert row["params"] > 0 and row["step_seconds"] > 0 and row["token_seconds"] > 0
        assert row["peak_mb"] >= 0  # RSS growth; a warm process may reuse freed memory
    table = read_csv(tmp_path / "scaling.csv")
    assert set(COLUMNS) <= set(table[0]) and len(table) == 4
    assert float(table[0]["step_seconds"]) > 0
    md = (tmp_path / "scaling.md").read_text()
    assert "get_num_threads()=1" in md and "| lstm | 32 |" in md
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"


def test_subprocess_measurement_reports_its_own_peak_memory(tmp_path):
    (row,) = run_scaling(["lstm"], [16], out_dir=tmp_path, **TINY)
    assert row["status"] == "ok", row["status"]
    assert row["step_seconds"] > 0 and row["token_seconds"] > 0 and row["peak_mb"] > 0


def test_unknown_mixer_is_an_error_row_and_the_run_goes_on(tmp_path, in_process):
    rows = run_scaling(["atention", "lstm"], [16], out_dir=tmp_path, **TINY)
    assert rows[0]["status"].startswith("error: ConfigError: unknown mixer 'atention'")
    assert "did you mean 'attention'" in rows[0]["status"]
    assert rows[0]["params"] is None and rows[0]["step_seconds"] is None
    assert rows[1]["status"] == "ok"
    assert read_csv(tmp_path / "scaling.csv")[0]["status"].startswith("error:")


def test_oom_is_recorded_and_longer_lengths_of_that_mixer_are_skipped(tmp_path, monkeypatch):
    calls = []

    def fake(job, timeout_s):
        mixer, T = job["config"]["model"]["mixer"], job["length"]
        calls.append((mixer, T))
        if mixer == "lstm" and T >= 32:
            return {"status": "OOM"}
        return {"step_seconds": 0.1, "token_seconds": 0.01, "peak_mb": 1.0, "status": "ok"}

    monkeypatch.setattr(scaling, "_measure_isolated", fake)
    rows = run_scaling(["lstm", "attention"], [64, 16, 32], out_dir=tmp_path, **TINY)
    status = {(r["mixer"], r["length"]): r["status"] for r in rows}
    assert status == {("lstm", 16): "ok", ("lstm", 32): "OOM", ("lstm", 64): "OOM (skipped)",
                      ("attention", 16): "ok", ("attention", 32): "ok", ("attention", 64): "ok"}
    assert ("lstm", 64) not in calls
    assert "| lstm | 64 |" in (tmp_path / "scaling.md").read_text()


def test_timeout_kills_the_measurement_and_skips_longer_lengths(tmp_path):
    rows = run_scaling(["lstm"], [16, 32], out_dir=tmp_path, timeout_s=0.01, **TINY)
    assert [r["status"] for r in rows] == ["timeout", "timeout (skipped)"]


@pytest.mark.parametrize("error, status", [
    (MemoryError(), "OOM"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"), "OOM"),
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "OOM"),
    (NotImplementedError("s4d: to do\nmore"), "error: NotImplementedError: s4d: to do"),
])
def test_failures_in_the_child_are_classified(error, status):
    assert scaling._failure_status(error) == status


def test_a_child_killed_by_sigkill_is_oom_and_a_crash_is_an_error():
    killed = subprocess.CompletedProcess([], -9, stdout="", stderr="")
    crashed = subprocess.CompletedProcess([], 1, stdout="", stderr="Traceback\nImportError: boom\n")
    assert scaling._parse_child(killed) == {"status": "OOM"}
    assert scaling._parse_child(crashed) == {"status": "error: exit 1: ImportError: boom"}


def test_bad_arguments_raise_up_front(tmp_path):
    with pytest.raises(ValueError, match="lengths"):
        run_scaling(["lstm"], [], out_dir=tmp_path)
    with pytest.raises(ValueError, match="decode_tokens"):
        run_scaling(["lstm"], [16], decode_tokens=0, out_dir=tmp_path)
