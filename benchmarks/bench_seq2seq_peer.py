"""seqlab's Transformer encoder-decoder against Hugging Face's MarianMTModel of the same
shape and the same weights: training tokens/s and beam-search decoding speed.

Both models are built at the same shape (``--shape``: d_model, layers per stack, heads,
feed-forward width, vocabulary), Marian with random weights and seqlab's loaded from
them (``seqlab.interop.marian``), so the two compute the same function; the script
checks that their logits agree before timing anything.

- Training: one AdamW step on the same batch (source and target ids, padded sources),
  fp32, no label smoothing, no dropout; tokens are source plus target tokens.
- Decoding: a model of the same shape trained briefly by seqlab on grapheme-to-phoneme
  pairs (so outputs end at their own lengths, as a real model's do), its weights copied
  into a MarianMTModel; held-out words decoded by beam search (beam 4, length penalty
  1) with ``MarianMTModel.generate(num_beams=4)`` (its cache on; forced EOS and bad
  words, which seqlab does not apply, off) and ``seqlab.infer.seq2seq.beam_search``;
  greedy likewise. Same outputs: the share of words whose best output is the same
  token sequence.

    python benchmarks/bench_seq2seq_peer.py [--quick] [--threads N] [--train-steps 600]
"""

from __future__ import annotations

import torch

from _common import interleaved, markdown_table, parse_args, report, speedup, spread

SHAPE = dict(d_model=256, layers=3, heads=4, ffn=1024, vocab=8000)
BATCH, SOURCE, TARGET, DECODE_BATCH = 16, 32, 32, 8


def build(shape: dict, *, pad: int | None = None, eos: int = 0):
    """A random MarianMTModel of ``shape`` and seqlab's model holding its weights."""
    import transformers

    from seqlab.config_sections import ModelConfig
    from seqlab.interop.marian import load_marian_weights, marian_model_config
    from seqlab.models.build import build_seq2seq

    torch.manual_seed(0)
    pad = shape["vocab"] - 1 if pad is None else pad
    hf_config = transformers.MarianConfig(
        vocab_size=shape["vocab"], d_model=shape["d_model"], encoder_layers=shape["layers"],
        decoder_layers=shape["layers"], encoder_attention_heads=shape["heads"],
        decoder_attention_heads=shape["heads"], encoder_ffn_dim=shape["ffn"],
        decoder_ffn_dim=shape["ffn"], max_position_embeddings=512, pad_token_id=pad,
        decoder_start_token_id=pad, eos_token_id=eos, scale_embedding=True, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0)
    marian = transformers.MarianMTModel(hf_config)
    ours = build_seq2seq(ModelConfig(**marian_model_config(hf_config)), final_logits_bias=True)
    load_marian_weights(ours, marian)
    return marian, ours, pad


