"""A trained recogniser ready to use: ``transcribe`` audio files or samples, whole or
streamed in chunks through the encoder's state (what ``seqlab.load`` returns for ``ctc``
runs).

Streaming needs a causal encoder and features that need no future: ``data.normalize``
``global`` or ``none`` and ``data.top_db`` null. Then the frames of each chunk
(:class:`~seqlab.data.speech_features.StreamingFeatures`) go through the front end and
the mixers with their states, and the decoder advances step by step, so the transcript
of a stream equals that of the whole file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Union

import numpy as np
import torch

from seqlab.data.audio import read_audio
from seqlab.data.batch import pad
from seqlab.data.speech_features import StreamingFeatures
from seqlab.errors import ConfigError, DataError
from seqlab.infer.ctc import GreedyStream, PrefixBeamSearch, decode
from seqlab.tasks.pipeline import Pipeline

Audio = Union[str, Path, np.ndarray]


@dataclass(frozen=True)
class Transcript:
    """One transcript and the log-probability its decoder gave it (greedy: of its best
    path; beam search: of every path that reads it)."""

    text: str
    logprob: float


class SpeechPipeline(Pipeline):
    """``transcribe(audio)``: the transcripts of each file or array of samples."""

    @property
    def sample_rate(self) -> int:
        return self.objective.source.options.sample_rate

    def _samples(self, audio: Audio, i: int) -> np.ndarray:
        if isinstance(audio, np.ndarray):
            if audio.ndim != 1 or len(audio) == 0:
                raise DataError(f"input {i}: samples must be a non-empty 1-D array of mono audio "
                                f"at {self.sample_rate} Hz, got shape {audio.shape}")
            return audio.astype(np.float32, copy=False)
        return read_audio(audio, self.sample_rate)

    @torch.no_grad()
    def transcribe(self, audio: Audio | list[Audio], *, beam: int | None = None, n_best: int = 1,
                   stream: bool = False, chunk_seconds: float = 0.5,
                   batch_size: int = 16) -> list[list[Transcript]]:
        """The ``n_best`` transcripts of each input (greedy, or prefix beam search with
        ``beam`` > 1; the run's ``task_options.beam`` when None), best first. With
        ``stream`` each input is fed in ``chunk_seconds`` pieces through the state.

        Raises:
            DataError: audio that cannot be decoded, is empty or silent (naming it).
            ConfigError: ``stream`` with a model or features that cannot stream.
        """
        items = [audio] if isinstance(audio, (str, Path, np.ndarray)) else list(audio)
        beam = beam or self.objective.options.beam
        if stream:
            return [self._streamed(self._samples(a, i), beam, n_best, chunk_seconds)
                    for i, a in enumerate(items)]
        source = self.objective.source
        feats = [source.features(self._samples(a, i)) for i, a in enumerate(items)]
        out: list[list[Transcript]] = [[] for _ in items]
        order = np.argsort([len(f) for f in feats], kind="stable")
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            x, mask = pad([feats[i] for i in index], value=0.0, dtype=torch.float32)
            found = self._decode(x.to(self.device), None if mask is None else mask.to(self.device),
                                 beam, n_best)
            for i, transcripts in zip(index, found):
                out[i] = transcripts
        return out

    def _decode(self, x: torch.Tensor, mask: torch.Tensor | None, beam: int,
                n_best: int) -> list[list[Transcript]]:
        """The transcripts of a padded batch of frames (CTC decoding of the head's output)."""
        log_probs = self.model(x, padding_mask=mask).logits.float().cpu().numpy()
        return [[Transcript(self.objective.text(h.tokens), h.logprob)
                 for h in decode(row, self.objective.blank, beam=beam, n_best=n_best,
                                 top_k=self.objective.options.top_k)] for row in log_probs]

    def check_streaming(self) -> None:
        """Refuse a run that cannot stream, saying what to change."""
        o = self.objective.source.options
        if not self.model.causal:
            raise ConfigError("streaming needs a causal encoder (model.causal: true); this "
                              "run's encoder reads the whole utterance")
        if o.normalize == "utterance":
            raise ConfigError("streaming needs features that need no future: this run "
                              "normalises each utterance (data.normalize: utterance); train "
                              "with data.normalize: global")
        if o.top_db is not None:
            raise ConfigError("streaming needs features that need no future: this run clips "
                              f"to {o.top_db:g} dB below each utterance's peak; train with "
                              "data.top_db: null")

    def stream(self, chunks: Iterable[np.ndarray], *, beam: int | None = None) -> Iterator[str]:
        """Transcribe mono samples arriving in chunks: yields the transcript so far after
        each chunk, and the final one once the chunks end."""
        live = _Stream(self, beam or self.objective.options.beam)
        for chunk in chunks:
            yield live.push(chunk)
        yield live.finish()

    def _streamed(self, samples: np.ndarray, beam: int, n_best: int,
                  chunk_seconds: float) -> list[Transcript]:
        if chunk_seconds <= 0:
            raise ConfigError(f"chunk_seconds must be positive, got {chunk_seconds}")
        step = max(1, int(chunk_seconds * self.sample_rate))
        live = _Stream(self, max(beam, n_best))
        for i in range(0, len(samples), step):
            live.push(samples[i:i + step])
        live.finish()
        return live.best(n_best)

    def transcribe_files(self, paths: list[str | Path], out: str | Path, **options) -> int:
        """Transcribe audio files into ``out``: JSON Lines of ``{"audio", "transcripts":
        [{"text", "logprob"}]}`` when its name ends in ``.jsonl``, else ``path<TAB>text``
        lines. Returns the count."""
        import json

        from seqlab.io import atomic_write

        results = self.transcribe([str(p) for p in paths], **options)
        if str(out).endswith(".jsonl"):
            body = "".join(json.dumps({"audio": str(p), "transcripts": [t.__dict__ for t in r]})
                           + "\n" for p, r in zip(paths, results))
        else:
            body = "".join(f"{p}\t{r[0].text}\n" for p, r in zip(paths, results))
        atomic_write(Path(out), body.encode())
        return len(paths)


class Seq2SeqSpeechPipeline(SpeechPipeline):
    """An attention-based recogniser (the ``seq2seq`` objective over the ``speech``
    source): ``transcribe`` decodes each utterance greedily or by beam search; it reads
    the whole utterance, so it does not stream."""

    def _decode(self, x, mask, beam, n_best):
        from seqlab.data.batch import Batch

        found = self.objective.decode_batch(self.model, Batch(x, None, mask), beam=beam,
                                            n_best=n_best)
        return [[Transcript(self.objective.text(h.tokens), h.logprob) for h in hyps]
                for hyps in found]

    def check_streaming(self) -> None:
        raise ConfigError("an attention-based recogniser decodes once the whole utterance is "
                          "encoded; streaming needs a ctc run with a causal encoder")


class _Stream:
    """One stream's features, encoder state and decoder."""

    def __init__(self, pipeline: SpeechPipeline, beam: int):
        pipeline.check_streaming()
        self.pipeline, self.objective = pipeline, pipeline.objective
        self.source = self.objective.source
        self.features = StreamingFeatures(self.source.extractor)
        blank, top_k = self.objective.blank, self.objective.options.top_k
        self.decoder = GreedyStream(blank) if beam == 1 else PrefixBeamSearch(blank, beam, top_k)
        self.state = pipeline.model.init_state(1, pipeline.device)

    @torch.no_grad()
    def _feed(self, frames: torch.Tensor) -> str:
        if len(frames):
            x = torch.from_numpy(self.source.normalise(frames.numpy()))[None]
            out = self.pipeline.model(x.to(self.pipeline.device), self.state)
            self.state = out.state
            self.decoder.advance(out.logits[0].float().cpu().numpy())
        return self.best(1)[0].text

    def push(self, samples) -> str:
        """Add samples; the transcript so far."""
        return self._feed(self.features.push(np.asarray(samples, dtype=np.float32)))

    def finish(self) -> str:
        return self._feed(self.features.finish())

    def best(self, n: int) -> list[Transcript]:
        text = self.objective.text
        if isinstance(self.decoder, GreedyStream):
            return [Transcript(text(self.decoder.tokens), self.decoder.logprob)]
        return [Transcript(text(h.tokens), h.logprob) for h in self.decoder.best(n)]


__all__ = ["Seq2SeqSpeechPipeline", "SpeechPipeline", "Transcript"]
