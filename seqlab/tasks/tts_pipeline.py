"""A trained speech synthesiser ready to use: ``speak`` turns text into a waveform (and a
WAV file), ``synthesize`` into log-mel frames (what ``seqlab.load`` returns for ``tts``
runs).

Synthesis is autoregressive: the decoder makes ``frames_per_step`` frames per step from
the frames before, until its stop probability passes ``task_options.stop_threshold``
(or ``max_seconds``). The pre-net's dropout stays on, drawn from ``seed``, so one text
and seed always give the same audio. The frames are un-normalised with the training
statistics and turned into samples by Griffin-Lim (:mod:`seqlab.data.vocoder`).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from seqlab.errors import DataError
from seqlab.io import atomic_write
from seqlab.tasks.pipeline import Pipeline


class TTSPipeline(Pipeline):
    """``speak(text, out=...)``: a waveform at the run's sample rate, written as WAV."""

    @property
    def sample_rate(self) -> int:
        return self.objective.source.options.sample_rate

    def text_ids(self, text: str, where: str = "text") -> torch.Tensor:
        """The ids of ``text``, refusing an empty one, one with characters this voice
        never saw, and one longer than the encoder reads."""
        if not str(text).strip():
            raise DataError(f"{where}: the text is empty")
        tok = self.tokenizer
        ids = tok.encode_array(str(text))
        if tok.unk_id is not None and bool(np.any(ids == tok.unk_id)):
            unknown = sorted({c for c in str(text) if tok.encode_array(c).tolist() == [tok.unk_id]})
            known = "".join(sorted(tok.decode([i]) for i in range(len(tok.special_tokens),
                                                                    tok.vocab_size)))
            raise DataError(f"{where}: {', '.join(map(repr, unknown))} not in this voice's "
                            f"vocabulary ({known!r}); write the text with those characters")
        limit = self.objective.source.limits[1]
        if len(ids) > limit:
            raise DataError(f"{where}: the text is {len(ids)} tokens long; this voice reads at "
                            f"most {limit}")
        return torch.as_tensor(ids, dtype=torch.long)[None]

    @property
    def max_steps(self) -> int:
        o, source = self.objective.options, self.objective.source
        steps = math.ceil(o.max_seconds * self.sample_rate / source.options.hop_length
                          / o.frames_per_step)
        limit = self.model.max_positions or self.config.model.context_length
        return max(1, min(steps, limit))

    @torch.no_grad()
    def synthesize(self, text: str, *, seed: int = 0) -> np.ndarray:
        """The log-mel frames (frames, n_mels) of ``text``, in decibels."""
        ids = self.text_ids(text).to(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            steps = self.model.synthesize(ids, max_steps=self.max_steps,
                                          stop_threshold=self.objective.options.stop_threshold)[0]
        source = self.objective.source
        frames = steps.reshape(-1, source.input_dim).cpu().numpy()
        if source.stats is not None:  # back from the training frames' normalisation
            frames = (frames * np.asarray(source.stats["std"], np.float32)
                      + np.asarray(source.stats["mean"], np.float32))
        return frames

    def speak(self, text: str, out: str | Path | None = None, *, seed: int = 0,
              iters: int | None = None) -> np.ndarray:
        """The waveform of ``text`` (float32, mono, peak 0.9), also written to the WAV
        file ``out`` when given."""
        from seqlab.data.vocoder import Vocoder

        vocoder = Vocoder(self.objective.source.extractor.config)
        frames = torch.from_numpy(self.synthesize(text, seed=seed))
        iters = iters or self.objective.options.griffin_lim_iters
        samples = vocoder(frames, iters=iters, seed=seed)
        if out is not None:
            atomic_write(Path(out), self.wav_bytes(samples))
        return samples

    def wav_bytes(self, samples: np.ndarray) -> bytes:
        """A 16-bit WAV file of ``samples`` at the run's rate."""
        import soundfile

        buffer = io.BytesIO()
        soundfile.write(buffer, samples, self.sample_rate, format="WAV", subtype="PCM_16")
        return buffer.getvalue()


__all__ = ["TTSPipeline"]
