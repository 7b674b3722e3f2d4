"""``seqlab serve``: a real uvicorn server on loopback. Results equal the Python API's,
streamed text equals the whole, concurrent requests are batched without changing any
result, every kind of bad request gets its own clean status, and the playground page
works in a real headless Chromium."""

import asyncio
import contextlib
import json
import random
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

import seqlab
from seqlab.config import RunConfig
from seqlab.serve.app import Limits, Service, create_app

uvicorn = pytest.importorskip("uvicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    (root / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog. " * 60)
    config = RunConfig.from_dict({
        "seed": 0,
        "model": {"mixer": ["attention", "lstm"], "d_model": 32, "n_layers": 2, "n_heads": 4,
                  "context_length": 48, "position": "rope"},
        "data": {"path": str(root / "corpus.txt")},
        "train": {"steps": 30, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "eval_every": 30,
                  "eval_batches": 2, "progress": False, "num_threads": 1}})
    seqlab.fit(config, root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("classify")
    rng = random.Random(0)
    rows = []
    for _ in range(80):
        label = rng.choice("ab")
        rows.append({"text": "".join(rng.choice(label + "xyz") for _ in range(rng.randint(3, 15))),
                     "label": label})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = RunConfig.from_dict({
        "task": "classify", "seed": 0,
        "model": {"mixer": "lstm", "d_model": 16, "n_layers": 1, "causal": False,
                  "context_length": 24, "position": "none"},
        "data": {"source": "examples", "path": str(root / "train.jsonl")},
        "train": {"steps": 20, "batch_size": 8, "lr": 1e-2, "warmup_steps": 1, "eval_every": 20,
                  "progress": False, "num_threads": 1}})
    seqlab.fit(config, root / "run")
    return root / "run"


class Server:
    """uvicorn serving a Service in a background thread, on a free loopback port."""

    def __init__(self, service: Service):
        self.service = service
        self.port = free_port()
        config = uvicorn.Config(create_app(service), host="127.0.0.1", port=self.port,
                                log_level="error", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post(self, path, body=None, **kwargs):
        return httpx.post(self.url + path, json=body, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def lm_server(lm_run):
    with Server(Service(lm_run, limits=Limits(max_new_tokens=64, max_body_bytes=4096,
                                              batch_wait_ms=30))) as server:
        yield server


def test_health_info_and_schema(lm_server):
    assert httpx.get(lm_server.url + "/health").json()["status"] == "ok"
    info = httpx.get(lm_server.url + "/v1/info").json()
    assert info["objective"] == "causal_lm" and info["endpoint"] == "/v1/generate"
    assert info["context_length"] == 48
    schema = httpx.get(lm_server.url + "/openapi.json").json()
    assert "/v1/generate" in schema["paths"] and "/v1/predict" not in schema["paths"]
    fields = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    assert {"prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "stream"} <= set(fields)


def test_generate_equals_the_python_api_and_streams_the_same_text(lm_server, lm_run):
    pipeline = seqlab.load(lm_run)
    body = {"prompt": "the quick", "max_new_tokens": 30, "temperature": 0.9, "top_k": 20, "seed": 7}
    result = lm_server.post("/v1/generate", body).json()
    expected = pipeline.generate("the quick", max_new_tokens=30, temperature=0.9, top_k=20, seed=7)
    assert result["text"] == expected and result["seed"] == 7
    assert result["finish_reason"] in ("length", "eos")
    with httpx.stream("POST", lm_server.url + "/v1/generate", json={**body, "stream": True},
                      timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [e for e in response.read().decode().split("\n\n") if e]
    pieces = [json.loads(e.removeprefix("data: "))["text"] for e in events[:-1]]
    assert len(pieces) > 1 and "".join(pieces) == expected
    assert events[-1].startswith("event: done\n")
    assert json.loads(events[-1].split("data: ", 1)[1]) == result


def test_a_request_without_a_seed_gets_one_that_reproduces_it(lm_server):
    first = lm_server.post("/v1/generate", {"prompt": "a", "max_new_tokens": 12}).json()
    again = lm_server.post("/v1/generate", {"prompt": "a", "max_new_tokens": 12,
                                            "seed": first["seed"]}).json()
    assert again["text"] == first["text"]


def test_concurrent_requests_are_batched_and_each_gets_its_own_result(lm_server, lm_run):
    pipeline = seqlab.load(lm_run)
    requests = [{"prompt": p, "max_new_tokens": n, "temperature": 0.8, "seed": s}
                for p, n, s in [("the", 9, 1), ("a lazy dog", 20, 2), ("", 5, 3),
                                ("quick brown fox", 14, 4), ("over", 1, 5), ("dog. the", 17, 6)]]
    batches_before = lm_server.service.batcher.batches

    async def fire():
        async with httpx.AsyncClient(base_url=lm_server.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/generate", json=r) for r in requests))

    responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses)
    batches = lm_server.service.batcher.batches - batches_before
    assert batches < len(requests)  # some shared a batch
    for r, req in zip(responses, requests):
        alone = pipeline.generate(req["prompt"], max_new_tokens=req["max_new_tokens"],
                                  temperature=0.8, seed=req["seed"])
        assert r.json()["text"] == alone, req


@pytest.mark.parametrize("body, status, message", [
    ({"prompt": "x", "bogus": 1}, 422, "bogus: Extra inputs are not permitted"),
    ({"prompt": 3}, 422, "prompt: Input should be a valid string"),
    ({"max_new_tokens": -1}, 422, "max_new_tokens: Input should be greater than or equal to 0"),
    ({"max_new_tokens": 65}, 413, "max_new_tokens 65 is over this server's cap of 64"),
    ({"prompt": "x" * 49}, 413, "the text is 49 tokens long; this model reads at most 48"),
    ({"temperature": 0.5, "top_p": 1.5}, 422, "top_p: Input should be less than or equal to 1"),
])
def test_bad_requests_get_a_clear_status(lm_server, body, status, message):
    response = lm_server.post("/v1/generate", body)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_malformed_json_and_oversized_bodies(lm_server):
    response = httpx.post(lm_server.url + "/v1/generate", content=b'{"prompt": ',
                          headers={"content-type": "application/json"})
    assert response.status_code == 422 and "JSON decode error" in response.json()["error"]
    big = json.dumps({"prompt": "x" * 5000}).encode()
    response = httpx.post(lm_server.url + "/v1/generate", content=big,
                          headers={"content-type": "application/json"})
    assert response.status_code == 413 and "limit of 4096 bytes" in response.json()["error"]

    def chunks():  # no content-length: the limit is counted as the body streams in
        for _ in range(10):
            yield b" " * 1000

    response = httpx.post(lm_server.url + "/v1/generate", content=chunks(),
                          headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert httpx.post(lm_server.url + "/v1/predict", json={"texts": ["a"]}).status_code == 404


def test_a_full_queue_answers_503_with_retry_after(lm_run, monkeypatch):
    service = Service(lm_run, limits=Limits(max_batch=1, queue_size=1, batch_wait_ms=0))
    original = service.pipeline.generate_ids
    gate = threading.Event()

    def slow(*args, **kwargs):
        gate.wait(timeout=30)
        return original(*args, **kwargs)

    monkeypatch.setattr(service.pipeline, "generate_ids", slow)
    with Server(service) as server:
        async def fire():
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                first = asyncio.ensure_future(client.post("/v1/generate", json={"max_new_tokens": 2}))
                await asyncio.sleep(0.3)  # running, the gate holds it
                second = asyncio.ensure_future(client.post("/v1/generate", json={"max_new_tokens": 2}))
                await asyncio.sleep(0.3)  # waiting in the queue of one
                third = await client.post("/v1/generate", json={"max_new_tokens": 2})
                streamed = await client.post("/v1/generate", json={"max_new_tokens": 2, "stream": True})
                gate.set()
                return await first, await second, third, streamed

        first, second, third, streamed = asyncio.run(fire())
    assert first.status_code == second.status_code == 200
    assert third.status_code == streamed.status_code == 503
    assert third.headers["retry-after"] == "1" and "busy" in third.json()["error"]


def test_an_api_key_is_required_when_set(lm_run):
    with Server(Service(lm_run, api_key="s3cret")) as server:
        body = {"max_new_tokens": 2}
        assert server.post("/v1/generate", body).status_code == 401
        assert server.post("/v1/generate", body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert server.post("/v1/generate", body,
                           headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(server.url + "/health").status_code == 200
        assert httpx.get(server.url + "/v1/info").json()["api_key_required"] is True


def test_predict_batches_concurrent_requests_without_changing_results(classify_run):
    pipeline = seqlab.load(classify_run)
    texts = [["axxa", "bzb"], ["yyyya"], ["b", "xbxbxbxbxb", "aaz"], ["zzzz"]]
    with Server(Service(classify_run, limits=Limits(batch_wait_ms=50, max_inputs=3))) as server:
        async def fire():
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                return await asyncio.gather(*(client.post("/v1/predict", json={"texts": t})
                                              for t in texts))

        responses = asyncio.run(fire())
        assert server.service.batcher.batches < len(texts)
        for r, t in zip(responses, texts):
            got, alone = r.json()["predictions"], pipeline.predict(t)
            assert [p["label"] for p in got] == [p["label"] for p in alone]
            for p, q in zip(got, alone):
                assert p["probabilities"] == pytest.approx(q["probabilities"], abs=1e-5)
        assert server.post("/v1/predict", {"texts": ["a"] * 4}).status_code == 413
        assert server.post("/v1/predict", {"features": [[[0.0]]]}).json()["error"] == \
            "this run reads tokens; send texts"
        assert server.post("/v1/predict", {"texts": []}).status_code == 422
        assert server.post("/v1/predict", {"texts": ["a" * 25]}).status_code == 413
        assert "/v1/predict" in httpx.get(server.url + "/openapi.json").json()["paths"]


def test_the_command_serves_on_loopback_by_default(lm_run):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "seqlab", "serve", str(lm_run), "--port",
                                str(port), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(process.communicate()[1].decode())
                time.sleep(0.2)
        assert health.json()["objective"] == "causal_lm"
        assert listening_addresses(port) == ["127.0.0.1"]
    finally:
        process.terminate()
        process.wait(timeout=20)


def listening_addresses(port: int) -> list[str]:
    """The IPv4 addresses listening on ``port``, from the kernel's /proc/net/tcp."""
    found = []
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def browser_page():
    """A page of Debian's Chromium, headless, driven by Playwright."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield browser.new_page()
        finally:
            browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (setup.sh installs it "
                                             "with apt-get where it can)")
def test_the_playground_streams_a_generation_in_a_real_browser(lm_server, lm_run):
    expected = lm_server.post("/v1/generate", {"prompt": "the lazy", "max_new_tokens": 40,
                                               "temperature": 0, "top_k": 40}).json()
    with browser_page() as page:
        page.goto(lm_server.url + "/")
        page.wait_for_selector("#generate-panel:not([hidden])")
        assert "causal_lm" in page.inner_text("#about")
        page.fill("#prompt", "the lazy")
        page.fill("#max-new-tokens", "40")
        page.fill("#temperature", "0")
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent.includes('tokens,')",
                               timeout=30000)
        assert page.inner_text("#status").startswith(f"{expected['tokens']} tokens")
        assert page.eval_on_selector("#output", "e => e.textContent") == expected["text"]
        page.fill("#max-new-tokens", "100000")
        page.click("#generate")
        page.wait_for_selector("#status.error")
        assert "over this server's cap of 64" in page.inner_text("#status")


def test_predict_takes_feature_arrays_for_feature_runs(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    lengths, labels = rng.integers(4, 12, 40), rng.integers(0, 2, 40)
    rows = [np.stack([np.sin(np.arange(t) * (0.3 + y)), np.cos(np.arange(t))], 1) for t, y in zip(lengths, labels)]
    np.savez(tmp_path / "train.npz", features=np.concatenate(rows).astype(np.float32),
             lengths=lengths, labels=labels)
    config = RunConfig.from_dict({
        "task": "classify", "seed": 0,
        "model": {"mixer": "gru", "d_model": 16, "n_layers": 1, "causal": False,
                  "context_length": 16, "position": "none"},
        "data": {"source": "features", "path": str(tmp_path / "train.npz")},
        "train": {"steps": 5, "batch_size": 8, "eval_every": 5, "progress": False, "num_threads": 1}})
    seqlab.fit(config, tmp_path / "run")
    arrays = [rows[0].tolist(), rows[1][:5].tolist()]
    with Server(Service(tmp_path / "run")) as server:
        got = server.post("/v1/predict", {"features": arrays}).json()["predictions"]
        expected = seqlab.load(tmp_path / "run").predict([np.asarray(a, dtype=np.float32) for a in arrays])
        assert [p["label"] for p in got] == [p["label"] for p in expected]
        bad = server.post("/v1/predict", {"features": [[[0.0, 1.0, 2.0]]]})
        assert bad.status_code == 422 and "(time, 2) arrays" in bad.json()["error"]
        assert server.post("/v1/predict", {"texts": ["abc"]}).json()["error"] == \
            "this run reads features; send features"
        assert server.post("/v1/predict", {"features": [[[0.0, 1.0]] * 17]}).status_code == 413


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
def test_the_playground_predicts_in_a_real_browser(classify_run):
    expected = [p["label"] for p in seqlab.load(classify_run).predict(["axxa", "bbzb"])]
    with Server(Service(classify_run)) as server, browser_page() as page:
        page.goto(server.url + "/")
        page.wait_for_selector("#predict-panel:not([hidden])")
        page.fill("#texts", "axxa\nbbzb\n")
        page.click("#predict")
        page.wait_for_selector("#predictions")
        cells = page.eval_on_selector_all("#predictions tr td:nth-child(2)",
                                          "cells => cells.map(c => c.textContent)")
        assert cells == expected
        assert page.inner_text("#status") == "2 predictions"
