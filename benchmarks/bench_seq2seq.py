"""Sequence-to-sequence tasks made on the machine: a Transformer encoder-decoder against
an LSTM encoder-decoder with additive (Bahdanau) attention at about the same number of
parameters, greedy against beam search, and decoding speed with and without the cache.

Tasks (``seqlab.datasets.seq2seq_pairs``):

- ``g2p``: English words to espeak-ng's phonemes (one per space-separated token), split
  by word; BLEU over phonemes, and WER over phonemes is the phoneme error rate;
- ``code``: a standard-library function's body to the first line of its docstring,
  split by module; BLEU over words (sacrebleu's 13a).

Each model trains for ``--steps`` steps (``--code-steps`` on code, whose pairs are
several times longer) with the same batch, learning rate and schedule,
keeping its best validation loss; the held-out test split is then decoded greedily and
with beam 4 (length penalty 1) and scored (BLEU, chrF, exact match, token and word
error rates). Decoding speed: the first ``--decode`` test sources, greedy, in batches
of 32, through the decoder's state (cache) and re-reading each prefix at every step.

    python benchmarks/bench_seq2seq.py [--quick] [--steps 1500] [--code-steps 600] [--threads N]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from _common import markdown_table, parse_args, report

TASKS = {
    "g2p": dict(context=48, bleu="none", batch=64, words=20000),
    "code": dict(context=256, bleu="13a", batch=32),
}
MODELS = {
    "transformer": {"mixer": "attention", "position": "rope", "d_model": 128, "n_layers": 2,
                    "n_heads": 4, "encoder": {"n_layers": 2}},
    "lstm-attention": {"mixer": "lstm", "position": "none", "ffn": "none", "d_model": 160,
                       "n_layers": 2, "cross_attention": "additive", "n_heads": 1,
                       "encoder": {"n_layers": 2}},
}


def prepare(task: str, folder: Path, quick: bool) -> None:
    from seqlab.datasets.seq2seq_pairs import write_code_summaries, write_g2p

    if task == "g2p":
        write_g2p(folder, n_words=800 if quick else TASKS[task]["words"], seed=0)
    else:
        write_code_summaries(folder, max_pairs=600 if quick else 20000, max_body_chars=240, seed=0)


def config(task: str, model: str, folder: Path, steps: int):
    import seqlab

    t = TASKS[task]
    return seqlab.RunConfig.from_dict({
        "task": "seq2seq", "seed": 0, "tokenizer": {"kind": "char"},
        "task_options": {"label_smoothing": 0.1, "eval_decode": 0, "bleu_tokenize": t["bleu"]},
        "model": {**MODELS[model], "context_length": t["context"], "dropout": 0.1},
        "data": {"source": "parallel", "path": str(folder / "train.tsv"),
                 "val_path": str(folder / "val.tsv"), "max_target_length": 96},
        "train": {"steps": steps, "batch_size": t["batch"], "lr": 2e-3, "warmup_steps": 100,
                  "eval_every": max(steps // 4, 1), "eval_batches": 20, "progress": False}})


def score(pipeline, pairs, beam: int, bleu: str) -> dict:
    from seqlab.tasks.seq2seq_metrics import text_scores

    tok = pipeline.tokenizer
    sources = [tok.decode(s.tolist()) for s in pairs.sources]
    refs = [tok.decode(t.tolist()) for t in pairs.targets]
    start = time.perf_counter()
    outs = [o[0].text for o in pipeline.translate(sources, beam=beam, batch_size=32)]
    seconds = time.perf_counter() - start
    scores = text_scores(outs, refs, [tok.encode(o) for o in outs], [t.tolist() for t in pairs.targets],
                         bleu_tokenize=bleu)
    return {**scores, "per_s": len(sources) / seconds}


def decode_speed(pipeline, pairs, n: int) -> dict:
    from seqlab.data.batch import Batch, pad

    objective, tok = pipeline.objective, pipeline.tokenizer
    rates = {}
    for cache in (True, False):
        start = time.perf_counter()
        for i in range(0, n, 32):
            ids, mask = pad(pairs.sources[i:i + 32], value=tok.pad_id, dtype=torch.long)
            objective.decode_batch(pipeline.model, Batch(ids, None, mask), beam=1, cache=cache)
        rates[cache] = n / (time.perf_counter() - start)
    return rates


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=1, iters=1, warmup=0,
                      extra=lambda p: (p.add_argument("--steps", type=int, default=1500),
                                       p.add_argument("--code-steps", type=int, default=600),
                                       p.add_argument("--decode", type=int, default=256),
                                       p.add_argument("--tasks", default="g2p,code")))
    import seqlab

    steps = 30 if args.quick else args.steps
    n_decode = 32 if args.quick else args.decode
    rows, speeds, sizes = [], [], []
    for task in args.tasks.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            prepare(task, folder, args.quick)
            for model in MODELS:
                start = time.perf_counter()
                task_steps = steps if task == "g2p" or args.quick else args.code_steps
                seqlab.fit(config(task, model, folder, task_steps), folder / model)
                train_s = time.perf_counter() - start
                pipeline = seqlab.load(folder / model)
                test = pipeline.objective.source.read_pairs(str(folder / "test.tsv"))
                if args.quick:
                    test = test.take(range(min(len(test), 32)))
                params = sum(p.numel() for p in pipeline.model.parameters())
                sizes.append([task, model, f"{params:,}", f"{train_s:.0f}"])
                for beam in (1, 4):
                    s = score(pipeline, test, beam, TASKS[task]["bleu"])
                    rows.append([task, model, "greedy" if beam == 1 else "beam 4",
                                 f"{s['bleu']:.1f}", f"{s['chrf']:.1f}", f"{s['exact']:.3f}",
                                 f"{s['ter']:.3f}", f"{s['wer']:.3f}", f"{s['per_s']:.0f}"])
                n = min(n_decode, len(test))
                rate = decode_speed(pipeline, test, n)
                speeds.append([task, model, n, f"{rate[True]:.0f}", f"{rate[False]:.0f}",
                               f"{rate[True] / rate[False]:.2f}x"])
    tasks = args.tasks.split(",")
    code = (f"{30 if args.quick else args.code_steps} on code" if "code" in tasks
            else "code summarisation not run")
    notes = (f"Each model: {steps} steps on g2p, {code}, batch 64 (g2p) or 32 (code) pairs, "
             "lr 2e-3, 100 "
             "warm-up steps, label smoothing 0.1, dropout 0.1, char tokenizer over both "
             "sides, the weights of the best validation loss; scored on the test split "
             "(held-out words, held-out modules). WER on g2p is the phoneme error rate; "
             "ter is the error rate over the tokenizer's tokens (characters). Decoding "
             "rates in sentences per second on the CPU threads shown above.")
    sections = [notes,
                markdown_table(["task", "model", "parameters", "train seconds"], sizes),
                markdown_table(["task", "model", "decoding", "BLEU", "chrF", "exact", "ter",
                                "wer", "sentences/s"], rows),
                markdown_table(["task", "model", "sentences", "greedy with cache /s",
                                "re-reading the prefix /s", "cache speed-up"], speeds)]
    report("bench_seq2seq", "Sequence to sequence on grapheme-to-phoneme and code "
           "summarisation: Transformer vs LSTM with attention", args, sections)


if __name__ == "__main__":
    main()
