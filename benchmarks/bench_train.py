"""Training throughput: seqlab's ``gpt`` preset vs Hugging Face GPT2LMHeadModel, same shape.

One step = forward, cross-entropy on the same (x, y), backward, clip_grad_norm_(1.0),
AdamW step, zero_grad, on CPU in fp32 (and bf16 autocast for the speed-up). Both models:
4 layers, 4 heads, d_model 256, context 256, batch 16, vocabulary 259, tied embeddings,
no dropout, exact GELU. seqlab uses its Trainer's optimizer (``build_optimizer``: fused
AdamW); HF is timed with torch's default AdamW (HF Trainer's ``adamw_torch``) and with
``fused=True``.

    python benchmarks/bench_train.py [--quick] [--hf-activation gelu_new]
"""

from __future__ import annotations

import _common  # noqa: F401  (puts the repo on sys.path)
import torch
import torch.nn.functional as F
from _common import interleaved, markdown_table, median, parse_args, report, speedup, spread

from seqlab.config import RunConfig
from seqlab.tasks.causal_lm import build_language_model
from seqlab.train.optim import build_optimizer

VOCAB, BATCH = 259, 16
MM = 2048


def seqlab_model():
    config = RunConfig.from_dict({"model": {"preset": "gpt", "vocab_size": VOCAB}})
    torch.manual_seed(0)
    model = build_language_model(config).train()
    return model, build_optimizer(model, config.train), config


def hf_model(config: RunConfig, activation: str):
    from transformers import GPT2Config, GPT2LMHeadModel

    m = config.model
    hf_config = GPT2Config(vocab_size=VOCAB, n_positions=m.context_length, n_embd=m.d_model,
                           n_layer=m.n_layers, n_head=m.n_heads, activation_function=activation,
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                           tie_word_embeddings=True, attn_implementation="sdpa",
                           bos_token_id=257, eos_token_id=258, pad_token_id=256)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(hf_config).train()
    if model.config._attn_implementation != "sdpa":
        raise SystemExit(f"HF chose attention {model.config._attn_implementation!r}, not sdpa")
    return model


def hf_optimizer(model, train, *, fused: bool):
    """torch AdamW with seqlab's hyper-parameters and decay split; ``fused=False`` is
    torch's default implementation, which is what HF Trainer's ``adamw_torch`` builds."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": train.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=train.lr, betas=(train.beta1, train.beta2), **kwargs)


def make_step(model, optimizer, loss_fn, *, bf16: bool = False):
    """One training step exactly as seqlab's Trainer runs it (grad_accum 1)."""

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model)
        loss.backward()
        float(loss.detach())  # the Trainer reads the loss every step
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def count(model, *, skip=()) -> int:
    return sum(p.numel() for p in model.parameters() if all(p is not s for s in skip))


