"""Longer context after training: validation loss at 1x, 2x, 4x and 8x the trained
context, for rotary positions left as they are, position interpolation (linear) and
NTK-aware scaling, before and after a short fine-tuning at 4x.

A Llama-style model (rotary positions, d_model 128, 4 layers) is trained as a causal LM
at context 64 on the standard library's source. It is then read at 64, 128, 256 and
512 tokens: unchanged, with ``model.rope_scaling: linear`` and with ``ntk`` (factor =
length / 64). Then it is fine-tuned for a few steps at context 256 with each scaling
(factor 4, ``seqlab.finetune``) and read again at every length (with factor 4 kept).

    python benchmarks/bench_context.py [--quick]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import markdown_table, parse_args, report

BASE = 64
LENGTHS = (64, 128, 256, 512)


def main() -> None:
    import seqlab
    from seqlab.datasets.stdlib import STDLIB_EXCLUDE, stdlib_dir

    args = parse_args(__doc__.splitlines()[0], rounds=1, iters=1, warmup=0)
    steps, tune_steps, batches = (40, 10, 2) if args.quick else (600, 100, 12)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train = {"batch_size": 16, "lr": 2e-3, "warmup_steps": 20, "progress": False,
                 "num_threads": args.threads or 2}
        config = seqlab.RunConfig.from_dict({
            "seed": 0, "model": {"preset": "llama-tiny", "context_length": BASE},
            "data": {"path": str(stdlib_dir()), "extensions": [".py"], "exclude": STDLIB_EXCLUDE,
                     "max_bytes": 3_000_000},
            "train": {**train, "steps": steps, "eval_every": steps, "eval_batches": batches}})
        seqlab.fit(config, tmp / "base")

        def losses(run: Path, scaling: str, factor: float | None) -> list[str]:
            out = []
            for length in LENGTHS:
                f = factor or length / BASE
                # The same tokens at every length: blocks x rows stays 16 x 512 per batch.
                sets = [f"model.context_length={length}", f"train.eval_batches={batches}",
                        f"train.batch_size={16 * LENGTHS[-1] // length}"]
                if scaling != "none":
                    sets += [f"model.rope_scaling={scaling}", f"model.rope_factor={max(f, 1.0)}"]
                metrics = seqlab.load(run, overrides=sets).evaluate(max_batches=batches)
                out.append(f"{metrics['val_loss']:.3f}")
            return out

        rows = [[f"trained at {BASE}, {s}", *losses(tmp / "base", s, None)]
                for s in ("none", "linear", "ntk")]
        for scaling in ("none", "linear", "ntk"):
            sets = [f"model.context_length={4 * BASE}", f"train.steps={tune_steps}",
                    f"train.eval_every={tune_steps}", "train.warmup_steps=5", "train.lr=5e-4"]
            if scaling != "none":
                sets += [f"model.rope_scaling={scaling}", "model.rope_factor=4.0"]
            tuned = config.replace(sets)
            seqlab.finetune(tuned, tmp / f"tuned-{scaling}", from_run=tmp / "base",
                            overrides=["init.measure_forgetting=false"])
            rows.append([f"+{tune_steps} steps at {4 * BASE}, {scaling}",
                         *losses(tmp / f"tuned-{scaling}", scaling, 4.0 if scaling != "none" else None)])
    table = markdown_table(["model", *(f"{n} ({n // BASE}x)" for n in LENGTHS)], rows)
    report("bench_context", "Longer context: loss at 1x-8x the trained context", args,
           [f"Llama-style (rotary) causal LM, d_model 128, 4 layers, trained {steps} steps at "
            f"context {BASE} on standard-library source; validation loss (nats per token) over "
            f"the same {batches} x 8192 validation tokens at each length, cut into blocks of "
            f"that length. Before fine-tuning the factor is length / {BASE}; "
            "after it, 4 (what the model was tuned with).\n\n" + table])


if __name__ == "__main__":
    main()
