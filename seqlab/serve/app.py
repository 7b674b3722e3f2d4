"""``seqlab serve``: a trained run behind an HTTP API (FastAPI on uvicorn).

Endpoints, by what the run does:

- ``POST /v1/generate`` (causal_lm): continue a prompt; ``"stream": true`` sends each new
  piece of text as a server-sent event as it is decoded.
- ``POST /v1/predict`` (classify, tag, regress): predictions for texts (token runs) or
  arrays of feature vectors (feature runs).
- ``POST /v1/fill-mask`` (masked_lm): the likeliest tokens for each ``<mask>``.
- ``POST /v1/forecast`` (forecast): the horizon after each series of a table sent as
  rows (``history``, and ``future`` for known-future covariates); the forecast comes
  back as rows, as ``ForecastPipeline.predict`` returns them.
- ``POST /v1/translate`` (seq2seq): the outputs of each source text, best first, with
  their scores (greedy, beam search with ``beam`` and ``n_best``, or sampling).
- ``POST /v1/transcribe`` (ctc): the transcripts of each base64-encoded audio file, best
  first, with their log-probabilities (greedy, or prefix beam search with ``beam``).
- ``POST /v1/speak`` (tts): a base64 WAV file of the text said (``seed`` draws the
  decoder's pre-net dropout and the vocoder's phase).
- ``POST /v1/anomaly`` (anomaly): per-step scores and flags of the series sent as
  ``rows``, as ``AnomalyPipeline.score`` returns them (each request is scored on its
  own: no stream state is kept between requests).
- ``GET /health``, ``GET /v1/info``, ``GET /`` (a playground page), ``GET /docs`` and
  ``/openapi.json`` (the schema).

Limits are explicit: a body over ``max_body_bytes`` or a request over the token caps is
refused with 413 before any work; a full queue with 503 and ``Retry-After``; unknown
fields and wrong types with 422; an API key, when set, with 401. Requests never name
files. Concurrent requests are batched (``seqlab.serve.batcher``); each request's
result is the one it would get alone, its sampling drawn from its own seed (chosen
and returned when the request gives none).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
from importlib import resources
from pathlib import Path
from contextlib import asynccontextmanager

from seqlab.errors import SeqlabError
from seqlab.infer.generate import SamplingConfig
from seqlab.serve.batcher import Batcher, Job, QueueFull
from seqlab.serve.body_limit import BodyLimit, error_response as _error

logger = logging.getLogger("seqlab")

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, StreamingResponse
except ImportError as e:  # pragma: no cover - the serve extra is missing
    raise ImportError("seqlab serve needs FastAPI and uvicorn: pip install 'seqlab[serve]'") from e

from seqlab.serve.requests import (AnomalyRequest, FillMaskRequest, ForecastRequest, GenerateRequest,  # noqa: F401
                                   GenerateResponse, Limits, PredictRequest, SpeakRequest,
                                   TranscribeRequest, TranslateRequest)
from seqlab.serve.work import TableAndTextWork


CAPABILITIES = (("generate", "generate_ids"), ("fill-mask", "fill_mask"), ("anomaly", "score"),
                ("forecast", "forecast"), ("translate", "translate"), ("transcribe", "transcribe"),
                ("speak", "speak"), ("predict", "predict"))


def _offers(pipeline, method: str) -> bool:
    """Whether ``pipeline`` does ``method`` (the base Pipeline's stand-ins only refuse)."""
    from seqlab.tasks.pipeline import Pipeline

    own = getattr(type(pipeline), method, None)
    return own is not None and own is not getattr(Pipeline, method, None)


class Service(TableAndTextWork):
    """A loaded run, its batcher and the limits: what the endpoints call."""

    def __init__(self, run_dir: str | Path, *, device: str = "cpu", limits: Limits | None = None,
                 api_key: str | None = None):
        import seqlab

        self.run_dir = Path(run_dir)
        self.pipeline = seqlab.load(run_dir, device=device)
        self.task = self.pipeline.config.task
        self.limits = limits or Limits()
        self.api_key = api_key
        self.context = self.pipeline.config.model.context_length
        # What the run does decides what is served: its pipeline's abilities.
        self.kind = next((kind for kind, method in CAPABILITIES if _offers(self.pipeline, method)), None)
        runner = {"generate": self._generate_batch, "fill-mask": self._fill_mask_batch,
                  "predict": self._predict_batch,
                  "forecast": self._forecast_batch,
                  "anomaly": self._anomaly_batch,
                  "translate": self._translate_batch,
                  "transcribe": self._transcribe_batch,
                  "speak": self._speak_batch}.get(self.kind, lambda jobs: [])
        self.batcher = Batcher(runner, max_batch=self.limits.max_batch,
                               max_wait_s=self.limits.batch_wait_ms / 1000,
                               queue_size=self.limits.queue_size)

    @property
    def endpoint(self) -> str | None:
        """The inference endpoint, or None (a synthetic-task run only evaluates)."""
        return f"/v1/{self.kind}" if self.kind else None

    def info(self) -> dict:
        config = self.pipeline.config
        info = {"run": self.run_dir.name, "objective": self.task, "endpoint": self.endpoint,
                "context_length": self.context, "input": config.model.input,
                "model": {"mixer": config.model.mixer, "d_model": config.model.d_model,
                          "n_layers": config.model.n_layers},
                "limits": self.limits.model_dump(), "api_key_required": self.api_key is not None}
        if self.task in ("classify", "tag", "regress"):
            info["labels"] = [str(n) for n in self.pipeline.labels.names]
        return info

    # -- checks done in the handler, before queueing ------------------------------------
    def _tokens(self, text: str) -> list[int]:
        ids = self.pipeline.tokenizer.encode(text)
        if len(ids) > self.context:
            raise HTTPException(413, f"the text is {len(ids)} tokens long; this model reads at "
                                     f"most {self.context} (its context length)")
        return ids

    def check_generate(self, req: GenerateRequest) -> list[int]:
        if req.max_new_tokens > self.limits.max_new_tokens:
            raise HTTPException(413, f"max_new_tokens {req.max_new_tokens} is over this server's "
                                     f"cap of {self.limits.max_new_tokens}")
        self._tokens(req.prompt)
        return self.pipeline.prompt_ids(req.prompt)

    def check_predict(self, req: PredictRequest) -> list:
        if (req.texts is None) == (req.features is None):
            raise HTTPException(422, "give either texts (token runs) or features (feature runs)")
        wanted = "texts" if self.pipeline.config.model.input == "tokens" else "features"
        items = req.texts if req.texts is not None else req.features
        if (req.texts is not None) != (wanted == "texts"):
            raise HTTPException(422, f"this run reads {self.pipeline.config.model.input}; send "
                                     f"{wanted}")
        if not items:
            raise HTTPException(422, f"{wanted} is empty")
        if len(items) > self.limits.max_inputs:
            raise HTTPException(413, f"{len(items)} inputs in one request; this server takes at "
                                     f"most {self.limits.max_inputs}")
        if wanted == "texts":
            for text in items:
                self._tokens(text)
            return list(items)
        import numpy as np

        arrays = []
        width = self.pipeline.config.model.input_dim
        for i, rows in enumerate(items):
            array = np.asarray(rows, dtype=np.float32)
            if array.ndim != 2 or array.shape[1] != width or len(array) == 0:
                raise HTTPException(422, f"features[{i}] has shape {array.shape}; this run reads "
                                         f"(time, {width}) arrays with time >= 1")
            if len(array) > self.context:
                raise HTTPException(413, f"features[{i}] has {len(array)} steps; this model reads "
                                         f"at most {self.context}")
            arrays.append(array)
        return arrays

    def check_fill_mask(self, req: FillMaskRequest) -> None:
        if "<mask>" not in req.text:
            raise HTTPException(422, "text has no <mask>")
        self._tokens(req.text.replace("<mask>", " "))

    # -- the model thread's work on a batch ---------------------------------------------------
    def _generate_batch(self, jobs: list[Job]) -> list[dict]:
        req0: GenerateRequest = jobs[0].payload["request"]
        sampling = SamplingConfig(req0.temperature, req0.top_k, req0.top_p, req0.greedy)
        streams = [_TextStream(self.pipeline.tokenizer, job) for job in jobs]
        new = self.pipeline.generate_ids(
            [job.payload["ids"] for job in jobs],
            max_new_tokens=[job.payload["request"].max_new_tokens for job in jobs],
            seeds=[job.payload["seed"] for job in jobs], sampling=sampling,
            on_token=lambda row, token: streams[row].add(token))
        results = []
        for job, ids, stream in zip(jobs, new, streams):
            req = job.payload["request"]
            stream.finish()
            results.append({"text": self.pipeline.tokenizer.decode(ids), "tokens": len(ids),
                            "finish_reason": "length" if len(ids) >= req.max_new_tokens else "eos",
                            "seed": job.payload["seed"]})
        return results

    def _predict_batch(self, jobs: list[Job]) -> list[list[dict]]:
        items = [item for job in jobs for item in job.payload]
        rows = self.pipeline.predict(items) if items else []
        out, start = [], 0
        for job in jobs:
            out.append(rows[start:start + len(job.payload)])
            start += len(job.payload)
        return out

    def _fill_mask_batch(self, jobs: list[Job]) -> list[list]:
        return [self.pipeline.fill_mask(job.payload.text, top_k=job.payload.top_k) for job in jobs]


class _TextStream:
    """Turns a request's new token ids into text pieces for streaming: a piece is sent
    once it decodes to whole characters (a byte tokenizer may split one)."""

    def __init__(self, tokenizer, job: Job):
        self.tokenizer, self.job = tokenizer, job
        self.ids: list[int] = []
        self.sent = 0

    def add(self, token: int) -> None:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return  # an unfinished character: wait for its next bytes
        if len(text) > self.sent:
            self.job.emit({"text": text[self.sent:], "token": token})
            self.sent = len(text)

    def finish(self) -> None:
        text = self.tokenizer.decode(self.ids)
        if len(text) > self.sent:
            self.job.emit({"text": text[self.sent:]})
            self.sent = len(text)


def create_app(service: Service) -> FastAPI:
    """The FastAPI application serving ``service``."""
    @asynccontextmanager
    async def lifespan(app):
        yield
        service.batcher.close()

    app = FastAPI(title=f"seqlab: {service.run_dir.name}", version="1", lifespan=lifespan,
                  description=f"A seqlab {service.task} run served over HTTP.")

    def authorize(request: Request) -> None:
        if service.api_key is None:
            return
        given = request.headers.get("x-api-key") or ""
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            given = given or bearer[7:]
        if not hmac.compare_digest(given.encode(), service.api_key.encode()):
            raise HTTPException(401, "a valid API key is required (Authorization: Bearer KEY, "
                                     "or X-API-Key)")

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg')}")
        return _error(422, "invalid request: " + "; ".join(problems))

    @app.exception_handler(QueueFull)
    async def busy(request, exc):
        return _error(503, f"the server is busy ({service.limits.queue_size} requests waiting); "
                           "retry shortly", {"Retry-After": "1"})

    @app.exception_handler(SeqlabError)
    async def refused(request, exc: SeqlabError):
        return _error(422, " ".join(str(exc).split()))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "objective": service.task, "waiting": service.batcher.waiting,
                "queue_size": service.limits.queue_size}

    @app.get("/v1/info")
    async def info(request: Request) -> dict:
        return service.info()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> str:
        return resources.files("seqlab.serve").joinpath("playground.html").read_text(encoding="utf-8")

    if service.kind == "generate":
        @app.post("/v1/generate", response_model=GenerateResponse,
                  responses={200: {"content": {"text/event-stream": {}}}})
        async def generate(req: GenerateRequest, request: Request):
            authorize(request)
            ids = service.check_generate(req)
            seed = req.seed if req.seed is not None else secrets.randbits(63)
            payload = {"request": req, "ids": ids, "seed": seed}
            key = ("generate", req.temperature, req.top_k, req.top_p, req.greedy)
            if not req.stream:
                return await service.batcher.submit(Job(key, payload))
            events: asyncio.Queue = asyncio.Queue()
            job = Job(key, payload, on_event=events.put_nowait)
            task = asyncio.ensure_future(service.batcher.submit(job))
            await asyncio.sleep(0)  # let submit run: a full queue answers 503 before streaming
            if task.done() and task.exception() is not None:
                raise task.exception()
            return StreamingResponse(_sse(events, task), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})

    elif service.kind == "fill-mask":
        @app.post("/v1/fill-mask")
        async def fill_mask(req: FillMaskRequest, request: Request) -> dict:
            authorize(request)
            service.check_fill_mask(req)
            return {"masks": await service.batcher.submit(Job(("fill", req.top_k), req))}

    elif service.kind == "forecast":
        @app.post("/v1/forecast")
        async def forecast(req: ForecastRequest, request: Request) -> dict:
            authorize(request)
            service.check_forecast(req)
            return {"forecasts": await service.batcher.submit(Job(("forecast",), req))}

    elif service.kind == "anomaly":
        @app.post("/v1/anomaly")
        async def anomaly(req: AnomalyRequest, request: Request) -> dict:
            authorize(request)
            service.check_forecast(req)
            return {"scores": await service.batcher.submit(Job(("anomaly",), req))}

    elif service.kind == "translate":
        @app.post("/v1/translate")
        async def translate(req: TranslateRequest, request: Request) -> dict:
            authorize(request)
            key = service.check_translate(req)
            return {"translations": await service.batcher.submit(Job(key, req))}

    elif service.kind == "transcribe":
        @app.post("/v1/transcribe")
        async def transcribe(req: TranscribeRequest, request: Request) -> dict:
            authorize(request)
            key, samples = service.check_transcribe(req)
            return {"transcripts": await service.batcher.submit(Job(key, samples))}

    elif service.kind == "speak":
        @app.post("/v1/speak")
        async def speak(req: SpeakRequest, request: Request) -> dict:
            authorize(request)
            key = service.check_speak(req)
            return await service.batcher.submit(Job(key, req))

    elif service.kind == "predict":
        @app.post("/v1/predict")
        async def predict(req: PredictRequest, request: Request) -> dict:
            authorize(request)
            items = service.check_predict(req)
            return {"predictions": await service.batcher.submit(Job(("predict",), items))}

    return BodyLimit(app, service.limits.max_body_bytes)


