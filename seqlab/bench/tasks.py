"""The long-range task suite: every mixer on every synthetic task at every length,
under one parameter budget and one step budget.

What it can and cannot show. Each run is a real Trainer run (``out_dir/runs/TASK/
MIXER/L<length>``, with its checkpoint and loss plot: about a second of overhead per
run) of a small model for a fixed number of steps. The ``small`` budget (about 100k
parameters, 2 layers, 200 steps of 2048 tokens, one CPU thread) fits the default grid
(7 mixers x 6 tasks x lengths 64, 256, 1024) in about 22 minutes on two cores, and
at that size it measures *how fast a mixer picks a task up*, not what it can finally
do. On ``copy`` it already separates the mixers: attention solves it at 64 and 256,
S4D at 64, a 64-token window only while the gap fits in the window, and LSTM/GRU stay at
chance. Expect most other cells to sit near chance, though: selective copying, MQAR,
induction and ListOps need far more steps, and mamba stays at chance on every task,
because it needs a few hundred steps before it learns to select (measured on selective
copying: loss leaves its plateau after about 200 steps of 32 sequences at length 64 and
about 500 at length 256; ``benchmarks/results/long_runs.md`` follows such runs to
thousands of steps). The published results (Mamba §4.1, Zoology §4, LRA) take 10^4 -
10^5 steps at larger widths. Raise ``steps`` (``budget_overrides``) or use
``budget="medium"`` (or larger, on a GPU) before drawing conclusions about capacity,
and read accuracies from one seed on at most 128 held-out sequences (16 at 8x the
training length) as a few points noisy.

Learning rate: one for every run (the budget's), or a sweep (``lrs``): each cell is
trained once per learning rate and the tables show its best run (highest held-out
accuracy, then lowest validation loss), as Zoology and LRA report tuned baselines; the
choice and the report use the same held-out set, so a swept cell is optimistic by that
set's noise. The sweep matters: on induction, attention never leaves the plateau at
3e-3, where the recurrent mixers learn fastest, and solves it at 3e-4 (``long_runs.md``).

Parameter matching: for each (mixer, task) the width is the multiple of 8 whose
model's parameter count is closest to that of ``attention`` at the budget's reference
width, so a mixer with heavier layers gets a narrower model; the counts are reported.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from seqlab.bench.task_results import COLUMNS, EXTRAPOLATION, progress_line, write_results
from seqlab.config import RunConfig
from seqlab.data.synthetic import SYNTHETIC
from seqlab.errors import ConfigError
from seqlab.nn.mixer import warn_once
from seqlab.nn.mixers import MIXERS
from seqlab.tasks import OBJECTIVES
from seqlab.train.trainer import TrainResult, Trainer

logger = logging.getLogger("seqlab")

BENCH_TASKS = ["copy", "selective_copy", "mqar", "induction", "adding", "listops"]

# Generator knobs per task (empty: the generator's defaults, documented in
# seqlab.data.synthetic). The defaults need length >= 32 (selective_copy, mqar).
TASK_OPTIONS: dict[str, dict] = {name: {} for name in BENCH_TASKS}

# Options per mixer (keys of its options dataclass). Only keys the registered mixer
# declares are passed on; any other is dropped with a warning (these mixers are still
# being written) and the options actually used are recorded with each result.
MIXER_OPTIONS: dict[str, dict] = {
    # A 64-token window covers the whole sequence at length 64, a quarter at 256 and a
    # sixteenth at 1024, so the table shows where locality starts to cost.
    "window_attention": {"window": 64},
    "sparse_attention": {"window": 64},
    # Chunked form (parallel within a chunk, recurrent across chunks): speed only.
    "linear_attention": {"chunk_size": 64},
    "s4d": {"d_state": 64},  # the S4D paper's N (Gu et al. 2022)
    "mamba": {"d_state": 16},  # the Mamba paper's N (Gu & Dao 2023)
    "segment_memory": {"segment": 64},
}


@dataclass(frozen=True)
class Budget:
    """One compute budget, identical for every mixer.

    ``d_model`` is the reference width: the parameter target is ``attention`` at this
    width. Each step sees ``tokens_per_step`` tokens (batch = tokens_per_step // length,
    at least ``min_batch``), so every length gets the same steps and about the same
    tokens. ``eval_tokens`` caps held-out sequences per length (at least 16), keeping
    evaluation at 8x the training length affordable.
    """

    d_model: int
    n_layers: int
    n_heads: int
    steps: int
    tokens_per_step: int
    min_batch: int
    lr: float
    warmup_steps: int
    eval_examples: int
    eval_tokens: int
    # 1 for the CPU budgets: models this small gain little from a second thread, and
    # recurrent kernels, which synchronise threads at every time step, ran ~100x slower
    # with 2 threads on 2 cores shared with other work.
    num_threads: int | None

    def batch_size(self, length: int) -> int:
        return max(self.min_batch, self.tokens_per_step // length)


BUDGETS: dict[str, Budget] = {
    "tiny": Budget(d_model=16, n_layers=1, n_heads=2, steps=3, tokens_per_step=128, min_batch=2,
                   lr=3e-3, warmup_steps=1, eval_examples=8, eval_tokens=256, num_threads=1),
    "small": Budget(d_model=64, n_layers=2, n_heads=4, steps=200, tokens_per_step=2048,
                    min_batch=2, lr=3e-3, warmup_steps=20, eval_examples=128,
                    eval_tokens=65536, num_threads=1),
    "medium": Budget(d_model=128, n_layers=4, n_heads=4, steps=2000, tokens_per_step=8192,
                     min_batch=8, lr=1e-3, warmup_steps=100, eval_examples=512,
                     eval_tokens=1 << 20, num_threads=None),
}

PARAM_TOLERANCE = 0.15


def _is_oom(error: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    if isinstance(error, (oom, MemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text
                                                or "can't allocate memory" in text)


def mixer_options(mixer: str) -> dict:
    """``MIXER_OPTIONS[mixer]`` restricted to the keys the registered mixer declares."""
    wanted = MIXER_OPTIONS.get(mixer, {})
    declared = {f.name for f in dataclasses.fields(MIXERS.get(mixer).options)}
    dropped = sorted(set(wanted) - declared)
    if dropped:
        warn_once(f"bench-options-{mixer}", f"bench: mixer {mixer} declares no option "
                  f"{', '.join(dropped)}; running without it")
    return {k: v for k, v in wanted.items() if k in declared}


def run_config(mixer: str, task: str, length: int, d_model: int, budget: Budget, *,
               seed: int = 0, device: str = "auto") -> RunConfig:
    """The RunConfig of one benchmark run (a mixer that cannot run causally runs
    bidirectionally: every task reads answers the inputs never reveal, so that is fair)."""
    entry = MIXERS.get(mixer)
    options = mixer_options(mixer)
    eval_lengths = [length] + ([k * length for k in EXTRAPOLATION] if task == "induction" else [])
    return RunConfig.from_dict({
        "task": "synthetic", "seed": seed,
        "task_options": {"name": task, "length": length, "eval_lengths": eval_lengths,
                         "eval_examples": budget.eval_examples,
                         "eval_tokens": budget.eval_tokens, **TASK_OPTIONS.get(task, {})},
        "model": {"mixer": mixer, "d_model": d_model, "n_layers": budget.n_layers,
                  "n_heads": budget.n_heads, "ffn": "mlp", "dropout": 0.0,
                  "causal": entry.supports(True),
                  "position": "rope" if entry.uses_positions else "none",
                  "context_length": max(eval_lengths),
                  "mixer_options": {mixer: options} if options else {}},
        "train": {"steps": budget.steps, "batch_size": budget.batch_size(length),
                  "lr": budget.lr, "warmup_steps": budget.warmup_steps, "weight_decay": 0.0,
                  "eval_every": budget.steps, "log_every": max(1, budget.steps // 20),
                  "keep_checkpoints": 1, "device": device, "progress": False,
                  "num_threads": budget.num_threads},
    })


def count_params(config: RunConfig) -> int:
    """Parameters of the model ``config`` trains (``config`` itself is left as it was:
    the objective fills the vocabulary size and context length into its own copy)."""
    objective = OBJECTIVES.get(config.task).cls(config.copy())
    objective.sync_model()
    return sum(p.numel() for p in objective.build_model().parameters())


def match_width(mixer: str, task: str, length: int, budget: Budget) -> tuple[int, int, int]:
    """(d_model, params, target): the multiple of 8 whose parameter count is closest
    to ``attention`` at ``budget.d_model`` on this task."""
    target = count_params(run_config("attention", task, length, budget.d_model, budget))
    step = 8 * budget.n_heads // math.gcd(8, budget.n_heads)  # multiples of 8 and of n_heads

    def params_at(d: int) -> int:
        return count_params(run_config(mixer, task, length, d, budget))

    # parameters grow with d_model: walk from the reference width towards the target
    # until it is crossed, keeping the closest
    d = max(step, budget.d_model // step * step)
    best = (d, params_at(d))
    direction = -step if best[1] > target else step
    while best[1] != target and step <= d + direction <= 1024:
        d += direction
        params = params_at(d)
        if abs(params - target) < abs(best[1] - target):
            best = (d, params)
        if (params - target) * direction >= 0:  # crossed the target
            break
    d, params = best
    if abs(params - target) > PARAM_TOLERANCE * target:
        logger.warning("bench: %s on %s has %d parameters at d_model %d, more than %d%% from "
                       "the target %d", mixer, task, params, d, PARAM_TOLERANCE * 100, target)
    return d, params, target


def train_one(config: RunConfig, run_dir: Path) -> TrainResult:
    """One run (a seam the tests replace to simulate failures)."""
    return Trainer(config, run_dir).fit()


def _check_grid(mixers: list[str], tasks: list[str], lengths: list[int]) -> None:
    """Raise ``ConfigError`` before any run for a name or length no run could use."""
    for mixer in mixers:
        MIXERS.get(mixer)  # ConfigError naming the valid mixers
    if not mixers or not tasks or not lengths:
        raise ConfigError("give at least one mixer, one task and one length")
    bad = [n for n in lengths if n <= 0]
    if bad:
        raise ConfigError(f"lengths must be positive, got {bad}")
    for task in tasks:
        generator = SYNTHETIC.get(task)(**TASK_OPTIONS.get(task, {}))
        for length in lengths:
            generator.check_length(length)  # e.g. "Copy sequences need length >= 21"


def resolve_budget(name: str, overrides: dict | None = None) -> Budget:
    """``BUDGETS[name]`` with some fields replaced (e.g. ``{"steps": 3000}``).

    Raises:
        ConfigError: an unknown budget or field, or a value that is not positive.
    """
    if name not in BUDGETS:
        raise ConfigError(f"unknown budget {name!r}; valid: {', '.join(BUDGETS)}")
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(Budget)}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(f"unknown budget field {key!r}; valid: {', '.join(fields)}")
        if value is None or value <= 0:
            raise ConfigError(f"budget field {key} must be positive, got {value}")
    return dataclasses.replace(BUDGETS[name], **overrides)


def run_task_bench(mixers: list[str], lengths: list[int], tasks: list[str] | None = None, *,
                   budget: str = "small", budget_overrides: dict | None = None,
                   lrs: list[float] | None = None, out_dir: Path,
                   seed: int = 0, device: str = "auto",
                   progress: Callable[[str], None] | None = None) -> list[dict]:
    """Train every mixer on every task at every length; write the results.

    Args:
        mixers: registry keys of the mixers to compare.
        lengths: training sequence lengths.
        tasks: synthetic task names (default: all six, ``BENCH_TASKS``).
        budget: a key of ``BUDGETS`` (``tiny`` for tests, ``small``, ``medium``).
        budget_overrides: fields of that budget to replace, e.g. ``{"steps": 3000}``
            (``resolve_budget``).
        lrs: learning rates to sweep (None: the budget's one). Every cell trains once
            per rate, in ``runs/TASK/MIXER/L<length>/lr<rate>``; its best run (module
            docstring) has ``selected`` True and is the one the tables and plot show.
        out_dir: receives ``results.csv`` (every run), ``results.md``,
            ``accuracy_vs_length.png`` and ``runs/``; a run directory from an earlier bench
            is replaced.
        seed: one seed for every run, so all mixers see the same data and held-out sets.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        progress: called with one line per finished run.

    Returns:
        One dict per run with the keys of ``COLUMNS``; a run that fails is recorded with
        status ``OOM`` (out of memory) or ``error: ...`` and the bench goes on. Ctrl-C
        stops the current run (status ``interrupted``) and writes the results so far.

    Raises:
        ConfigError: an unknown mixer, task or budget, no lengths, or a learning rate
            that is not positive or given both as an override and as a sweep.
    """
    tasks = list(BENCH_TASKS if tasks is None else tasks)
    _check_grid(mixers, tasks, lengths)
    spec = resolve_budget(budget, budget_overrides)
    sweep = _check_lrs(lrs, budget_overrides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    rows, widths = [], {}
    grid = [(t, m, n) for t in tasks for m in mixers for n in lengths]
    interrupted = False
    try:
        for task, mixer, length in grid:
            cell = []
            for lr in sweep or [spec.lr]:
                tag = f"lr{lr:g}" if sweep and len(sweep) > 1 else None
                row = _run(task, mixer, length, dataclasses.replace(spec, lr=lr), widths,
                           out_dir, seed, device, tag)
                cell.append(row)
                if progress is not None:
                    progress(progress_line(row))
                interrupted = row["status"] == "interrupted"
                if interrupted:  # Ctrl-C: keep what is done, stop
                    break
            best = max(cell, key=_rank)
            for row in cell:
                row["selected"] = row is best
            rows += cell
            if interrupted:
                break
    finally:
        torch.set_num_threads(threads)
    write_results(rows, out_dir)
    return rows


def _check_lrs(lrs: list[float] | None, overrides: dict | None) -> list[float] | None:
    """The sweep's learning rates, or None for the budget's single one."""
    if lrs is None:
        return None
    lrs = list(lrs)
    if not lrs or any(not lr > 0 for lr in lrs):
        raise ConfigError(f"learning rates to sweep must be a non-empty list of positive "
                          f"numbers, got {lrs}")
    if len(set(lrs)) != len(lrs):
        raise ConfigError(f"learning rates to sweep repeat a value: {lrs}")
    if overrides and "lr" in overrides:
        raise ConfigError("give the learning rate either as a budget override or as a sweep, "
                          f"not both (override {overrides['lr']}, sweep {lrs})")
    return lrs


def _rank(row: dict) -> tuple:
    """Sort key of a cell's runs, best last: finished runs, then accuracy, then the lower
    validation loss (adding: the lower mean squared error)."""
    def number(key: str, default: float) -> float:
        return default if row[key] in ("", None) else float(row[key])

    loss = number("val_loss", math.inf) if row["mse"] in ("", None) else number("mse", math.inf)
    return row["status"] == "ok", number("accuracy", -1.0), -loss


def _run(task: str, mixer: str, length: int, spec: Budget, widths: dict, out_dir: Path,
         seed: int, device: str, tag: str | None = None) -> dict:
    run_dir = out_dir / "runs" / task / mixer / f"L{length}"
    if tag is not None:
        run_dir = run_dir / tag
    generator = SYNTHETIC.get(task)(**TASK_OPTIONS.get(task, {}))
    row = {c: "" for c in COLUMNS}
    row.update(task=task, mixer=mixer, length=length, chance=round(generator.chance, 4),
               n_layers=spec.n_layers, steps=spec.steps, batch_size=spec.batch_size(length),
               lr=spec.lr,
               run_dir=str(run_dir.relative_to(out_dir)))
    start = time.perf_counter()
    try:
        if (mixer, task) not in widths:
            widths[mixer, task] = match_width(mixer, task, length, spec)
        d, params, target = widths[mixer, task]
        row.update(d_model=d, params=params, target_params=target)
        config = run_config(mixer, task, length, d, spec, seed=seed, device=device)
        row.update(causal=config.model.causal, mixer_options=str(mixer_options(mixer)))
        if run_dir.exists():
            shutil.rmtree(run_dir)
        start = time.perf_counter()
        result = train_one(config, run_dir)
        m = result.metrics
        row.update(status="interrupted" if result.interrupted else "ok",
                   accuracy=_round(m.get("accuracy")), val_loss=_round(m.get("val_loss")),
                   mse=_round(m.get("mse")))
        for k in EXTRAPOLATION:
            row[f"accuracy@{k}x"] = _round(m.get(f"accuracy@{k * length}"))
    except Exception as e:  # noqa: BLE001 - recorded, and the bench goes on
        if _is_oom(e):
            row["status"] = "OOM"
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        else:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            row["status"] = f"error: {type(e).__name__}: {first}"
        logger.warning("bench: %s on %s at length %d failed: %s\n%s", mixer, task, length,
                       row["status"], traceback.format_exc())
    row["train_seconds"] = round(time.perf_counter() - start, 2)
    return row


def _round(value) -> float | str:
    return "" if value is None else round(float(value), 4)
