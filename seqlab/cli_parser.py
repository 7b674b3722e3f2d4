"""The ``seqlab`` command's arguments: one sub-parser per command (``seqlab.cli`` runs them)."""

from __future__ import annotations

import argparse
import os


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

    p = sub.add_parser("translate", help="decode source texts with a seq2seq run (greedy, beam "
                                         "search with n-best lists, or sampling)")
    p.add_argument("run_dir")
    p.add_argument("--input", required=True, help="a text file (one source per line) or, when no "
                                                  "such file exists, the source text itself")
    p.add_argument("--out", help="write here instead of printing: .jsonl keeps every output with "
                                 "its scores, any other name the best output per line")
    p.add_argument("--beam", type=int, default=None, help="beam size (default: the run's "
                                                           "task_options.beam)")
    p.add_argument("--n-best", type=int, default=1, help="outputs per source (at most the beam)")
    p.add_argument("--length-penalty", type=float, default=None)
    p.add_argument("--max-length", type=int, default=None, help="longest output in tokens")
    p.add_argument("--temperature", type=float, default=None, help="sample instead of searching")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="cpu")
    _add_common(p)

    p = sub.add_parser("transcribe", help="speech to text with a ctc run (WAV, FLAC or OGG "
                                          "files; --stream feeds them in chunks)")
    p.add_argument("run_dir")
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--out", help="write here instead of printing: .jsonl keeps every transcript "
                                 "with its log-probability, any other name path<TAB>text lines")
    p.add_argument("--beam", type=int, default=None, help="prefix beam width (default: the run's "
                                                           "task_options.beam; 1 = greedy)")
    p.add_argument("--n-best", type=int, default=1, help="transcripts per file")
    p.add_argument("--stream", action="store_true", help="feed each file in chunks through the "
                                                         "encoder's state (causal encoders)")
    p.add_argument("--chunk-ms", type=float, default=500.0, help="chunk length when streaming")
    p.add_argument("--device", default="cpu")
    _add_common(p)

    p = sub.add_parser("speak", help="text to speech with a tts run, written as a WAV file")
    p.add_argument("run_dir")
    p.add_argument("text")
    p.add_argument("--out", required=True, help="the WAV file to write")
    p.add_argument("--seed", type=int, default=0, help="draws the decoder's pre-net dropout and "
                                                       "the vocoder's initial phase")
    p.add_argument("--iters", type=int, default=None, help="Griffin-Lim iterations (default: "
                                                            "the run's griffin_lim_iters)")
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

    p = sub.add_parser("predict", help="predictions of a classify, tag or regress run for a data "
                                       "file; forecasts of a forecast run for a table of series")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="file, folder or glob read like the training data "
                                                 "(labels are not needed)")
    p.add_argument("--out", required=True, help="where to write the predictions: .csv, .tsv or "
                                                "(not forecasts) .jsonl, or (forecasts) .parquet")
    p.add_argument("--device", default="cpu")
    p.add_argument("--reverse-complement", action="store_true",
                   help="average each prediction over both strands (runs with a dna or rna tokenizer)")
    p.add_argument("--future", default=None,
                   help="forecast runs: a table of the known-future covariates for the horizon")
    _add_common(p)

    p = sub.add_parser("backtest", help="rolling-origin scores of a forecast run and baselines")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="a table of series (CSV, TSV or Parquet)")
    p.add_argument("--windows", type=int, default=3, help="origins per series, one horizon apart")
    p.add_argument("--baselines", default="naive,seasonal_naive",
                   help="comma-separated: naive, seasonal_naive, mean, drift, auto_ets, auto_arima "
                        "(the last two need statsforecast), or none")
    p.add_argument("--out", default=None, help="also write the scores as JSON")
    p.add_argument("--device", default="cpu")
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
