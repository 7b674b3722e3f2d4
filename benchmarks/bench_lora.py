"""LoRA fine-tuning throughput: seqlab's ``gpt`` preset with its adapters vs Hugging Face
GPT2LMHeadModel with ``peft`` LoRA, same shape, same rank.

One step = forward, cross-entropy on the same (x, y), backward, clip_grad_norm_(1.0),
AdamW step over the trainable parameters only, zero_grad, on CPU in fp32, from random
initialisation. Shapes: ``gpt`` (= gpt-small: 4 layers, 4 heads, d_model 256, context 256,
the bench_train shape) and ``gpt-tiny`` (4 layers, 4 heads, d_model 128, context 128);
batch 16, vocabulary 259, tied embeddings, no dropout, exact GELU on both sides.

LoRA: rank 8, alpha 16, dropout 0. seqlab goes through its own config path (a ``lora``
section in RunConfig, applied with ``apply_lora`` exactly as the Trainer does); HF through
``peft.get_peft_model(model, LoraConfig(...))`` as peft's documentation shows for GPT-2
(``fan_in_fan_out=True`` for its Conv1D layers, ``bias="none"``). Two target sets:

- ``all``: every projection: seqlab's default targets (q_proj, kv_proj, out_proj, ffn.up,
  ffn.down) against GPT-2's c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj. The same matrices,
  but seqlab keeps queries and keys/values in two Linears where GPT-2 fuses them in
  c_attn, so seqlab carries one more A matrix (rank x d_model) per layer: 8 d_model more
  trainable parameters per layer, and a little more work on seqlab's side.
- ``matched``: the projections that map one to one (out_proj, ffn.up, ffn.down against
  attn.c_proj, mlp.c_fc, mlp.c_proj): identical trainable parameter counts, checked.

Both sides use fused AdamW (seqlab's Trainer builds it; it is HF Trainer's default
``adamw_torch_fused``) over the trainable parameters only. HF runs with ``use_cache=False``:
GPT-2 otherwise fills a KV cache on every training forward (about 6% of its step at the
tiny shape), which a training step never reads.

    python benchmarks/bench_lora.py [--quick] [--threads 2]
"""

from __future__ import annotations

import _common  # noqa: F401  (puts the repo on sys.path)
import torch
import torch.nn.functional as F
from _common import interleaved, markdown_table, median, parse_args, report, speedup, spread
from bench_train import VOCAB, hf_model, make_step

from seqlab.config import RunConfig
from seqlab.models.lora import LoRALinear, apply_lora, lora_reference
from seqlab.tasks.causal_lm import build_language_model
from seqlab.train.optim import build_optimizer

BATCH, RANK, ALPHA = 16, 8, 16
SHAPES = ("gpt", "gpt-tiny")
# seqlab module patterns and the GPT-2 module names (peft matches a name's last parts).
TARGETS = {
    "all": (["*.mixer.q_proj", "*.mixer.kv_proj", "*.mixer.out_proj", "*.ffn.up", "*.ffn.down"],
            ["c_attn", "c_proj", "c_fc"]),
    "matched": (["*.mixer.out_proj", "*.ffn.up", "*.ffn.down"], ["c_proj", "c_fc"]),
}


def seqlab_lora(preset: str, targets: list[str]):
    """The model and optimizer a seqlab LoRA run trains (Trainer._setup, minus loading a base)."""
    config = RunConfig.from_dict({"model": {"preset": preset, "vocab_size": VOCAB},
                                  "lora": {"rank": RANK, "alpha": ALPHA, "dropout": 0.0,
                                           "targets": targets}})
    torch.manual_seed(0)
    model = build_language_model(config).train()
    lora = config.lora
    apply_lora(model, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
               targets=lora.targets, train=lora.train)
    return model, build_optimizer(model, config.train), config


def use_plain_formula(model) -> None:
    """Send every adapter through ``lora_reference`` (separate autograd ops: the path
    before issue 10), to show what the fused path buys."""
    for module in model.modules():
        if isinstance(module, LoRALinear):
            module.forward = (lambda m: lambda x: lora_reference(
                x, m.weight, m.bias, m.lora_A, m.lora_B, m.scale))(module)