def batch(vocab: int, pad: int, rows: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(1, vocab - 1, (rows, SOURCE), generator=g)
    mask = torch.ones(rows, SOURCE, dtype=torch.bool)
    for r in range(rows):  # sources of different lengths, right-padded
        n = SOURCE - (r * 3) % (SOURCE // 2)
        mask[r, n:] = False
        src[r, n:] = pad
    tgt = torch.randint(1, vocab - 1, (rows, TARGET + 1), generator=g)
    tgt[:, 0] = pad
    dec, labels = tgt[:, :-1].contiguous(), tgt[:, 1:].contiguous()
    for r in range(rows):  # targets of different lengths: padding after each one's end
        n = TARGET - (r * 5) % (TARGET // 2)
        dec[r, n:] = pad
        labels[r, n:] = -100
    return src, mask, dec, labels


def trained_on_g2p(steps: int, words: int):
    """A Marian-shaped seqlab model trained ``steps`` steps on grapheme-to-phoneme pairs
    (espeak-ng's), the same weights in a MarianMTModel, the tokenizer and the validation
    sources."""
    import tempfile
    from pathlib import Path

    from seqlab.data.parallel import ParallelOptions, ParallelSource
    from seqlab.data.sources import SourceContext
    from seqlab.data.tokenizers import build_tokenizer
    from seqlab.datasets.seq2seq_pairs import write_g2p
    from seqlab.interop.marian import save_marian_weights

    with tempfile.TemporaryDirectory() as tmp:
        write_g2p(tmp, n_words=words, seed=0)
        source = ParallelSource(ParallelOptions(path=str(Path(tmp) / "train.tsv"),
                                                val_path=str(Path(tmp) / "val.tsv")),
                                SourceContext(seed=0, batch_size=64, max_length=48))
        tokenizer = build_tokenizer("char", source.texts())
        source.load(tokenizer)
    shape = {**SHAPE, "vocab": tokenizer.vocab_size}
    marian, ours, _ = build(shape, pad=tokenizer.pad_id, eos=tokenizer.eos_id)
    ours.decoder.embed.weight.data.normal_(0, 0.02)  # Marian's init is for 58k words
    optimizer = torch.optim.AdamW(ours.parameters(), lr=1e-3)
    ours.train()
    for step in range(steps):
        b = source.train_batch(step, 0)
        result = ours.loss(b.inputs, b.targets, b.padding_mask, **b.extras)
        (result.total / result.count).backward()
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * min(1.0, (step + 1) / 50)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    ours.eval()
    marian.config.decoder_start_token_id = tokenizer.bos_id  # seqlab's decoder starts at <bos>
    marian.generation_config.decoder_start_token_id = tokenizer.bos_id
    save_marian_weights(ours, marian)
    return marian.eval(), ours, tokenizer, source.val


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=5, iters=2, warmup=1,
                      extra=lambda p: (p.add_argument("--train-steps", type=int, default=600),
                                       p.add_argument("--words", type=int, default=8000)))
    from seqlab.data.batch import pad as pad_rows
    from seqlab.infer.seq2seq import BeamConfig, beam_search, decode

    marian, ours, pad = build(SHAPE)
    vocab = SHAPE["vocab"]
    src, mask, dec, labels = batch(vocab, pad, BATCH)
    marian.eval(), ours.eval()
    with torch.no_grad():
        want = marian(input_ids=src, attention_mask=mask.long(), decoder_input_ids=dec).logits
        got = ours.teacher_forced(src, dec, source_mask=mask)
    real = labels != -100
    worst = float((want - got)[real].abs().max())
    assert worst < 1e-3, f"the two models disagree before timing: max |logit difference| {worst}"
    marian.train(), ours.train()
    # each library's training default: fused AdamW (seqlab's trainer; HF Trainer's with torch >= 2.8)
    opt_hf = torch.optim.AdamW(marian.parameters(), lr=1e-4, fused=True)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)

    def step_hf():
        loss = marian(input_ids=src, attention_mask=mask.long(), decoder_input_ids=dec,
                      labels=labels).loss
        loss.backward()
        opt_hf.step()
        opt_hf.zero_grad(set_to_none=True)

    def step_ours():
        result = ours.loss(src, labels.masked_fill(~real, -100), mask, decoder_inputs=dec)
        (result.total / result.count).backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    train = interleaved({"seqlab": step_ours, "marian": step_hf}, rounds=args.rounds,
                        iters=args.iters, warmup=args.warmup)
    tokens = int(mask.sum()) + int(real.sum())

    steps, words = (30, 600) if args.quick else (args.train_steps, args.words)
    marian, ours, tok, val = trained_on_g2p(steps, words)
    sources = val.sources[:DECODE_BATCH * (1 if args.quick else 8)]
    batches = [pad_rows(sources[i:i + DECODE_BATCH], value=tok.pad_id, dtype=torch.long)
               for i in range(0, len(sources), DECODE_BATCH)]
    new = 40
    kw = dict(max_new_tokens=new, forced_eos_token_id=None, bad_words_ids=None, min_length=0,
              length_penalty=1.0)
    found = {}

    def hf(beam: int):
        def run():
            with torch.no_grad():
                found[f"hf{beam}"] = [marian.generate(s, attention_mask=None if m is None else m.long(),
                                                      num_beams=beam, do_sample=False,
                                                      early_stopping=True, **kw) for s, m in batches]
        return run

    def mine(beam: int):
        def run():
            if beam == 1:
                found["ours1"] = [decode(ours, s, m, bos_id=tok.bos_id, eos_id=tok.eos_id,
                                         max_length=new) for s, m in batches]
            else:
                found[f"ours{beam}"] = [[h[0] for h in beam_search(
                    ours, s, m, bos_id=tok.bos_id, eos_id=tok.eos_id, max_length=new,
                    config=BeamConfig(beam=beam, length_penalty=1.0))] for s, m in batches]
        return run

    decoding = {}
    for beam in (4, 1):
        decoding[beam] = interleaved({"seqlab": mine(beam), "marian": hf(beam)},
                                     rounds=args.rounds, iters=1, warmup=1)

    def agree(beam: int) -> float:
        same = total = 0
        for hf_rows, hyps in zip(found[f"hf{beam}"], found[f"ours{beam}"]):
            for row, hyp in zip(hf_rows.tolist(), hyps):
                tokens = row[1:]  # after the start token, up to the first <eos> (then padding)
                if tok.eos_id in tokens:
                    tokens = tokens[:tokens.index(tok.eos_id) + 1]
                same += [t for t in tokens if t != tok.pad_id] == hyp.tokens
                total += 1
        return same / total

    def exact(beam: int) -> float:
        hits = [tok.decode([t for t in h.tokens if t != tok.eos_id]) == tok.decode(t.tolist())
                for hyps, i in zip(found[f"ours{beam}"], range(len(batches)))
                for h, t in zip(hyps, val.targets[i * DECODE_BATCH:(i + 1) * DECODE_BATCH])]
        return sum(hits) / len(hits)

    lengths = [len(h.tokens) for hyps in found["ours4"] for h in hyps]
    params = sum(p.numel() for p in build(SHAPE)[1].parameters())
    rows = [["training step", f"{tokens} tokens", f"{tokens / min(train['seqlab']):,.0f}",
             f"{tokens / min(train['marian']):,.0f}", f"{speedup(train, 'seqlab', 'marian'):.2f}x",
             "1.1x", spread(train["seqlab"], 1000), spread(train["marian"], 1000), "—"]]
    for beam, name in ((4, "beam search (4)"), (1, "greedy")):
        t = decoding[beam]
        n = len(sources)
        rows.append([name, f"{n} words, batches of {DECODE_BATCH}", f"{n / min(t['seqlab']):.1f}",
                     f"{n / min(t['marian']):.1f}", f"{speedup(t, 'seqlab', 'marian'):.2f}x",
                     "1.5x" if beam > 1 else "—", spread(t["seqlab"], 1000),
                     spread(t["marian"], 1000), f"{agree(beam):.0%}"])
    notes = (f"Training: d_model {SHAPE['d_model']}, {SHAPE['layers']} encoder and "
             f"{SHAPE['layers']} decoder layers, {SHAPE['heads']} heads, feed-forward "
             f"{SHAPE['ffn']}, vocabulary {vocab} ({params:,} parameters, shared embeddings), "
             f"random weights copied from Marian to seqlab; batch {BATCH} of up to {SOURCE} "
             f"source and {TARGET} target tokens (both padded, {tokens} real); fused AdamW "
             f"for both; max |logit difference| on it before training: {worst:.1e}. "
             f"Decoding: the same shape with the char vocabulary of grapheme-to-phoneme pairs "
             f"({tok.vocab_size} tokens), trained by seqlab for {steps} steps on {words} "
             f"words, its weights copied into Marian; {len(sources)} held-out words decoded "
             f"in batches of {DECODE_BATCH}, up to {new} tokens (outputs of "
             f"{min(lengths)}-{max(lengths)} tokens; exact pronunciations: beam "
             f"{exact(4):.0%}, greedy {exact(1):.0%}). Rates: tokens/s (training) and "
             "words/s (decoding) at the fastest round; the ratio is the median over "
             "interleaved rounds; ms per call, min-max over rounds. Same outputs: the share "
             "of words whose best output is the same token sequence from both.")
    table = markdown_table(["work", "size", "seqlab /s", "Marian /s", "seqlab / Marian",
                            "target", "seqlab ms", "Marian ms", "same outputs"], rows)
    report("bench_seq2seq_peer", "Encoder-decoder: seqlab vs Hugging Face MarianMTModel, same "
           "shape and weights", args, [notes, table])


if __name__ == "__main__":
    main()
