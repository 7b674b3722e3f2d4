"""The ``seqlab`` command: parses arguments, then calls the library.

Errors the user can fix (seqlab's own exception types, and OS errors such as a full
disk) print one line and exit non-zero; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqlab", description="Sequence modeling on PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a config into a run directory")
    p.add_argument("config", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=1e-3 (repeatable)")
    p.add_argument("--out", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    _add_common(p)

    p = sub.add_parser("generate", help="generate text from a trained run")
    p.add_argument("run_dir")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="cpu")
    _add_common(p)

    p = sub.add_parser("eval", help="the objective's metrics of a run (loss, accuracy, ...)")
    p.add_argument("run_dir")
    p.add_argument("--data", help="file, folder or glob read like the training data "
                                  "(default: the run's validation split)")
    p.add_argument("--max-batches", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--reverse-complement", action="store_true",
                   help="score outputs averaged over both strands (runs with a dna or rna tokenizer)")
    _add_common(p)

    p = sub.add_parser("predict", help="predictions of a classify, tag or regress run for a data file")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="file, folder or glob read like the training data "
                                                 "(labels are not needed)")
    p.add_argument("--out", required=True, help="where to write the predictions: .csv, .tsv or .jsonl")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reverse-complement", action="store_true",
                   help="average each prediction over both strands (runs with a dna or rna tokenizer)")
    _add_common(p)

    p = sub.add_parser("fill-mask", help="the likeliest tokens for each <mask> (masked_lm runs)")
    p.add_argument("run_dir")
    p.add_argument("--text", required=True, help="text with one or more <mask>")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--device", default="cpu")
    _add_common(p)

    p = sub.add_parser("quickstart", help="train the built-in default model (about 3 minutes)")
    p.add_argument("--out", default=None,
                   help="run directory (default: runs/quickstart, or runs/quickstart-N if taken)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", action="store_true")
    _add_common(p)

    p = sub.add_parser("presets", help="list model presets with parameter counts")
    _add_common(p)

    p = sub.add_parser("runs", help="list the runs under a folder, or compare runs",
                       description="seqlab runs [DIR]: every run directory under DIR (default "
                                   "runs), with its objective, size, progress and kept "
                                   "weights. seqlab runs compare RUN RUN ...: their metrics in "
                                   "one table and their loss curves in one PNG.")
    p.add_argument("args", nargs="*", metavar="DIR | compare RUN ...")
    p.add_argument("--plot", default="runs-compare.png",
                   help="compare: where to write the loss curves (default: runs-compare.png)")
    _add_common(p)

    p = sub.add_parser("serve", help="serve a run over HTTP (FastAPI): API, streaming, playground page")
    p.add_argument("run_dir")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--api-key", default=os.environ.get("SEQLAB_API_KEY"),
                   help="require this key (Authorization: Bearer KEY); default: $SEQLAB_API_KEY")
    p.add_argument("--max-batch", type=int, default=8, help="requests batched together (1: no batching)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long a request waits for others to share its batch")
    p.add_argument("--queue-size", type=int, default=64, help="requests waiting before 503")
    p.add_argument("--max-new-tokens", type=int, default=512, help="cap per generate request")
    p.add_argument("--max-body-kb", type=int, default=1024, help="largest request body")
    p.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    _add_common(p)

    p = sub.add_parser("export", help="a run as ONNX or torch.export graphs with its streaming state")
    p.add_argument("run_dir")
    p.add_argument("--format", default="onnx", choices=["onnx", "torch-export"])
    p.add_argument("--out", default=None, help="directory to write (default: RUN_DIR/export-FORMAT)")
    _add_common(p)

    p = sub.add_parser("finetune", help="train a config starting from a trained run's backbone")
    p.add_argument("config", help="YAML config of the new objective")
    p.add_argument("--from", dest="from_run", required=True, help="the pre-trained run directory")
    p.add_argument("--mode", default="full", choices=["full", "frozen", "lora"],
                   help="full: train every weight; frozen: the new head only (a linear probe); "
                        "lora: low-rank adapters and the head (lora.rank, default 8)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    _add_common(p)

    p = sub.add_parser("merge", help="fold a LoRA run's adapters into full weights (a standalone run)")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="the merged run directory to write")
    _add_common(p)

    p = sub.add_parser("tokenizer", help="tokenizers: seqlab tokenizer train PATHS --vocab-size N --out FILE")
    tok = p.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    p = tok.add_parser("train", help="train a byte-level BPE tokenizer on text files, streamed",
                       description="Train a byte-level BPE tokenizer (Hugging Face tokenizers) "
                                   "on files, folders or globs, reading them in blocks; writes "
                                   "the tokenizers library's own tokenizer.json.")
    p.add_argument("paths", nargs="+", help="text files, folders or globs")
    p.add_argument("--vocab-size", type=int, required=True, help="ids in the vocabulary, specials included")
    p.add_argument("--out", required=True, help="the tokenizer.json to write")
    p.add_argument("--max-bytes", type=int, default=None, help="read at most this many bytes")
    p.add_argument("--min-frequency", type=int, default=2, help="merges seen fewer times are not learned")
    p.add_argument("--word-chars", type=int, default=None,
                   help="cut the text into words of this many characters (DNA: caps training "
                        "memory, about 80 MB at 8 and 1.1 GB at 10, whatever the corpus size)")
    p.add_argument("--extensions", nargs="*", default=None, help="in folders, only these suffixes")
    _add_common(p)

    p = sub.add_parser("hf", help="Hugging Face checkpoints: seqlab hf import|export")
    hf = p.add_subparsers(dest="hf_command", required=True, metavar="ACTION")
    p = hf.add_parser("import", help="a local GPT-2, Llama, Mamba or BERT (masked LM) checkpoint -> a run")
    p.add_argument("hf_dir", help="directory with config.json and model.safetensors")
    p.add_argument("--out", required=True, help="the run directory to write")
    _add_common(p)
    p = hf.add_parser("export", help="a gpt- or llama-shaped causal LM run -> a Hugging Face directory")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="the directory to write (from_pretrained reads it)")
    _add_common(p)

    p = sub.add_parser("data", help="prepare data: seqlab data prepare CONFIG --out DIR")
    data = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = data.add_parser("prepare", help="tokenise a text config's corpus into memory-mapped shards",
                        description="Encode the corpus a config's text source reads, in parallel "
                                    "processes, into token shards that training reads lazily "
                                    "(data: {source: shards, path: DIR}).")
    p.add_argument("config", help="YAML config whose data section reads text")
    p.add_argument("--out", required=True, help="directory to write the shards to")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--workers", type=int, default=None, help="encoding processes (default: CPUs)")
    p.add_argument("--shard-tokens", type=int, default=None,
                   help="most token ids per shard file (default: 2**27)")
    _add_common(p)

    from seqlab.bench.cli import add_parser as add_bench_parser

    add_bench_parser(sub, _add_common)
    return parser


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr, force=True)
    # Under torchrun, rank 0 tells the story; the other ranks speak up for problems only.
    main_rank = os.environ.get("RANK", "0") == "0"
    logging.getLogger("seqlab").setLevel(logging.WARNING if quiet or not main_rank else logging.INFO)


def _train(args, config) -> int:
    from seqlab.train.distributed import restarted
    from seqlab.train.trainer import Trainer

    # A worker group that torchrun restarted after a failure continues the run.
    resume = args.resume or ("auto" if restarted() else False)
    trainer = Trainer(config, args.out, resume=resume)
    result = trainer.fit()
    if not trainer.is_main:
        return EXIT_INTERRUPTED if result.interrupted else 0
    print(f"run directory: {result.run_dir}")
    for key, value in result.metrics.items():
        print(f"{key}: {value:.4f}")
    if result.interrupted:
        print(f"interrupted at step {result.step}; continue with --resume")
        return EXIT_INTERRUPTED
    return 0


def cmd_train(args) -> int:
    from seqlab.config import RunConfig

    config = RunConfig.from_yaml(args.config, args.overrides)
    if args.out is None:
        args.out = str(Path("runs") / Path(args.config).stem)
    return _train(args, config)


def cmd_finetune(args) -> int:
    from seqlab.api import finetune_config
    from seqlab.config import RunConfig

    config = finetune_config(RunConfig.from_yaml(args.config, args.overrides), args.from_run,
                             mode=args.mode)
    if args.out is None:
        args.out = str(Path("runs") / Path(args.config).stem)
    return _train(args, config)


def cmd_merge(args) -> int:
    from seqlab.api import merge

    print(f"merged {args.run_dir} into {merge(args.run_dir, args.out)}")
    return 0


def cmd_quickstart(args) -> int:
    import seqlab
    from seqlab.quickstart import quickstart_config

    config = quickstart_config(args.overrides)
    if args.out is None:
        args.out = _free_dir(Path("runs/quickstart")) if not args.resume else "runs/quickstart"
    print(f"quickstart: byte-level {config.model.preset} on the Python standard library "
          f"({config.data.path}), {config.train.steps} steps", flush=True)
    code = _train(args, config)
    if code == 0:
        run = seqlab.load(args.out)
        print("sample:", run.generate("def ", max_new_tokens=200, temperature=0.8, top_k=40, seed=0))
        print(f"next: seqlab generate {args.out} --prompt 'import '   or   seqlab eval {args.out}")
    return code


def _load_run(run_dir: str, device: str, command: str, task: str):
    """Load a run for a command that works on one objective's runs only."""
    import seqlab
    from seqlab.errors import ConfigError

    run = seqlab.load(run_dir, device=device)
    if run.config.task != task:
        raise ConfigError(f"seqlab {command} works on {task} runs; {run_dir} is a "
                          f"{run.config.task!r} run (seqlab eval works on every run)")
    return run


