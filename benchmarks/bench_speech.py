"""Speech recognition on a corpus made on the machine: CTC and attention-based
recognisers, scored on voices never heard in training, clean and noisy.

The corpus (``seqlab.datasets.speech_corpus.write_speech_corpus``): espeak-ng speaks
numbers, dates and short sentences in 24 voices (7 accents, several variants, speeds
and pitches); training utterances carry white noise at a random level (none, 20, 10
or 5 dB SNR); 3 voices are held out for validation and 3 for test, and every test
utterance is scored at every level.

Models, each ``--steps`` steps at the same batch, learning rate and schedule, keeping
the weights of the best validation CER:

- ``ctc-bilstm``: a convolutional front end (4x fewer positions) and a bidirectional
  LSTM with a CTC head;
- ``ctc-stream``: the same with a causal LSTM, causal features (global normalisation,
  no peak clip), so it transcribes audio streamed in chunks;
- ``seq2seq``: the same front end and bidirectional LSTM encoder, and an LSTM decoder
  with additive attention, trained by teacher forcing.

Scores: corpus WER and CER (jiwer) of greedy decoding and of beam search (prefix beam
8 for CTC, beam 4 for seq2seq), per noise level; the real-time factor (audio seconds
transcribed per second, greedy, batches of 16).

    python benchmarks/bench_speech.py [--quick] [--steps 1200] [--data FOLDER] [--threads N]
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from _common import markdown_table, parse_args, report

FRONT = {"input": "conv_subsample", "patch": 4, "position": "none", "dropout": 0.1,
         "context_length": 256}
MODELS = {
    "ctc-bilstm": ("ctc", {"mixer": "lstm", "causal": False, "d_model": 160, "n_layers": 3},
                   {}, 8),
    "ctc-stream": ("ctc", {"mixer": "lstm", "causal": True, "d_model": 192, "n_layers": 3},
                   {"normalize": "global", "top_db": None}, 8),
    "seq2seq": ("seq2seq", {"mixer": "lstm", "d_model": 160, "n_layers": 1, "ffn": "none",
                            "cross_attention": "additive", "n_heads": 1, "context_length": 96,
                            "encoder": {"mixer": "lstm", "n_layers": 3, "context_length": 256}},
                {}, 4),
}


def config(name: str, folder: Path, steps: int, batch: int):
    import seqlab

    task, model, data, _ = MODELS[name]
    options = ({"eval_decode": 120, "bleu_tokenize": "char", "label_smoothing": 0.1}
               if task == "seq2seq" else {})
    return seqlab.RunConfig.from_dict({
        "task": task, "seed": 0, "tokenizer": {"kind": "char"}, "task_options": options,
        "model": {**FRONT, **model},
        "data": {"source": "speech", "path": str(folder / "train.jsonl"),
                 "val_path": str(folder / "val.jsonl"), "n_mels": 80, "spec_augment": True,
                 **data},
        "train": {"steps": steps, "batch_size": batch, "lr": 2e-3, "warmup_steps": 100,
                  "eval_every": max(steps // 4, 1), "eval_batches": 8, "best_metric": "cer",
                  "progress": False}})


def test_sets(folder: Path, quick: bool) -> dict[str, list[dict]]:
    """The test rows by noise level, audio paths made absolute."""
    levels: dict[str, list[dict]] = {}
    for line in (folder / "test.jsonl").read_text().splitlines():
        row = json.loads(line)
        row["audio"] = str(folder / row["audio"])
        levels.setdefault("clean" if row["snr"] is None else f"{row['snr']:g} dB", []).append(row)
    return {k: v[:24] if quick else v for k, v in levels.items()}


def score(pipeline, rows: list[dict], beam: int) -> tuple[float, float, float]:
    from seqlab.tasks.seq2seq_metrics import error_counts

    start = time.perf_counter()
    found = pipeline.transcribe([r["audio"] for r in rows], beam=beam, batch_size=16)
    seconds = time.perf_counter() - start
    we, wn, ce, cn = error_counts([f[0].text for f in found], [r["text"] for r in rows])
    return we / wn, ce / cn, seconds


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=1, iters=1, warmup=0,
                      extra=lambda p: (p.add_argument("--steps", type=int, default=1200),
                                       p.add_argument("--batch", type=int, default=24),
                                       p.add_argument("--data", type=Path, default=None),
                                       p.add_argument("--models", default=",".join(MODELS))))
    import numpy as np
    import soundfile

    import seqlab
    from seqlab.datasets.speech_corpus import write_speech_corpus

    steps = 20 if args.quick else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data or Path(tmp) / "speech"
        if not (folder / "train.jsonl").exists():
            write_speech_corpus(folder, n_utterances=120 if args.quick else 3000,
                                n_voices=8 if args.quick else 24,
                                val_voices=2 if args.quick else 3,
                                test_voices=2 if args.quick else 3, seed=0)
        levels = test_sets(folder, args.quick)
        clean = levels["clean"]
        audio_s = sum(len(soundfile.read(r["audio"])[0]) / 16000 for r in clean)
        sizes, rows = [], []
        for name in args.models.split(","):
            start = time.perf_counter()
            seqlab.fit(config(name, folder, steps, args.batch), Path(tmp) / name)
            train_s = time.perf_counter() - start
            pipeline = seqlab.load(Path(tmp) / name)
            params = sum(p.numel() for p in pipeline.model.parameters())
            _, _, seconds = score(pipeline, clean, 1)
            sizes.append([name, f"{params:,}", f"{train_s / 60:.1f}", f"{audio_s / seconds:.0f}x"])
            beam = MODELS[name][3]
            for decoding, width in (("greedy", 1), (f"beam {beam}", beam)):
                cells = []
                for level, items in levels.items():
                    wer, cer, _ = score(pipeline, items, width)
                    cells.append(f"{wer:.3f} / {cer:.3f}")
                rows.append([name, decoding, *cells])
            if MODELS[name][2]:  # a streaming run: chunks of 200 ms give the same transcripts
                files = [r["audio"] for r in clean[:50]]
                whole = [t[0].text for t in pipeline.transcribe(files)]
                streamed = [t[0].text for t in pipeline.transcribe(files, stream=True,
                                                                   chunk_seconds=0.2)]
                same = float(np.mean([a == b for a, b in zip(whole, streamed)]))
                sizes[-1].append(f"{same:.0%} of {len(files)} equal")
            else:
                sizes[-1].append("-")
    notes = (f"Each model: {steps} steps of {args.batch} utterances, lr 2e-3 with 100 warm-up "
             "steps, SpecAugment, 80 log-mel features, dropout 0.1, letters as tokens; the weights "
             "of the best validation CER. Test: "
             + ", ".join(f"{len(v)} {k}" for k, v in levels.items())
             + " utterances of 3 held-out voices. Real-time factor: seconds of clean test audio "
             "transcribed per second (greedy, batches of 16) on the CPU threads shown above.")
    sections = [notes,
                markdown_table(["model", "parameters", "train minutes", "real-time factor",
                                "streamed (200 ms chunks) = whole file"], sizes),
                markdown_table(["model", "decoding", *[f"{k} WER / CER" for k in levels]], rows)]
    report("bench_speech", "Speech recognition on held-out espeak-ng voices: CTC (bidirectional "
           "and streaming) and attention-based seq2seq", args, sections)


if __name__ == "__main__":
    main()
