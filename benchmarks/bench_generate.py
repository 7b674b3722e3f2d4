"""Greedy generation speed: seqlab's ``gpt`` preset vs Hugging Face GPT2LMHeadModel.

Batch 1, a 32-token prompt, 256 new tokens, KV cache on both sides, under
``torch.no_grad()``. Context (n_positions) is 512 on both sides since 32 + 256 > 256.
seqlab's ``llama`` and ``lstm-lm`` presets are timed alongside for context (no peer).

    python benchmarks/bench_generate.py [--quick]
"""

from __future__ import annotations

import _common  # noqa: F401  (puts the repo on sys.path)
import torch
from _common import interleaved, markdown_table, median, parse_args, report, speedup, spread
from bench_train import VOCAB, hf_model

from seqlab.config import RunConfig
from seqlab.infer import SamplingConfig, generate
from seqlab.tasks.causal_lm import build_language_model

PROMPT, NEW, CONTEXT = 32, 256, 512
PAD = 256  # ByteTokenizer.pad_id


def seqlab_model(preset: str):
    config = RunConfig.from_dict({"model": {"preset": preset, "vocab_size": VOCAB,
                                            "context_length": CONTEXT}})
    torch.manual_seed(0)
    return build_language_model(config).eval(), config


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=5, iters=1, warmup=1)
    print(_common.machine_info())

    gpt, config = seqlab_model("gpt")
    llama, _ = seqlab_model("llama")
    lstm, _ = seqlab_model("lstm-lm")
    hf = hf_model(config, "gelu").eval()
    print(f"parameters: seqlab gpt {count(gpt):,}  HF {count(hf):,}")
    if count(gpt) != count(hf):
        raise SystemExit(f"parameter counts differ ({count(gpt)} vs {count(hf)})")

    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 256, (1, PROMPT), generator=g)
    greedy = SamplingConfig(greedy=True)

    def seqlab_case(model):
        return lambda: generate(model, prompt, max_new_tokens=NEW, sampling=greedy)

    def hf_case():
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW,
                           min_new_tokens=NEW, do_sample=False, use_cache=True, pad_token_id=PAD)

    cases = {"seqlab gpt": seqlab_case(gpt), "HF GPT-2": hf_case,
             "seqlab llama": seqlab_case(llama), "seqlab lstm-lm": seqlab_case(lstm)}
    with torch.no_grad():
        new_tokens = {name: fn().shape[1] - PROMPT for name, fn in cases.items()}
        for name, n in new_tokens.items():
            if n != NEW:
                raise SystemExit(f"{name} produced {n} new tokens, expected {NEW}")
        times = interleaved(cases, rounds=args.rounds, iters=args.iters, warmup=args.warmup)

    rows = [[name, f"{count(model):,}", f"{median(ts) * 1e3:.0f}",
             spread(ts, 1e3), f"{NEW / median(ts):,.0f}", new_tokens[name]]
            for (name, ts), model in zip(times.items(), (gpt, hf, llama, lstm))]
    table = markdown_table(["case", "parameters", "ms per generate (median)", "ms (min–max)",
                            "new tokens/s", "new tokens"], rows)
    ratio = markdown_table(
        ["comparison (new tokens/s ratio, median of per-round ratios)", "ratio", "target"],
        [["seqlab gpt / HF GPT-2", f"{speedup(times, 'seqlab gpt', 'HF GPT-2'):.2f}x", ">= 1.5x"]])
    notes = (
        f"Greedy decoding, batch 1, {PROMPT}-token prompt (random bytes), {NEW} new tokens, "
        "timed end to end (prefill + decode). seqlab: `seqlab.infer.generate(model, prompt, "
        f"max_new_tokens={NEW}, sampling=SamplingConfig(greedy=True))`. HF: `model.generate(prompt, "
        f"max_new_tokens={NEW}, min_new_tokens={NEW}, do_sample=False, use_cache=True, "
        f"pad_token_id={PAD})` (min_new_tokens masks the eos logit, so HF always runs {NEW} steps; "
        "seqlab is given no eos). Both gpt models: 4 layers, 4 heads, d_model 256, "
        f"context {CONTEXT}, vocabulary {VOCAB}, tied embeddings, exact GELU, HF sdpa attention. "
        "Random weights: the two models do not emit the same tokens, only the same number.")
    report("bench_generate", "Greedy generation: seqlab vs HF GPT-2 (CPU, batch 1)", args,
           [table, ratio, notes])


if __name__ == "__main__":
    main()