def _free_dir(base: Path) -> str:
    """``base``, or ``base-2``, ``base-3``... so rerunning a default job never hits an old run."""
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return str(candidate)


def cmd_generate(args) -> int:
    run = _load_run(args.run_dir, args.device, "generate", "causal_lm")
    text = run.generate(args.prompt, max_new_tokens=args.max_new_tokens,
                        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                        seed=args.seed)
    print(args.prompt + text)
    return 0


def cmd_eval(args) -> int:
    import seqlab

    from seqlab.errors import ConfigError

    run = seqlab.load(args.run_dir, device=args.device)
    strands = {}
    if args.reverse_complement:
        if run.config.task not in ("classify", "tag", "regress"):
            raise ConfigError(f"--reverse-complement averages classify, tag and regress runs, "
                              f"not {run.config.task}")
        strands = {"reverse_complement": True}
    metrics = run.evaluate(args.data, max_batches=args.max_batches, **strands)
    for key, value in metrics.items():
        print(f"{key}: {value:.4f}")
    return 0


def cmd_predict(args) -> int:
    import seqlab

    strands = {"reverse_complement": True} if args.reverse_complement else {}
    n = seqlab.load(args.run_dir, device=args.device).predict_file(args.data, args.out, **strands)
    print(f"wrote {n} predictions to {args.out}")
    return 0