def main() -> None:
    def extra(p):
        p.add_argument("--hf-activation", default="gelu",
                       help="HF activation_function (GPT-2's own default is gelu_new, a tanh "
                            "approximation written as unfused elementwise ops)")

    args = parse_args(__doc__.splitlines()[0], rounds=5, iters=3, warmup=2, extra=extra)
    print(_common.machine_info())

    seqlab, seqlab_opt, config = seqlab_model()
    hf = hf_model(config, args.hf_activation)
    hf_opt = hf_optimizer(hf, config.train, fused=False)
    hf_opt_fused = hf_optimizer(hf, config.train, fused=True)
    T, D, L = config.model.context_length, config.model.d_model, config.model.n_layers

    n_seqlab, n_hf = count(seqlab), count(hf)
    print(f"parameters: seqlab {n_seqlab:,}  HF {n_hf:,}")
    if n_seqlab != n_hf:
        raise SystemExit(f"parameter counts differ ({n_seqlab} vs {n_hf}): shapes do not agree")

    # Model FLOPs per token (PaLM, arXiv:2204.02311, app. B): 6 N for the matmuls of forward
    # (2 N) and backward (4 N), N = non-embedding parameters plus the output projection
    # (a real V x D matmul even though its weight is the tied embedding), and 12 L T D for
    # attention scores and weighted values over the full T x T square (causal kernels skip
    # about half of it; the convention counts it all). Lookup tables cost nothing.
    embed = seqlab.backbone.embed.weight
    n_matmul = count(seqlab, skip=(embed, seqlab.backbone.position.table.weight)) + VOCAB * D
    flops_per_token = 6 * n_matmul + 12 * L * T * D

    g = torch.Generator().manual_seed(0)
    block = torch.randint(0, VOCAB, (BATCH, T + 1), generator=g)
    x, y = block[:, :-1], block[:, 1:]  # the same inputs and next-token targets for both

    def seqlab_loss(model):
        return model(x, targets=y).loss

    def hf_loss(model):  # HF logits through the same cross-entropy as seqlab's head
        logits = model(input_ids=x).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())

    a, b = torch.randn(MM, MM), torch.randn(MM, MM)
    cases = {
        "seqlab fp32 (fused AdamW)": make_step(seqlab, seqlab_opt, seqlab_loss),
        "HF fp32 (torch AdamW default)": make_step(hf, hf_opt, hf_loss),
        "HF fp32 (AdamW fused=True)": make_step(hf, hf_opt_fused, hf_loss),
        "seqlab bf16 autocast": make_step(seqlab, seqlab_opt, seqlab_loss, bf16=True),
        "HF bf16 autocast (fused AdamW)": make_step(hf, hf_opt_fused, hf_loss, bf16=True),
        "matmul": lambda: torch.mm(a, b),
    }
    times = interleaved(cases, rounds=args.rounds, iters=args.iters, warmup=args.warmup)

    peak = 2 * MM**3 / median(times.pop("matmul"))
    tokens = BATCH * T
    rows = []
    for name, ts in times.items():
        rate = tokens / median(ts)
        rows.append([name, f"{median(ts) * 1e3:.0f}", spread(ts, 1e3), f"{rate:,.0f}",
                     f"{rate * flops_per_token / peak:.1%}"])
    step_table = markdown_table(
        ["case", "ms/step (median)", "ms/step (min–max)", "tokens/s", "model FLOP/s ÷ fp32 matmul peak"],
        rows)

    ratio_rows = [
        ["seqlab / HF, fp32, torch AdamW default (HF Trainer)",
         f"{speedup(times, 'seqlab fp32 (fused AdamW)', 'HF fp32 (torch AdamW default)'):.2f}x",
         ">= 1.2x"],
        ["seqlab / HF, fp32, both fused AdamW",
         f"{speedup(times, 'seqlab fp32 (fused AdamW)', 'HF fp32 (AdamW fused=True)'):.2f}x",
         ">= 1.2x"],
        ["seqlab bf16 autocast speed-up over seqlab fp32",
         f"{speedup(times, 'seqlab bf16 autocast', 'seqlab fp32 (fused AdamW)'):.2f}x", "—"],
        ["HF bf16 autocast speed-up over HF fp32 (fused)",
         f"{speedup(times, 'HF bf16 autocast (fused AdamW)', 'HF fp32 (AdamW fused=True)'):.2f}x",
         "—"],
        ["seqlab / HF, bf16 autocast, both fused AdamW",
         f"{speedup(times, 'seqlab bf16 autocast', 'HF bf16 autocast (fused AdamW)'):.2f}x", "—"],
    ]
    ratio_table = markdown_table(["comparison (tokens/s ratio, median of per-round ratios)",
                                  "ratio", "target"], ratio_rows)
    notes = (
        f"Shape: {L} layers, {config.model.n_heads} heads, d_model {D}, context {T}, batch {BATCH}, "
        f"vocabulary {VOCAB}, tied embeddings, dropout 0; HF GPT2LMHeadModel with "
        f"attn_implementation='sdpa', activation_function='{args.hf_activation}' (seqlab's MLP "
        f"uses exact GELU). Parameters: seqlab {n_seqlab:,}, HF {n_hf:,}.\n\n"
        "Loss: both sides use `F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())` on the "
        "same x and y (seqlab inside `model(x, targets=y)`, HF on `model(input_ids=x).logits`), "
        "so labels and token counts are identical. Step = forward + backward + "
        "clip_grad_norm_(1.0) + AdamW step + zero_grad(set_to_none=True), as seqlab's Trainer.\n\n"
        f"Model FLOPs/token = 6 N + 12 L T D = 6 x {n_matmul:,} + 12 x {L} x {T} x {D} = "
        f"{flops_per_token / 1e6:.1f} MFLOP, with N = non-embedding parameters + V x D for the "
        f"tied output projection. Matmul peak: fp32 torch.mm {MM}x{MM}, timed in the same "
        f"rounds: {peak / 1e9:.1f} GFLOP/s.")
    report("bench_train", "Training throughput: seqlab gpt vs HF GPT-2 (CPU)", args,
           [step_table, ratio_table, notes])


if __name__ == "__main__":
    main()
