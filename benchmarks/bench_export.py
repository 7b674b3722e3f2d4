"""Decoding through exported graphs: ONNX Runtime against PyTorch eager, same weights.

For the ``gpt``, ``lstm-lm`` and ``mamba`` tiny presets (random weights: speed does not
depend on what was learned), a 16-token prompt is prefilled and 128 tokens are decoded
greedily, one step at a time with the state fed back: by seqlab's model in PyTorch eager
(``model(token, state)``, what ``generate`` does), and by the ``seqlab export --format
onnx`` graphs in ONNX Runtime (``seqlab.export.ExportedModel``). One thread for both.
Tokens/s counts decoded tokens over the decoding time (prefill excluded), median over
rounds; the case order alternates per round.

    python benchmarks/bench_export.py [--quick] [--batch 1]
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from _common import markdown_table, parse_args, report

PRESETS = ("gpt-tiny", "lstm-lm-tiny", "mamba-tiny")


def make_run(preset: str, root: Path) -> Path:
    import seqlab

    corpus = root / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 50)
    config = seqlab.RunConfig.from_dict({
        "seed": 0, "model": {"preset": preset, "context_length": 256}, "data": {"path": str(corpus)},
        "train": {"steps": 1, "batch_size": 2, "eval_every": 1, "eval_batches": 1,
                  "progress": False}})
    seqlab.fit(config, root / preset)
    return root / preset


def eager_decode(model, ids: torch.Tensor, steps: int) -> float:
    with torch.no_grad():
        out = model(ids, model.init_state(ids.shape[0]))
        state, token = out.state, out.logits[:, -1].argmax(-1, keepdim=True)
        start = time.perf_counter()
        for _ in range(steps):
            out = model(token, state)
            state, token = out.state, out.logits[:, -1].argmax(-1, keepdim=True)
        return time.perf_counter() - start


def exported_decode(exported, ids: torch.Tensor, steps: int) -> float:
    logits, state = exported.prefill(ids)
    token = logits[:, -1].argmax(-1, keepdim=True)
    start = time.perf_counter()
    for _ in range(steps):
        logits, state = exported.step(token, state)
        token = logits[:, -1].argmax(-1, keepdim=True)
    return time.perf_counter() - start


def main() -> None:
    import seqlab
    from seqlab.export import ExportedModel, export_run

    args = parse_args(__doc__.splitlines()[0], rounds=5, iters=1, warmup=1,
                      extra=lambda p: p.add_argument("--batch", type=int, default=1))
    torch.set_num_threads(args.threads or 1)
    steps = 32 if args.quick else 128
    rows, ratios = [], {}
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for preset in PRESETS:
            run = make_run(preset, root)
            export_run(run, root / f"{preset}-onnx", fmt="onnx")
            model = seqlab.load(run).model
            exported = ExportedModel(root / f"{preset}-onnx", threads=args.threads or 1)
            ids = torch.randint(0, 256, (args.batch, 16))
            cases = {"eager": lambda: eager_decode(model, ids, steps),
                     "onnx": lambda: exported_decode(exported, ids, steps)}
            for case in cases.values():
                for _ in range(args.warmup):
                    case()
            times = {k: [] for k in cases}
            for r in range(args.rounds):
                for name in (list(cases) if r % 2 == 0 else list(cases)[::-1]):
                    times[name].append(cases[name]())
            rate = {k: args.batch * steps / statistics.median(v) for k, v in times.items()}
            ratios[preset] = rate["onnx"] / rate["eager"]
            prefill = "yes" if exported.manifest["graphs"]["prefill"] else "no (steps through the prompt)"
            rows.append([preset, f"{rate['eager']:,.0f}", f"{rate['onnx']:,.0f}",
                         f"{ratios[preset]:.2f}x", prefill])
    table = markdown_table(["model", "PyTorch eager (tokens/s)", "ONNX Runtime (tokens/s)",
                            "ORT / eager", "prefill graph"], rows)
    report("bench_export", "Decoding through exported graphs: ONNX Runtime vs PyTorch eager", args,
           [f"Greedy decoding of {steps} tokens after a 16-token prompt, batch {args.batch}, "
            f"{args.threads or 1} thread(s), tiny presets at context 256.\n\n" + table])


if __name__ == "__main__":
    main()