async def _sse(events: asyncio.Queue, task: asyncio.Future):
    """Server-sent events: ``data: {"text": ...}`` per piece, then ``event: done`` with
    the whole result (or ``event: error``)."""
    while True:
        getter = asyncio.ensure_future(events.get())
        done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            yield f"data: {json.dumps(getter.result(), ensure_ascii=False)}\n\n"
            continue
        getter.cancel()
        while not events.empty():
            yield f"data: {json.dumps(events.get_nowait(), ensure_ascii=False)}\n\n"
        if task.exception() is not None:
            yield f"event: error\ndata: {json.dumps({'error': str(task.exception())})}\n\n"
        else:
            yield f"event: done\ndata: {json.dumps(task.result(), ensure_ascii=False)}\n\n"
        return


def serve(run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu",
          api_key: str | None = None, limits: Limits | None = None) -> None:
    """Load ``run_dir`` and serve it until interrupted."""
    import uvicorn

    service = Service(run_dir, device=device, limits=limits, api_key=api_key)
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        logger.warning("serving on %s without an API key: anyone who can reach it can use it "
                       "(--api-key or SEQLAB_API_KEY)", host)
    logger.info("serving %s (%s) at http://%s:%d/ (API: %s)", run_dir, service.task, host, port,
                service.endpoint)
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning")


__all__ = ["Limits", "Service", "create_app", "serve"]
