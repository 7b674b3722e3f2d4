"""Text to speech, closed loop: seqlab's synthesiser speaks the test sentences, and
seqlab's recogniser transcribes them; its error rates there are set against the same
recogniser's on espeak-ng's own audio of the same sentences in the same voice.

Data (``seqlab.datasets.speech_corpus``): the synthesiser learns one voice
(``write_voice_corpus``: espeak-ng's en-us+m3, one speed and pitch, clean, split by
text); the recogniser learns 24 other-or-same voices with noise
(``write_speech_corpus``), as ``bench_speech.py``'s ctc-bilstm. Either can be given as a
trained run (``--tts RUN``, ``--recogniser RUN``) instead of being trained here.

Reported: CER and WER of the recogniser on synthesised and on espeak-ng speech, the
share of syntheses its stop logit ended (not the length cap), the mean length of
synthesised over espeak-ng audio, and synthesis speed (audio seconds per second,
Griffin-Lim included).

    python benchmarks/bench_tts.py [--quick] [--steps 2500] [--tts RUN] [--recogniser RUN]
           [--voice-data FOLDER] [--speech-data FOLDER] [--threads N]
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from _common import markdown_table, parse_args, report

TTS_MODEL = {"mixer": "lstm", "d_model": 160, "n_layers": 2, "position": "none", "ffn": "none",
             "cross_attention": "additive", "n_heads": 1, "context_length": 144, "dropout": 0.1,
             "encoder": {"mixer": "lstm", "n_layers": 2, "context_length": 96}}


def tts_config(folder: Path, steps: int):
    import seqlab

    return seqlab.RunConfig.from_dict({
        "task": "tts", "seed": 0, "tokenizer": {"kind": "char"},
        "task_options": {"frames_per_step": 4, "griffin_lim_iters": 60}, "model": TTS_MODEL,
        "data": {"source": "speech", "path": str(folder / "train.jsonl"),
                 "val_path": str(folder / "val.jsonl"), "n_mels": 80, "normalize": "global"},
        "train": {"steps": steps, "batch_size": 16, "lr": 2e-3, "warmup_steps": 100,
                  "eval_every": max(steps // 5, 1), "progress": False}})


def recogniser_config(folder: Path, steps: int):
    import seqlab

    return seqlab.RunConfig.from_dict({
        "task": "ctc", "seed": 0, "tokenizer": {"kind": "char"},
        "model": {"mixer": "lstm", "causal": False, "d_model": 160, "n_layers": 3,
                  "input": "conv_subsample", "patch": 4, "position": "none", "dropout": 0.1,
                  "context_length": 256},
        "data": {"source": "speech", "path": str(folder / "train.jsonl"),
                 "val_path": str(folder / "val.jsonl"), "n_mels": 80, "spec_augment": True},
        "train": {"steps": steps, "batch_size": 24, "lr": 2e-3, "warmup_steps": 100,
                  "eval_every": max(steps // 4, 1), "eval_batches": 8, "best_metric": "cer",
                  "progress": False}})


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=1, iters=1, warmup=0,
                      extra=lambda p: (p.add_argument("--steps", type=int, default=2500),
                                       p.add_argument("--recogniser-steps", type=int, default=1200),
                                       p.add_argument("--tts", type=Path, default=None),
                                       p.add_argument("--recogniser", type=Path, default=None),
                                       p.add_argument("--voice-data", type=Path, default=None),
                                       p.add_argument("--speech-data", type=Path, default=None)))
    import numpy as np

    import seqlab
    from seqlab.datasets.speech_corpus import write_speech_corpus, write_voice_corpus
    from seqlab.tasks.seq2seq_metrics import error_counts

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        voice = args.voice_data or tmp / "voice"
        if not (voice / "train.jsonl").exists():
            write_voice_corpus(voice, n_utterances=80 if args.quick else 1800,
                               test=10 if args.quick else 100, val=10 if args.quick else 60)
        tts_run = args.tts
        if tts_run is None:
            tts_run = tmp / "tts"
            seqlab.fit(tts_config(voice, 10 if args.quick else args.steps), tts_run)
        rec_run = args.recogniser
        if rec_run is None:
            speech = args.speech_data or tmp / "speech"
            if not (speech / "train.jsonl").exists():
                write_speech_corpus(speech, n_utterances=120 if args.quick else 3000,
                                    n_voices=8 if args.quick else 24, seed=0)
            rec_run = tmp / "recogniser"
            seqlab.fit(recogniser_config(speech, 10 if args.quick else args.recogniser_steps),
                       rec_run)
        tts, recogniser = seqlab.load(tts_run), seqlab.load(rec_run)
        from seqlab.errors import DataError

        def sayable(text: str) -> bool:  # letters the voice met in training
            try:
                tts.text_ids(text)
                return True
            except DataError:
                return False

        every = [json.loads(line) for line in (voice / "test.jsonl").read_text().splitlines()]
        rows = [r for r in every if sayable(r["text"])]
        texts = [r["text"] for r in rows]
        start, spoken, stopped = time.perf_counter(), [], 0
        cap = tts.max_steps * tts.objective.options.frames_per_step * 160
        for text in texts:
            samples = tts.speak(text, seed=0)
            spoken.append(samples)
            stopped += len(samples) < cap
        synth_s = time.perf_counter() - start
        audio_s = sum(len(s) for s in spoken) / tts.sample_rate
        heard = [t[0].text for t in recogniser.transcribe(spoken)]
        original = [t[0].text for t in recogniser.transcribe([str(voice / r["audio"]) for r in rows])]
        import soundfile

        lengths = [len(s) / len(soundfile.read(str(voice / r["audio"]))[0])
                   for s, r in zip(spoken, rows)]
        table = []
        for name, hyps in (("espeak-ng's audio", original), ("seqlab tts audio", heard)):
            we, wn, ce, cn = error_counts(hyps, texts)
            table.append([name, f"{ce / cn:.3f}", f"{we / wn:.3f}",
                          f"{np.mean([h == t for h, t in zip(hyps, texts)]):.2f}"])
        examples = [[t, h] for t, h in list(zip(texts, heard))[:6]]
        tts_metrics = json.loads((Path(tts_run) / "metrics.jsonl").read_text().splitlines()[-1])
    notes = (f"{len(texts)} test sentences (held out from the synthesiser's training; "
             f"{len(every) - len(texts)} more hold letters it never saw and are left out), "
             f"spoken by seqlab's tts (seed 0, 60 Griffin-Lim iterations) and by espeak-ng; "
             f"both transcribed by the same ctc recogniser. The synthesiser's stop logit ended "
             f"{stopped} of {len(texts)} syntheses; synthesised audio is "
             f"{np.mean(lengths):.2f}x espeak-ng's length on average; synthesis ran at "
             f"{audio_s / synth_s:.1f}x real time on the CPU threads shown above. The "
             f"synthesiser's last validation record: "
             + ", ".join(f"{k} {v:.3f}" for k, v in tts_metrics.items() if k != "step") + ".")
    sections = [notes,
                markdown_table(["audio", "CER", "WER", "exact"], table),
                markdown_table(["text", "the recogniser heard (seqlab tts)"], examples)]
    report("bench_tts", "Text to speech, closed loop: seqlab's synthesiser heard by seqlab's "
           "recogniser, against espeak-ng's own audio", args, sections)


if __name__ == "__main__":
    main()