def cmd_fill_mask(args) -> int:
    run = _load_run(args.run_dir, args.device, "fill-mask", "masked_lm")
    for i, options in enumerate(run.fill_mask(args.text, top_k=args.top_k), 1):
        shown = "  ".join(f"{o['token']!r} {o['probability']:.3f}" for o in options)
        print(f"mask {i}: {shown}")
    return 0


def cmd_presets(args) -> int:
    from seqlab.config import RunConfig
    from seqlab.models.presets import PRESETS
    from seqlab.tasks.causal_lm import build_language_model

    print(f"{'preset':<16}{'params':>12}  description (parameters with a 259-token byte vocabulary)")
    for name in PRESETS:
        config = RunConfig.from_dict({"model": {"preset": name, "vocab_size": 259}})
        n = sum(p.numel() for p in build_language_model(config).parameters())
        print(f"{name:<16}{n:>12,}  {PRESETS.get(name).description}")
    return 0


def cmd_runs(args) -> int:
    from pathlib import Path

    from seqlab.runs import comparison, find_runs, listing, plot_comparison, summarize

    if args.args[:1] == ["compare"]:
        if len(args.args) < 2:
            print("seqlab: error: runs compare needs one or more run directories",
                  file=sys.stderr)
            return EXIT_ERROR
        summaries = [summarize(run) for run in args.args[1:]]
        print(comparison(summaries))
        if plot_comparison(summaries, Path(args.plot)):
            print(f"loss curves: {args.plot}")
        return 0
    if len(args.args) > 1:
        print(f"seqlab: error: runs takes one folder (or: runs compare RUN ...), got "
              f"{' '.join(args.args)}", file=sys.stderr)
        return EXIT_ERROR
    root = Path(args.args[0] if args.args else "runs")
    runs = find_runs(root)
    if not runs:
        print(f"no runs under {root}")
        return 0
    print(listing([summarize(run) for run in runs], root))
    return 0


