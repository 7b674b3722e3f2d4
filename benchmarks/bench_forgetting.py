"""Fine-tuning without forgetting: the new task's accuracy against how much of the old
objective is lost, for each mitigation, in one run.

A small bidirectional attention model is pre-trained with masked LM on 512-byte
snippets of the standard library's source (``seqlab.datasets.write_package_snippets``),
then fine-tuned to classify which package a snippet comes from, the same way each
time except for the mitigation:

- plain full fine-tuning, at a rate high enough to forget;
- ``frozen`` (a linear probe: nothing to forget, the least to learn);
- ``lora`` (rank 8 adapters);
- replay (``init.replay``), L2-SP (``init.penalty``), EWC (``init.ewc``).

Forgetting is ``pretrain/forgetting``: the rise of the masked-LM validation loss
through the fine-tuned backbone and the pre-trained head.

    python benchmarks/bench_forgetting.py [--quick]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import markdown_table, parse_args, report

CASES = {
    "full": ({}, "full"),
    "frozen (linear probe)": ({}, "frozen"),
    "lora (rank 8)": ({}, "lora"),
    "replay 1.0": ({"init": {"replay": 1.0}}, "full"),
    "L2-SP 0.1": ({"init": {"penalty": 0.1}}, "full"),
    "EWC 1000": ({"init": {"ewc": 1000.0}}, "full"),
}


def main() -> None:
    import seqlab
    from seqlab.datasets import write_package_snippets

    args = parse_args(__doc__.splitlines()[0], rounds=1, iters=1, warmup=0)
    pre_steps, fine_steps = (60, 30) if args.quick else (600, 300)
    model = {"mixer": "attention", "causal": False, "position": "rope", "d_model": 96,
             "n_layers": 3, "n_heads": 4, "context_length": 128}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_package_snippets(tmp / "data", per_package_cap=60, min_snippets=32)
        data = {"source": "examples", "path": str(tmp / "data" / "train.jsonl"),
                "val_path": str(tmp / "data" / "val.jsonl"), "max_length": 128, "bucket": True}
        train = {"batch_size": 16, "eval_batches": 8, "progress": False,
                 "num_threads": args.threads or 2}
        pre = seqlab.RunConfig.from_dict({
            "task": "masked_lm", "seed": 0, "model": model, "data": data,
            "train": {**train, "steps": pre_steps, "lr": 2e-3, "warmup_steps": 20,
                      "eval_every": pre_steps}})
        pre_result = seqlab.fit(pre, tmp / "pre")
        for name, (extra, mode) in CASES.items():
            fine = seqlab.RunConfig.from_dict({
                "task": "classify", "seed": 0, "model": model, "data": data, **extra,
                "train": {**train, "steps": fine_steps, "lr": 3e-3, "warmup_steps": 10,
                          "eval_every": fine_steps, "best_metric": "accuracy"}})
            result = seqlab.finetune(fine, tmp / name.split()[0], from_run=tmp / "pre", mode=mode)
            m = result.metrics
            rows.append([name, f"{m['accuracy']:.3f}", f"{m['pretrain/loss']:.3f}",
                         f"{m['pretrain/forgetting']:+.3f}", f"{m['pretrain/masked_accuracy']:.3f}"])
    table = markdown_table(["fine-tuning", "classify accuracy", "masked-LM loss after",
                            "forgetting (loss rise)", "masked accuracy after"], rows)
    report("bench_forgetting", "Fine-tuning without forgetting: accuracy against forgetting", args,
           [f"Masked-LM pre-training: {pre_steps} steps (validation loss "
            f"{pre_result.metrics['val_loss']:.3f}, masked accuracy "
            f"{pre_result.metrics['masked_accuracy']:.3f}); classification fine-tuning: "
            f"{fine_steps} steps at lr 3e-3. Model: attention, d_model 96, 3 layers, context 128."
            "\n\n" + table])


if __name__ == "__main__":
    main()
