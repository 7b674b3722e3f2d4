"""The bodies ``seqlab serve`` accepts and returns, and its limits (pydantic models):
unknown fields are refused (422), types checked before any work."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    """What one request may ask for (``seqlab serve`` options)."""

    max_body_bytes: int = 1 << 20
    max_new_tokens: int = 512
    max_inputs: int = 64  # texts or arrays per predict request
    max_batch: int = 8
    batch_wait_ms: float = 5.0
    queue_size: int = 64


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateRequest(Strict):
    prompt: str = Field("", description="text to continue")
    max_new_tokens: int = Field(64, ge=0, description="most new tokens (the server caps it)")
    temperature: float = Field(1.0, ge=0, description="0 = greedy")
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    greedy: bool = False
    seed: int | None = Field(None, ge=0, lt=2**63,
                             description="seeds this request's sampling (default: a fresh one, returned)")
    stream: bool = Field(False, description="send the text as server-sent events as it comes")


class GenerateResponse(BaseModel):
    text: str
    tokens: int
    finish_reason: str  # "eos" or "length"
    seed: int


class PredictRequest(Strict):
    texts: list[str] | None = Field(None, description="token runs: one text per example")
    features: list[list[list[float]]] | None = Field(
        None, description="feature runs: one (time, features) array per example")


class FillMaskRequest(Strict):
    text: str = Field(..., description="text with one or more <mask>")
    top_k: int = Field(5, ge=1, le=100)


class ForecastRequest(Strict):
    history: list[dict[str, str | float | int | None]] = Field(
        ..., description="the series as rows: time, id, targets and covariates by column name")
    future: list[dict[str, str | float | int | None]] | None = Field(
        None, description="rows of known-future covariates for the horizon (time, id, columns)")
    levels: list[float] | None = Field(None, description="central intervals, in percent")


class TranslateRequest(Strict):
    texts: list[str] = Field(..., description="source texts, decoded independently")
    beam: int | None = Field(None, ge=1, le=32, description="beam size (default: the run's)")
    n_best: int = Field(1, ge=1, le=32, description="outputs per text, best first (at most the beam)")
    length_penalty: float | None = Field(None, ge=0, le=5)
    max_length: int | None = Field(None, ge=1, description="longest output in tokens (the server caps it)")
    temperature: float | None = Field(None, gt=0, description="sample one output instead of searching")
    seed: int | None = Field(None, ge=0, lt=2**63, description="seeds sampling")


class TranscribeRequest(Strict):
    audio: list[str] = Field(..., description="audio files (WAV, FLAC or OGG), each base64-encoded")
    beam: int | None = Field(None, ge=1, le=32, description="prefix beam width (default: the run's)")
    n_best: int = Field(1, ge=1, le=32, description="transcripts per file, best first (at most the beam)")


class SpeakRequest(Strict):
    text: str = Field(..., description="the text to say")
    seed: int = Field(0, ge=0, lt=2**63, description="draws the pre-net dropout and the vocoder's phase")


class AnomalyRequest(Strict):
    rows: list[dict[str, str | float | int | None]] = Field(
        ..., description="the series to score as rows: time, id, targets and covariates")


__all__ = ["AnomalyRequest", "FillMaskRequest", "ForecastRequest", "GenerateRequest", "GenerateResponse", "Limits",
           "PredictRequest", "SpeakRequest", "Strict", "TranscribeRequest", "TranslateRequest"]
