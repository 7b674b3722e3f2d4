"""LSTM language-model training: seqlab's ``lstm-lm`` preset vs a hand-written torch model.

Both: byte vocabulary 259 -> embedding 512 -> 2-layer nn.LSTM(512, 512) -> linear head
to 259 (untied), context 256, batch 32, CE loss on the same (x, y), backward,
clip_grad_norm_(1.0), fused AdamW with the same hyper-parameters and decay split,
zero_grad. What is measured is seqlab's overhead around torch's fused LSTM kernel.

    python benchmarks/bench_lstm.py [--quick]
"""

from __future__ import annotations

import _common  # noqa: F401  (puts the repo on sys.path)
import torch
import torch.nn.functional as F
from _common import interleaved, markdown_table, median, parse_args, report, speedup, spread
from bench_train import make_step
from torch import nn

from seqlab.config import RunConfig
from seqlab.tasks.causal_lm import build_language_model
from seqlab.train.optim import build_optimizer

VOCAB, D, BATCH = 259, 512, 32


class HandLSTM(nn.Module):
    """The textbook model. The head has no bias, like seqlab's OutputHead, so the
    parameter counts agree exactly."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D)
        self.lstm = nn.LSTM(D, D, num_layers=2, batch_first=True)
        self.head = nn.Linear(D, VOCAB, bias=False)

    def forward(self, x):
        h, _ = self.lstm(self.embed(x))  # (B, T, D)
        return self.head(h)  # (B, T, V)


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=5, iters=2, warmup=2)
    print(_common.machine_info())

    config = RunConfig.from_dict({"model": {"preset": "lstm-lm", "vocab_size": VOCAB},
                                  "train": {"batch_size": BATCH}})
    torch.manual_seed(0)
    seqlab = build_language_model(config).train()
    seqlab_opt = build_optimizer(seqlab, config.train)
    torch.manual_seed(0)
    hand = HandLSTM().train()
    train = config.train
    params = list(hand.parameters())
    hand_opt = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": train.weight_decay},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=train.lr, betas=(train.beta1, train.beta2), fused=True)

    print(f"parameters: seqlab {count(seqlab):,}  hand-written {count(hand):,}")
    if count(seqlab) != count(hand):
        raise SystemExit(f"parameter counts differ ({count(seqlab)} vs {count(hand)})")

    T = config.model.context_length
    g = torch.Generator().manual_seed(0)
    block = torch.randint(0, VOCAB, (BATCH, T + 1), generator=g)
    x, y = block[:, :-1], block[:, 1:]

    def hand_loss(model):
        return F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())

    cases = {"seqlab lstm-lm": make_step(seqlab, seqlab_opt, lambda m: m(x, targets=y).loss),
             "hand-written torch": make_step(hand, hand_opt, hand_loss)}
    times = interleaved(cases, rounds=args.rounds, iters=args.iters, warmup=args.warmup)

    tokens = BATCH * T
    rows = [[name, f"{median(ts) * 1e3:.0f}", spread(ts, 1e3), f"{tokens / median(ts):,.0f}"]
            for name, ts in times.items()]
    table = markdown_table(["case", "ms/step (median)", "ms/step (min–max)", "tokens/s"], rows)
    ratio = markdown_table(
        ["comparison (tokens/s ratio, median of per-round ratios)", "ratio", "target"],
        [["seqlab / hand-written",
          f"{speedup(times, 'seqlab lstm-lm', 'hand-written torch'):.2f}x", ">= 0.95x"]])
    notes = (
        f"Shape: embedding {VOCAB}x{D}, nn.LSTM({D}, {D}, num_layers=2), head {D}->{VOCAB} without "
        f"bias, untied; context {T}, batch {BATCH}, fp32. Parameters: {count(seqlab):,} on both "
        "sides. Step = forward + `F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())` + "
        "backward + clip_grad_norm_(1.0) + AdamW step + zero_grad(set_to_none=True). seqlab: "
        "`build_optimizer` (fused AdamW, decay on matrices only); hand-written: "
        "`torch.optim.AdamW(fused=True)` with the same lr, betas and decay split.")
    report("bench_lstm", "LSTM LM training: seqlab lstm-lm vs hand-written torch (CPU)", args,
           [table, ratio, notes])


if __name__ == "__main__":
    main()
