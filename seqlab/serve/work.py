"""The work behind the series, translation and transcription endpoints of ``seqlab serve``: checks done
in the handler before queueing, and what the model thread runs on a batch of jobs. A
mixin of :class:`seqlab.serve.app.Service`, which provides ``pipeline`` and ``limits``."""

from __future__ import annotations

import json

from fastapi import HTTPException

from seqlab.serve.batcher import Job
from seqlab.serve.requests import (AnomalyRequest, ForecastRequest, SpeakRequest, TranscribeRequest,
                                   TranslateRequest)


class TableAndTextWork:
    """Forecasts and anomaly scores of tables of series; translations of texts;
    transcripts of audio; speech from text."""

    def _forecast_batch(self, jobs: list[Job]) -> list[list[dict]]:
        import pandas as pd

        out = []
        for job in jobs:  # each request is its own table of series
            req: ForecastRequest = job.payload
            future = None if req.future is None else pd.DataFrame(req.future)
            frame = self.pipeline.forecast(pd.DataFrame(req.history), future, levels=req.levels)
            out.append(json.loads(frame.to_json(orient="records", date_format="iso")))
        return out

    def _anomaly_batch(self, jobs: list[Job]) -> list[list[dict]]:
        import pandas as pd

        frames = [self.pipeline.score(pd.DataFrame(job.payload.rows)) for job in jobs]
        return [json.loads(f.to_json(orient="records", date_format="iso")) for f in frames]

    def check_forecast(self, req: ForecastRequest | AnomalyRequest) -> None:
        rows = req.rows if isinstance(req, AnomalyRequest) else req.history
        if not rows:
            raise HTTPException(422, f"{'rows' if isinstance(req, AnomalyRequest) else 'history'} "
                                     "is empty")
        data = self.pipeline.config.data
        n = len({row.get(data.id) for row in rows}) if data.id else 1
        if n > self.limits.max_inputs:
            raise HTTPException(413, f"{n} series in one request; this server takes at most "
                                     f"{self.limits.max_inputs}")

    def check_translate(self, req: TranslateRequest) -> tuple:
        """Refuse what the server will not do; returns the batching key (requests with
        equal settings decode as one batch; sampled ones each alone)."""
        if not req.texts:
            raise HTTPException(422, "texts is empty")
        if len(req.texts) > self.limits.max_inputs:
            raise HTTPException(413, f"{len(req.texts)} texts in one request; this server takes "
                                     f"at most {self.limits.max_inputs}")
        if req.max_length is not None and req.max_length > self.limits.max_new_tokens:
            raise HTTPException(413, f"max_length {req.max_length} is over this server's cap of "
                                     f"{self.limits.max_new_tokens}")
        beam = req.beam or self.pipeline.config.task_options.beam
        if req.n_best > beam:
            raise HTTPException(422, f"n_best {req.n_best} is more than the beam ({beam})")
        if req.temperature is not None and (req.beam or 1) * req.n_best > 1:
            raise HTTPException(422, "sampling draws one output per text: leave beam and n_best unset")
        for i, text in enumerate(req.texts):
            self.pipeline.objective.source.encode_source(text, f"texts[{i}]")
        unique = id(req) if req.temperature is not None else None
        return ("translate", req.beam, req.n_best, req.length_penalty, req.max_length,
                req.temperature, req.seed, unique)

    def _translate_batch(self, jobs: list[Job]) -> list[list[list[dict]]]:
        req: TranslateRequest = jobs[0].payload
        texts = [t for job in jobs for t in job.payload.texts]
        found = self.pipeline.translate(
            texts, beam=req.beam, n_best=req.n_best, length_penalty=req.length_penalty,
            max_length=min(req.max_length or self.pipeline.objective.max_output_length,
                           self.limits.max_new_tokens),
            temperature=req.temperature, seed=req.seed)
        out, start = [], 0
        for job in jobs:
            n = len(job.payload.texts)
            out.append([[t.__dict__ for t in ts] for ts in found[start:start + n]])
            start += n
        return out

    def check_transcribe(self, req: TranscribeRequest) -> tuple:
        """Decode every file before queueing (a bad one is a 422 naming it); returns the
        batching key and the samples."""
        import base64
        import binascii

        from seqlab.data.audio import decode_audio
        from seqlab.errors import DataError

        if not req.audio:
            raise HTTPException(422, "audio is empty")
        if len(req.audio) > self.limits.max_inputs:
            raise HTTPException(413, f"{len(req.audio)} files in one request; this server takes "
                                     f"at most {self.limits.max_inputs}")
        beam = req.beam or self.pipeline.config.task_options.beam
        if req.n_best > beam:
            raise HTTPException(422, f"n_best {req.n_best} is more than the beam ({beam})")
        samples = []
        for i, text in enumerate(req.audio):
            try:
                data = base64.b64decode(text, validate=True)
                samples.append(decode_audio(data, f"audio[{i}]", self.pipeline.sample_rate))
            except binascii.Error:
                raise HTTPException(422, f"audio[{i}] is not base64") from None
            except DataError as e:
                raise HTTPException(422, str(e)) from None
        return ("transcribe", req.beam, req.n_best), samples

    def _transcribe_batch(self, jobs: list[Job]) -> list[list[list[dict]]]:
        beam, n_best = jobs[0].key[1:]
        found = self.pipeline.transcribe([s for job in jobs for s in job.payload], beam=beam,
                                         n_best=n_best)
        out, start = [], 0
        for job in jobs:
            n = len(job.payload)
            out.append([[t.__dict__ for t in ts] for ts in found[start:start + n]])
            start += n
        return out

    def check_speak(self, req: SpeakRequest) -> tuple:
        """Refuse text the voice cannot say (422 naming the characters)."""
        from seqlab.errors import DataError

        try:
            self.pipeline.text_ids(req.text)
        except DataError as e:
            raise HTTPException(422, str(e)) from None
        return ("speak", id(req))  # each text alone: its audio is its own seed's

    def _speak_batch(self, jobs: list[Job]) -> list[dict]:
        import base64

        out = []
        for job in jobs:
            samples = self.pipeline.speak(job.payload.text, seed=job.payload.seed)
            out.append({"audio": base64.b64encode(self.pipeline.wav_bytes(samples)).decode(),
                        "sample_rate": self.pipeline.sample_rate,
                        "seconds": len(samples) / self.pipeline.sample_rate})
        return out


__all__ = ["TableAndTextWork"]
