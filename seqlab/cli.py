"""The ``seqlab`` command: parses arguments, then calls the library.

Errors the user can fix (seqlab's own exception types, and OS errors such as a full
disk) print one line and exit non-zero; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from seqlab.cli_parser import build_parser

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


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


def cmd_translate(args) -> int:
    run = _load_run(args.run_dir, args.device, "translate", "seq2seq")
    options = dict(beam=args.beam, n_best=args.n_best, length_penalty=args.length_penalty,
                   max_length=args.max_length, temperature=args.temperature, seed=args.seed)
    path = Path(args.input)
    if args.out:
        if not path.is_file():
            path = None
        n = (run.translate_file(path, args.out, **options) if path is not None
             else _write_one(run, args.input, args.out, options))
        print(f"wrote {n} translation(s) to {args.out}")
        return 0
    texts = path.read_text(encoding="utf-8").splitlines() if path.is_file() else [args.input]
    for text, outputs in zip(texts, run.translate(texts, **options)):
        if len(outputs) == 1 and len(texts) == 1:
            print(outputs[0].text)
            continue
        for rank, o in enumerate(outputs, 1):
            print(f"{text}\t{rank}\t{o.text}\t{o.score:.4f}" if len(outputs) > 1 else o.text)
    return 0


def _write_one(run, text: str, out: str, options: dict) -> int:
    """``translate_file`` for a source given on the command line."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "input.txt"
        source.write_text(text + "\n", encoding="utf-8")
        return run.translate_file(source, out, **options)


def cmd_transcribe(args) -> int:
    import seqlab

    from seqlab.errors import ConfigError

    run = seqlab.load(args.run_dir, device=args.device)
    if not hasattr(run, "transcribe"):
        raise ConfigError(f"seqlab transcribe works on speech recognisers (ctc runs, and seq2seq "
                          f"runs over the speech source); {args.run_dir} is a "
                          f"{run.config.task!r} run over {run.config.data.source!r} data")
    options = dict(beam=args.beam, n_best=args.n_best, stream=args.stream,
                   chunk_seconds=args.chunk_ms / 1000)
    if args.out:
        n = run.transcribe_files(args.audio, args.out, **options)
        print(f"wrote {n} transcript(s) to {args.out}")
        return 0
    for path, found in zip(args.audio, run.transcribe(args.audio, **options)):
        for t in found:
            print(f"{path}\t{t.text}" + (f"\t{t.logprob:.4f}" if len(found) > 1 else ""))
    return 0


def cmd_speak(args) -> int:
    run = _load_run(args.run_dir, args.device, "speak", "tts")
    samples = run.speak(args.text, args.out, seed=args.seed, iters=args.iters)
    print(f"wrote {len(samples) / run.sample_rate:.2f} s of speech to {args.out}")
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

    options = {"reverse_complement": True} if args.reverse_complement else {}
    if args.future is not None:
        options["future"] = args.future
    n = seqlab.load(args.run_dir, device=args.device).predict_file(args.data, args.out, **options)
    print(f"wrote {n} predictions to {args.out}")
    return 0


def cmd_backtest(args) -> int:
    import json

    import seqlab
    from seqlab.errors import ConfigError
    from seqlab.io import atomic_write
    from seqlab.tasks.backtest import backtest, leaderboard

    run = seqlab.load(args.run_dir, device=args.device)
    if run.config.task != "forecast":
        raise ConfigError(f"backtest scores forecast runs; {args.run_dir} is a "
                          f"{run.config.task} run")
    names = [] if args.baselines in ("", "none") else args.baselines.split(",")
    results = backtest({"model": run, **{n: n for n in names}}, args.data, windows=args.windows)
    print(leaderboard(results))
    from pathlib import Path

    from seqlab.plots import plot_errors_by_step

    plot = Path(args.run_dir) / "plots" / "backtest_errors.png"
    plot.parent.mkdir(exist_ok=True)
    plot_errors_by_step({n: r["mae_by_step"] for n, r in results.items()}, plot)
    if args.out:
        atomic_write(args.out, json.dumps(results, indent=1))
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
            "translate": cmd_translate,
            "transcribe": cmd_transcribe,
            "speak": cmd_speak,
            "predict": cmd_predict, "backtest": cmd_backtest, "fill-mask": cmd_fill_mask, "quickstart": cmd_quickstart,
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
