"""Serving load test: N concurrent clients against ``seqlab serve`` on loopback, with
dynamic batching (``--max-batch 8``) and without (``--max-batch 1``, one request at a
time), in the same run.

A small causal LM (attention + LSTM, d_model 128, 4 layers, byte tokens; its weights
after a few training steps: speed does not depend on what it learned) serves
``/v1/generate`` requests of 32 new tokens with a per-request seed. Each client sends
its requests one after another; throughput counts completed requests (and generated
tokens) per second of wall time; latency is per request. Every response must be 200.

    python benchmarks/bench_serve.py [--quick] [--clients 16]
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from _common import ROOT, markdown_table, parse_args, report

CONFIG = {
    "seed": 0, "tokenizer": {"kind": "byte"},
    "model": {"mixer": ["attention", "lstm", "attention", "lstm"], "d_model": 128, "n_layers": 4,
              "n_heads": 4, "context_length": 256, "position": "rope"},
    "train": {"steps": 3, "batch_size": 4, "eval_every": 3, "eval_batches": 1, "progress": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(run: Path, max_batch: int, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "seqlab", "serve", str(run), "--port", str(port),
                                "--max-batch", str(max_batch), "--batch-wait-ms", "5",
                                "--queue-size", "256", "--num-threads", str(threads), "-q"],
                               cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(url + "/health", timeout=2)
            return process, url
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)


async def load(url: str, clients: int, per_client: int, new_tokens: int) -> dict:
    latencies, statuses, tokens = [], [], 0

    async def client(c: int, http: httpx.AsyncClient):
        nonlocal tokens
        for i in range(per_client):
            body = {"prompt": f"client {c} request {i}: def ", "max_new_tokens": new_tokens,
                    "temperature": 0.8, "top_k": 40, "seed": c * 1000 + i}
            began = time.perf_counter()
            response = await http.post("/v1/generate", json=body)
            latencies.append(time.perf_counter() - began)
            statuses.append(response.status_code)
            if response.status_code == 200:
                tokens += response.json()["tokens"]

    began = time.perf_counter()
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        await asyncio.gather(*(client(c, http) for c in range(clients)))
    wall = time.perf_counter() - began
    latencies.sort()
    return {"requests_per_s": len(latencies) / wall, "tokens_per_s": tokens / wall,
            "p50": latencies[len(latencies) // 2],
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "errors": sum(s != 200 for s in statuses), "requests": len(statuses)}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=2, iters=1, warmup=0,
                      extra=lambda p: p.add_argument("--clients", type=int, default=16))
    per_client = 2 if args.quick else 6
    new_tokens = 32
    results: dict[int, list[dict]] = {8: [], 1: []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "corpus.txt").write_text((ROOT / "README.md").read_text(encoding="utf-8"))
        config = dict(CONFIG, data={"path": str(tmp / "corpus.txt")})
        (tmp / "config.yaml").write_text(json.dumps(config))
        subprocess.run([sys.executable, "-m", "seqlab", "train", str(tmp / "config.yaml"), "--out",
                        str(tmp / "run"), "-q"], check=True, cwd=ROOT, capture_output=True)
        for r in range(args.rounds):
            for max_batch in ((8, 1) if r % 2 == 0 else (1, 8)):
                process, url = start(tmp / "run", max_batch, args.threads or 1)
                try:
                    asyncio.run(load(url, 2, 1, 4))  # warm-up
                    results[max_batch].append(asyncio.run(load(url, args.clients, per_client, new_tokens)))
                finally:
                    process.terminate()
                    process.wait(timeout=30)
    rows = []
    for max_batch, label in ((8, "dynamic batching (max 8)"), (1, "one at a time")):
        runs = results[max_batch]
        med = {k: statistics.median(run[k] for run in runs)
               for k in ("requests_per_s", "tokens_per_s", "p50", "p99")}
        errors = sum(run["errors"] for run in runs)
        total = sum(run["requests"] for run in runs)
        rows.append([label, f"{med['requests_per_s']:.2f}", f"{med['tokens_per_s']:,.0f}",
                     f"{med['p50']:.2f}", f"{med['p99']:.2f}", f"{errors} / {total}"])
    speedup = statistics.median(results[8][i]["requests_per_s"] / results[1][i]["requests_per_s"]
                                for i in range(args.rounds))
    table = markdown_table(["server", "requests/s", "tokens/s", "p50 latency (s)",
                            "p99 latency (s)", "errors"], rows)
    report("bench_serve", "Serving load test: dynamic batching against one at a time", args,
           [f"{args.clients} concurrent clients, {per_client} requests each, {new_tokens} new "
            f"tokens per request, loopback, {args.threads or 1} torch thread(s) in the server.\n\n"
            + table + f"\n\nbatching speed-up (requests/s): **{speedup:.2f}x**"])


if __name__ == "__main__":
    main()