def cmd_data(args) -> int:
    from seqlab.config import RunConfig
    from seqlab.prepare import DEFAULT_SHARD_TOKENS, prepare_shards

    config = RunConfig.from_yaml(args.config, args.overrides)
    index = prepare_shards(config, args.out, workers=args.workers,
                           shard_tokens=args.shard_tokens or DEFAULT_SHARD_TOKENS)
    made = index["made_from"]
    size = index["tokens"] * (2 if index["dtype"] == "uint16" else 4)
    print(f"prepared {index['tokens']:,} tokens ({index['dtype']}, {size / 2**20:,.1f} MiB) from "
          f"{made['files']} files ({made['bytes'] / 2**20:,.1f} MiB) in {len(index['shards'])} "
          f"shards, {made['workers']} workers, {made['seconds']:.1f} s: {args.out}")
    print(f"train on it with: --set data.source=shards --set data.path={args.out}")
    return 0


def cmd_serve(args) -> int:
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    try:
        from seqlab.serve.app import Limits, serve
    except ImportError as e:
        print(f"seqlab: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    limits = Limits(max_body_bytes=args.max_body_kb * 1024, max_new_tokens=args.max_new_tokens,
                    max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                    queue_size=args.queue_size)
    serve(args.run_dir, host=args.host, port=args.port, device=args.device,
          api_key=args.api_key, limits=limits)
    return 0


def cmd_export(args) -> int:
    from seqlab.export import export_run

    out = args.out or str(Path(args.run_dir) / f"export-{args.format}")
    manifest = export_run(args.run_dir, out, fmt=args.format)
    graphs = [k for k in ("prefill", "step", "forward") if manifest["graphs"].get(k)]
    print(f"exported {args.run_dir} ({args.format}): {', '.join(graphs)} in {out}")
    if "step" in graphs and "prefill" not in graphs:
        print("no prefill graph: start from the zero state and step through the prompt")
    return 0


def cmd_tokenizer(args) -> int:
    import time

    from seqlab.data.bpe import stream_texts, train_bpe
    from seqlab.data.text import resolve_paths

    files = resolve_paths(list(args.paths), extensions=args.extensions)
    start = time.perf_counter()
    tokenizer = train_bpe(stream_texts(files, max_bytes=args.max_bytes),
                          vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                          word_chars=args.word_chars)
    tokenizer.save(args.out)
    print(f"trained a byte-level BPE tokenizer of {tokenizer.vocab_size} ids on {len(files)} files "
          f"in {time.perf_counter() - start:.1f} s: {args.out}")
    print(f"use it with: --set tokenizer.path={args.out}")
    return 0


def cmd_hf(args) -> int:
    from seqlab.interop.hf import export_hf, import_hf

    if args.hf_command == "import":
        run = import_hf(args.hf_dir, args.out)
        print(f"imported {args.hf_dir} into {run}; try: seqlab generate {run} --prompt '464 2068'")
    else:
        out = export_hf(args.run_dir, args.out)
        print(f"exported {args.run_dir} to {out} (AutoModelForCausalLM.from_pretrained reads it)")
    return 0


def cmd_bench(args) -> int:
    from seqlab.bench.cli import cmd_bench as run

    return run(args)


COMMANDS = {"train": cmd_train, "finetune": cmd_finetune, "merge": cmd_merge, "generate": cmd_generate, "eval": cmd_eval,
            "predict": cmd_predict, "fill-mask": cmd_fill_mask, "quickstart": cmd_quickstart,
            "presets": cmd_presets, "runs": cmd_runs, "data": cmd_data, "serve": cmd_serve,
            "hf": cmd_hf, "export": cmd_export, "tokenizer": cmd_tokenizer,
            "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.quiet)
    from seqlab.errors import SeqlabError

    try:
        return COMMANDS[args.command](args)
    except (SeqlabError, OSError, ValueError) as e:
        if args.debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"seqlab: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("seqlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
