"""Scaling benchmark: training-step time, per-token decode time and peak memory vs length.

Every mixer is built into the same causal language model (equal ``d_model``, ``n_layers``,
``n_heads``) and measured at each length T. Each (mixer, length) measurement runs in a
fresh subprocess, so that

- its peak memory is its own (a process's high-water mark only ever grows),
- an out-of-memory kill or a hang (``timeout_s``) ends that measurement, not the run.

A failed measurement becomes a row (``OOM``, ``timeout`` or ``error: ...``); after an
OOM or a timeout the mixer's longer lengths are skipped, since they would fail too.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from seqlab.config import RunConfig
from seqlab.infer.generate import SamplingConfig, next_token
from seqlab.nn import MIXERS
from seqlab.tasks.causal_lm import build_language_model
from seqlab.train.optim import build_optimizer
from seqlab.train.runtime import resolve_device

DEFAULT_LENGTHS = [256 * 2 ** i for i in range(8)]  # 256 .. 32768
COLUMNS = ["mixer", "length", "params", "step_seconds", "token_seconds", "peak_mb", "status",
           "device"]
STEP_REPEATS = 3  # timed training steps per measurement, after one warm-up step
STOPPING = ("OOM", "timeout")  # statuses after which a mixer's longer lengths are skipped
_RESULT = "SCALING_RESULT "  # prefix of the child's one result line on stdout
_PANELS = [("step_seconds", "seconds per training step"), ("token_seconds", "seconds per token"),
           ("peak_mb", "peak training memory (MB)")]


def run_scaling(mixers: list[str], lengths: list[int], *, d_model: int = 256,
                n_layers: int = 4, n_heads: int = 4, batch_size: int = 1, vocab_size: int = 259,
                device: str = "auto", mixer_options: dict | None = None, decode_tokens: int = 16,
                out_dir: Path, timeout_s: float | None = None,
                progress: Callable[[str], None] | None = None) -> list[dict]:
    """Measure every mixer at every length; write ``scaling.{csv,md,png}`` into ``out_dir``.

    Args:
        mixers: registry names; one that cannot be built (unknown name, a stub) gives
            ``error: ...`` rows and the run goes on.
        lengths: sequence lengths T, measured in increasing order (``DEFAULT_LENGTHS``:
            256 .. 32768).
        mixer_options: ``{mixer name: options}``, as ``model.mixer_options`` in a config.
        decode_tokens: single-token steps timed after prefilling T tokens.
        timeout_s: wall-clock limit of one (mixer, length) measurement.
        progress: called with one line per finished measurement.

    Returns:
        One dict per (mixer, length) with the keys in ``COLUMNS``.
    """
    if not mixers:
        raise ValueError("run_scaling needs at least one mixer")
    if not lengths or min(lengths) <= 0:
        raise ValueError(f"lengths must be a non-empty list of positive ints, got {lengths}")
    for name, value in (("batch_size", batch_size), ("decode_tokens", decode_tokens)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    lengths, dev = sorted(set(lengths)), resolve_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = _header(dev, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                     batch_size=batch_size, vocab_size=vocab_size, decode_tokens=decode_tokens)
    rows: list[dict] = []
    for name in mixers:
        model = {"mixer": name, "d_model": d_model, "n_layers": n_layers, "n_heads": n_heads,
                 # Decoding goes decode_tokens past the longest prefill; stay inside any limit.
                 "context_length": max(lengths) + decode_tokens, "vocab_size": vocab_size,
                 "mixer_options": {k: v for k, v in (mixer_options or {}).items() if k == name}}
        params, failure = None, None
        try:  # fails for an unknown name, bad options, a mixer still being written
            model["position"] = "rope" if MIXERS.get(name).uses_positions else "none"
            lm = build_language_model(RunConfig.from_dict({"model": model}))
            params = sum(p.numel() for p in lm.parameters())
        except Exception as e:
            failure = f"error: {_one_line(e)}"
        for T in lengths:
            if failure is None:
                job = {"config": {"model": model}, "length": T, "batch_size": batch_size,
                       "device": str(dev), "decode_tokens": decode_tokens,
                       "threads": torch.get_num_threads()}
                result = _measure_isolated(job, timeout_s)
                if result["status"] in STOPPING:
                    failure = f"{result['status']} (skipped)"
            else:
                result = {"status": failure}
            rows.append({"mixer": name, "length": T, "params": params, "step_seconds": None,
                         "token_seconds": None, "peak_mb": None, "device": str(dev), **result})
            if progress is not None:
                progress(_summary(rows[-1]))
            write_tables(rows, out_dir, header)  # partial results survive an interrupted run
    plot_scaling(rows, out_dir / "scaling.png")
    return rows


def _summary(row: dict) -> str:
    line = f"{row['mixer']} T={row['length']}: {row['status']}"
    if row["status"] == "ok":
        line += (f", step {row['step_seconds']:.4g}s, token {row['token_seconds'] * 1e3:.3g}ms,"
                 f" peak {row['peak_mb']:.1f}MB")
    return line


def measure(job: dict) -> dict:
    """One (mixer, length) measurement in this process (the subprocess's body).

    ``peak_mb`` is the memory the training steps add on top of the built model, its
    optimizer and its inputs: CUDA's peak allocation above that baseline, or on CPU the
    growth of this process's peak resident set (``VmHWM``) above its resident set then.
    """
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    device = torch.device(job["device"])
    config = RunConfig.from_dict(job["config"])
    model = build_language_model(config).to(device)
    optimizer = build_optimizer(model, config.train)
    B, T = job["batch_size"], job["length"]
    ids = torch.randint(config.model.vocab_size, (B, T + 1), device=device)
    x, y = ids[:, :-1], ids[:, 1:]  # (B, T) inputs and next-token targets

    def train_step() -> None:
        model(x, targets=y).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # A one-token backward first, so the autograd engine's one-off setup is not counted.
    model(x[:, :1], targets=y[:, :1]).loss.backward()
    optimizer.zero_grad(set_to_none=True)
    baseline = _memory_baseline(device)
    train_step()  # warm-up
    step_seconds = statistics.median(_seconds(train_step, device) for _ in range(STEP_REPEATS))
    peak_mb = _memory_peak(device, baseline)
    token_seconds = _token_seconds(model, x, job["decode_tokens"], device)
    return {"step_seconds": step_seconds, "token_seconds": token_seconds, "peak_mb": peak_mb,
            "status": "ok"}


@torch.no_grad()
def _token_seconds(model, prompt: torch.Tensor, n: int, device: torch.device) -> float:
    """Median seconds of one decode step after prefilling ``prompt`` through the state."""
    model.eval()
    out = model(prompt, model.init_state(prompt.shape[0], device))

    def step() -> None:
        nonlocal out
        token = next_token(out.logits[:, -1], SamplingConfig(greedy=True), None)  # (B,)
        out = model(token[:, None], out.state)

    return statistics.median(_seconds(step, device) for _ in range(n))


def _seconds(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _memory_baseline(device: torch.device) -> float:
    """Bytes in use now, after resetting the peak counter so it starts from here."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:  # Linux: reset VmHWM to the current resident set (clear_refs value 5)
        Path("/proc/self/clear_refs").write_text("5")
        return _rss_bytes("VmRSS")
    except OSError:
        return _rss_bytes("VmHWM")


def _memory_peak(device: torch.device, baseline: float) -> float:
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _rss_bytes("VmHWM")
    return max(peak - baseline, 0.0) / 2 ** 20


def _rss_bytes(key: str) -> float:
    """``VmRSS`` or ``VmHWM`` (peak) from /proc. Not ``ru_maxrss`` where /proc exists: a
    child started by (v)fork + exec inherits its parent's high-water mark there."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1)) * 1024.0
    except (OSError, AttributeError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS


def _failure_status(error: BaseException) -> str:
    """``OOM`` for any out-of-memory error (CUDA, CPU allocator, Python), else ``error: ...``."""
    oom = isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)) or (
        isinstance(error, RuntimeError)
        and re.search(r"out of memory|can't allocate memory", str(error), re.I))
    return "OOM" if oom else f"error: {_one_line(error)}"


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _measure_isolated(job: dict, timeout_s: float | None) -> dict:
    """Run ``measure(job)`` in a fresh Python process and read back its result."""
    code = "from seqlab.bench.scaling import _child_main; _child_main()"
    root = str(Path(__file__).resolve().parents[2])  # the seqlab this process imported
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get(
        "PYTHONPATH")]))}
    try:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(job)], capture_output=True,
                              text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    return _parse_child(proc)


def _parse_child(proc: subprocess.CompletedProcess) -> dict:
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT):
            return json.loads(line[len(_RESULT):])
    if proc.returncode == -signal.SIGKILL:  # the kernel's OOM killer
        return {"status": "OOM"}
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": f"error: exit {proc.returncode}: {last}"}


def _child_main() -> None:
    """Subprocess entry point: one measurement, one result line on stdout."""
    try:
        result = measure(json.loads(sys.argv[1]))
    except Exception as e:  # MemoryError is an Exception too
        result = {"status": _failure_status(e)}
    sys.stdout.write(_RESULT + json.dumps(result) + "\n")
    sys.stdout.flush()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _header(device: torch.device, **settings) -> str:
    memory = ("CUDA peak allocation above the built model" if device.type == "cuda" else
              "growth of the subprocess's peak RSS (VmHWM) above the built model")
    knobs = ", ".join(f"{k} {v}" for k, v in settings.items())
    return (f"# Scaling benchmark\n\n"
            f"device: {device} ({_device_name(device)}), torch {torch.__version__}, "
            f"torch.get_num_threads()={torch.get_num_threads()}\n\n"
            f"{knobs}. Step: forward + backward + AdamW, median of {STEP_REPEATS} after a "
            f"warm-up. Token: median single-token step after prefilling T tokens. "
            f"Peak MB: {memory}; one fresh subprocess per row.\n")


def _fmt(value, scale: float = 1.0, spec: str = ".4g") -> str:
    return "—" if value is None else format(value * scale if scale != 1.0 else value, spec)


def write_tables(rows: list[dict], out_dir: Path, header: str) -> None:
    """``scaling.csv`` (seconds, MB, empty when not measured) and ``scaling.md``."""
    with open(out_dir / "scaling.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| mixer | T | params | step (s) | token (ms) | peak (MB) | status |",
             "|---|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r['mixer']} | {r['length']} | {_fmt(r['params'], spec=',')} | "
              f"{_fmt(r['step_seconds'])} | {_fmt(r['token_seconds'], 1e3, '.3g')} | "
              f"{_fmt(r['peak_mb'], spec='.1f')} | {r['status']} |" for r in rows]
    (out_dir / "scaling.md").write_text(header + "\n" + "\n".join(lines) + "\n", encoding="utf-8")


def plot_scaling(rows: list[dict], path: Path) -> None:
    """Three log-log panels (step time, token time, peak memory vs T), a line per mixer."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    fig = Figure(figsize=(15, 4.5), layout="constrained")
    for ax, (key, label) in zip(fig.subplots(1, 3), _PANELS):
        for name in dict.fromkeys(r["mixer"] for r in rows):
            points = [(r["length"], r[key]) for r in rows
                      if r["mixer"] == name and r["status"] == "ok" and (r[key] or 0) > 0]
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set(xlabel="sequence length T", ylabel=label, title=label)
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)
