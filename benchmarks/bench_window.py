"""Sliding-window vs full causal attention, one mixer layer (what the window changes).

Each (layer, T) is measured in a fresh subprocess: forward + backward time (median
of 3 after a warm-up) and the growth of peak resident memory during those steps
(VmHWM after resetting it), plus the time of one decoding step after T tokens.
Layers: d_model 256, 4 heads, rotary positions, window 256, batch 1, 1 thread.

Full causal attention is measured twice: with torch's fused scaled_dot_product_attention
(seqlab's default kernel; its CPU flash path keeps memory O(T)) and with the scores
materialised as a (B, H, T, T) matrix (seqlab's ``naive`` kernel: softmax(QK^T) V, what
Hugging Face's ``eager`` attention and nanoGPT without flash compute). The second is
given an address-space limit (``--tt-limit-gb``): past it the row says OOM.

    python benchmarks/bench_window.py [--quick] [--tt-limit-gb 16]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import _common
from _common import markdown_table, parse_args, report

CHILD = r"""
import json, resource, sys, time, torch
from seqlab.nn.attention import Attention
from seqlab.nn.local_attention import WindowAttention
from seqlab.nn.positions import RotaryPosition
torch.set_num_threads(1)
kind, T, limit_gb = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
if limit_gb > 0:
    resource.setrlimit(resource.RLIMIT_AS, (int(limit_gb * 2 ** 30),) * 2)
rope = RotaryPosition(64)
if kind == "window":
    layer = WindowAttention(256, 4, window=256, position=rope)
else:
    layer = Attention(256, 4, position=rope, kernel="naive" if kind == "attention_tt" else "sdpa")
x = torch.randn(1, T, 256, requires_grad=True)
def step():
    y, _ = layer(x)
    y.sum().backward()
def status():
    lines = open("/proc/self/status").read().splitlines()
    return {l.split(":")[0]: int(l.split()[1]) for l in lines if l.startswith(("VmHWM", "VmRSS"))}
step()
open("/proc/self/clear_refs", "w").write("5")  # reset the peak
base = status()["VmRSS"]
times = []
for _ in range(3):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
peak = (status()["VmHWM"] - base) / 1024
with torch.no_grad():
    state = layer.init_state(1)
    _, state = layer(x.detach(), state)
    token = torch.randn(1, 1, 256)
    decode = []
    for _ in range(9):
        t = time.perf_counter(); _, state = layer(token, state); decode.append(time.perf_counter() - t)
print(json.dumps({"step": sorted(times)[1], "peak_mb": peak, "token_ms": 1e3 * sorted(decode)[4]}))
"""


LAYERS = {"attention": "attention (fused SDPA)", "attention_tt": "attention (T x T scores)",
          "window": "window_attention"}


def measure(kind: str, length: int, limit_gb: float = 0.0) -> dict:
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", CHILD, kind, str(length),
                           str(limit_gb)], capture_output=True, text=True, cwd=_common.ROOT)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        oom = proc.returncode < 0 or re.search(r"out of memory|can't allocate|MemoryError", last)
        return {"error": "OOM" if oom else last}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratio(a: dict, b: dict, key: str) -> str:
    if "error" in a or "error" in b:
        return a.get("error") or b["error"]
    return f"{a[key] / max(b[key], 1e-9):.2f}x"


def main() -> None:
    def extra(p):
        p.add_argument("--tt-limit-gb", type=float, default=16.0,
                       help="address-space limit of the T x T attention runs (0: none)")

    args = parse_args(__doc__.splitlines()[0], rounds=1, iters=3, warmup=1, extra=extra)
    limit = args.tt_limit_gb
    lengths = [1024, 4096] if args.quick else [1024, 4096, 16384]
    rows, ratios = [], []
    for length in lengths:
        r = {kind: measure(kind, length, limit if kind == "attention_tt" else 0.0)
             for kind in LAYERS}
        for kind, name in LAYERS.items():
            m = r[kind]
            rows.append([name, length, f"{m.get('step', float('nan')):.3f}",
                         f"{m.get('peak_mb', float('nan')):.0f}",
                         f"{m.get('token_ms', float('nan')):.2f}", m.get("error", "ok")])
        w = r["window"]
        ratios.append([length, ratio(r["attention"], w, "step"), ratio(r["attention"], w, "peak_mb"),
                       ratio(r["attention_tt"], w, "step"), ratio(r["attention_tt"], w, "peak_mb")])
    report("bench_window", "Sliding-window vs full causal attention (one layer, CPU)", args, [
        markdown_table(["layer", "T", "fwd+bwd (s)", "peak growth (MB)", "decode (ms/token)",
                        "status"], rows),
        markdown_table(["T", "speed-up vs fused", "memory: fused / window",
                        "speed-up vs T x T", "memory: T x T / window"], ratios),
        "Targets at T = 16384: a training step at least 5x faster and peak memory at least "
        "4x lower than full causal attention. torch's fused kernel (CPU flash) never "
        "materialises the T x T score matrix, so its memory is already O(T) and the window "
        "cannot be 4x below it: the window also keeps q, k, v and the output, plus its "
        "strips of k and v. Against attention that materialises the scores (the "
        f"`naive` kernel, limited to {limit:g} GB of address space) the window's O(T * window) "
        "memory shows. Decoding: the window's cache holds the last 256 keys and values, "
        "so its per-token time is flat in T; full attention's grows with its cache.",
    ])


if __name__ == "__main__":
    main()