def peft_lora(config: RunConfig, targets: list[str]):
    from peft import LoraConfig, get_peft_model

    model = hf_model(config, "gelu")
    peft_config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=targets,
                             fan_in_fan_out=True, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, peft_config).train()
    train = config.train
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": train.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=train.lr, betas=(train.beta1, train.beta2), fused=True)
    return model, optimizer


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=5, iters=3, warmup=2)
    print(_common.machine_info())

    cases, pairs = {}, []
    for shape in SHAPES:
        for kind, (ours, theirs) in TARGETS.items():
            model, optimizer, config = seqlab_lora(shape, ours)
            hf, hf_opt = peft_lora(config, theirs)
            m = config.model
            n_ours, n_theirs = trainable(model), trainable(hf)
            # seqlab's separate kv_proj carries one more rank x d_model A matrix per layer.
            extra = RANK * m.d_model * m.n_layers if "*.mixer.kv_proj" in ours else 0
            print(f"{shape} {kind}: trainable parameters seqlab {n_ours:,}  peft {n_theirs:,}")
            if n_ours != n_theirs + extra:
                raise SystemExit(f"{shape} {kind}: trainable parameter counts {n_ours} vs "
                                 f"{n_theirs} (expected a difference of {extra})")

            g = torch.Generator().manual_seed(0)
            block = torch.randint(0, VOCAB, (BATCH, m.context_length + 1), generator=g)
            x, y = block[:, :-1], block[:, 1:]  # the same inputs and next-token targets

            def seqlab_loss(model, x=x, y=y):
                return model(x, targets=y).loss

            def peft_loss(model, x=x, y=y):  # the same cross-entropy as seqlab's head
                logits = model(input_ids=x, use_cache=False).logits  # no KV cache to build
                return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())

            name = f"{shape} {kind}"
            cases[f"seqlab {name}"] = make_step(model, optimizer, seqlab_loss)
            cases[f"peft {name}"] = make_step(hf, hf_opt, peft_loss)
            if kind == "all":
                plain, plain_opt, _ = seqlab_lora(shape, ours)
                use_plain_formula(plain)
                cases[f"seqlab plain {name}"] = make_step(plain, plain_opt, seqlab_loss)
            pairs.append((shape, kind, m, n_ours, n_theirs))

    times = interleaved(cases, rounds=args.rounds, iters=args.iters, warmup=args.warmup)

    rows = []
    for shape, kind, m, n_ours, n_theirs in pairs:
        ours, theirs = times[f"seqlab {shape} {kind}"], times[f"peft {shape} {kind}"]
        tokens = BATCH * m.context_length
        rows.append([f"{shape} (L{m.n_layers} D{m.d_model} T{m.context_length} B{BATCH})", kind,
                     f"{tokens / median(ours):,.0f}", f"{tokens / median(theirs):,.0f}",
                     f"**{speedup(times, f'seqlab {shape} {kind}', f'peft {shape} {kind}'):.2f}x**",
                     f"{median(ours) * 1e3:.0f} ({spread(ours, 1e3)})",
                     f"{median(theirs) * 1e3:.0f} ({spread(theirs, 1e3)})",
                     f"{n_ours:,}", f"{n_theirs:,}"])
    table = markdown_table(
        ["shape", "targets", "seqlab tokens/s", "peft tokens/s", "ratio (target >= 1.2x)",
         "seqlab ms/step (min–max)", "peft ms/step (min–max)", "seqlab trainable",
         "peft trainable"], rows)
    plain_rows = []
    for shape, kind, m, _, _ in pairs:
        if f"seqlab plain {shape} {kind}" not in times:
            continue
        plain = times[f"seqlab plain {shape} {kind}"]
        plain_rows.append([
            shape, kind, f"{BATCH * m.context_length / median(plain):,.0f}",
            f"{median(plain) * 1e3:.0f} ({spread(plain, 1e3)})",
            f"{speedup(times, f'seqlab plain {shape} {kind}', f'peft {shape} {kind}'):.2f}x",
            f"{speedup(times, f'seqlab {shape} {kind}', f'seqlab plain {shape} {kind}'):.2f}x"])
    plain_table = markdown_table(
        ["shape", "targets", "seqlab plain-formula tokens/s", "ms/step (min–max)",
         "plain / peft", "fused path / plain"], plain_rows)
    notes = (
        f"LoRA rank {RANK}, alpha {ALPHA}, dropout 0, random initialisation, fp32, batch {BATCH}, "
        f"vocabulary {VOCAB}, tied embeddings. seqlab: `lora: {{rank: {RANK}, alpha: {ALPHA}}}` "
        "in RunConfig applied with `apply_lora` as the Trainer does; peft "
        "`LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, fan_in_fan_out=True, bias='none', "
        "task_type='CAUSAL_LM')` on GPT2LMHeadModel (sdpa attention, exact GELU), called with "
        "`use_cache=False` (by default GPT-2 fills a KV cache on every training forward).\n\n"
        "Targets `all`: every projection (seqlab q_proj, kv_proj, out_proj, ffn.up, ffn.down; "
        "GPT-2 c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj). seqlab's q and kv projections are "
        "two Linears where GPT-2 fuses them, so seqlab trains one more rank x d_model A matrix "
        "per layer. Targets `matched`: out_proj, ffn.up, ffn.down against attn.c_proj, "
        "mlp.c_fc, mlp.c_proj: the same matrices and the same trainable parameter count.\n\n"
        "Step = forward + `F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())` on the "
        "same x, y + backward + clip_grad_norm_(1.0) + fused AdamW over the trainable "
        "parameters + zero_grad(set_to_none=True), as both Trainers run it. Ratio = seqlab "
        "tokens/s over peft's, the median of per-round ratios.\n\n"
        "Plain formula: the same seqlab model with every adapter sent through "
        "`lora_reference` (`x W^T + b + scale * (x A^T) B^T` as separate autograd ops, which is "
        "how `LoRALinear` computed before issue 10 and still does under dropout or autocast); "
        "`fused path / plain` is what `_LoRAMatmul` buys: at these sizes (N >= in rows) the "
        "adapter folded into the weight, `W + scale B A` (rebuilt in backward), so the output "
        "and the input gradient take one GEMM each; a hand-written backward with no gradient "
        "for frozen weights.")
    report("bench_lora", "LoRA fine-tuning throughput: seqlab gpt vs HF GPT-2 + peft (CPU)", args,
           [table, plain_table, notes])


if __name__ == "__main__":
    main()
