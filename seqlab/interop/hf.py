"""Hugging Face checkpoints in and out: ``seqlab hf import`` and ``seqlab hf export``.

Import reads a local Hugging Face model directory (``config.json`` and safetensors
weights, one file or an index of shards) of a GPT-2, Llama or Mamba causal LM, or a
BERT masked LM, and writes a seqlab run directory: the matching model config (a
``gpt``, ``llama``, ``mamba`` or post-norm BERT-shaped stack), the weights under
seqlab's names, and an ``ids`` tokenizer over the checkpoint's vocabulary whose special
tokens are the checkpoint's own ids. The run then loads, evaluates, generates (or fills
masks), serves and fine-tunes like any other, with the same logits as the original
(tested against ``transformers``).

Export writes a ``gpt``- or ``llama``-shaped causal LM run as a Hugging Face directory
(``config.json``, ``model.safetensors``) that ``AutoModelForCausalLM.from_pretrained``
loads with equal logits. Neither direction needs ``transformers`` installed; text
tokenizers (BPE) are not converted: the ids are the checkpoint's.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from seqlab.config import RunConfig
from seqlab.data.tokenizers import IdsTokenizer
from seqlab.errors import CheckpointError, ConfigError
from seqlab.interop.hf_models import ARCHITECTURES, EXPORTABLE, HF_CONFIG, Tensors
from seqlab.io import atomic_write
from seqlab.models.weights import check_model_tensors, model_tensors
from seqlab.rundir import (CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, check_run_dir, read_json,
                           read_weights)
from seqlab.tasks import OBJECTIVES
from seqlab.weights_file import load_weights, save_weights

IMPORT_REPORT = "import.json"


# -- reading a Hugging Face directory -------------------------------------------------------
def read_hf_config(directory: Path) -> dict:
    if not (directory / HF_CONFIG).is_file():
        raise CheckpointError(f"{directory} has no {HF_CONFIG}: not a Hugging Face model directory")
    return read_json(directory / HF_CONFIG)


def read_hf_tensors(directory: Path) -> dict[str, Tensor]:
    """Every tensor of a Hugging Face directory's safetensors weights (one file or an
    index of shards). Pickled ``pytorch_model.bin`` files are refused, never unpickled."""
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        return load_weights(single)[0]
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        tensors: dict[str, Tensor] = {}
        for name in files:
            tensors.update(load_weights(directory / name)[0])
        return tensors
    if (directory / "pytorch_model.bin").is_file():
        raise CheckpointError(f"{directory} holds pickled weights (pytorch_model.bin), which seqlab "
                              "never unpickles; save the model with safe_serialization=True "
                              "(model.safetensors) first")
    raise CheckpointError(f"{directory} has no model.safetensors or model.safetensors.index.json")


def import_hf(hf_dir: str | Path, run_dir: str | Path) -> Path:
    """Write a seqlab run directory holding the Hugging Face model in ``hf_dir``.

    Raises:
        CheckpointError: not a Hugging Face directory, no safetensors weights, or the
            weights do not fit the config (each tensor named).
        ConfigError: an architecture or variant seqlab cannot express, with the reason.
    """
    hf_dir, run_dir = Path(hf_dir), Path(run_dir)
    hf = read_hf_config(hf_dir)
    kind = hf.get("model_type")
    if kind not in ARCHITECTURES:
        raise ConfigError(f"{hf_dir / HF_CONFIG}: model_type {kind!r} cannot be imported; "
                          f"supported: {', '.join(sorted(ARCHITECTURES))}")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise CheckpointError(f"{run_dir} is not empty; choose a new directory for the imported run")
    arch = ARCHITECTURES[kind]
    model = arch.model(hf, hf_dir)
    task = getattr(arch, "task", "causal_lm")
    config = RunConfig.from_dict({"task": task, "tokenizer": {"kind": "ids"},
                                  "model": {"causal": True, **model, "input": "tokens"}})
    tensors = arch.to_seqlab(Tensors(read_hf_tensors(hf_dir), str(hf_dir)), config.model)
    built = OBJECTIVES.get(task).cls(config).build_model()
    check_model_tensors(model_tensors(built), tensors, source=str(hf_dir))
    vocab = config.model.vocab_size
    specials = (arch.special_ids(hf, hf_dir, vocab) if hasattr(arch, "special_ids")
                else _special_ids(hf, vocab))
    tokenizer = IdsTokenizer(vocab, special_ids=specials)
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir / TOKENIZER_FILE)
    save_weights(run_dir / WEIGHTS_FILE, {k: v.contiguous() for k, v in tensors.items()},
                 {"step": "0", "format": "seqlab", "imported_from": kind})
    atomic_write(run_dir / IMPORT_REPORT, json.dumps({"from": str(hf_dir), "model_type": kind,
                                                      "tensors": len(tensors)}, indent=1))
    atomic_write(run_dir / CONFIG_FILE, config.to_yaml())
    return run_dir


def _special_ids(hf: dict, vocab: int) -> dict[str, int]:
    """The checkpoint's own eos, bos and pad ids (bos and pad fall back to eos, an id
    outside the vocabulary to its last id)."""
    def inside(i):
        i = i[0] if isinstance(i, list) and i else i
        return i if isinstance(i, int) and 0 <= i < vocab else None

    eos = inside(hf.get("eos_token_id"))
    eos = vocab - 1 if eos is None else eos
    bos, pad = inside(hf.get("bos_token_id")), inside(hf.get("pad_token_id"))
    return {"<pad>": eos if pad is None else pad, "<bos>": eos if bos is None else bos, "<eos>": eos}


def export_hf(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a ``gpt``- or ``llama``-shaped causal LM run as a Hugging Face directory.

    Raises:
        ConfigError: the run is not a causal LM of one of those two shapes; the message
            names every setting that does not fit.
    """
    run_dir, out_dir = check_run_dir(run_dir), Path(out_dir)
    config = RunConfig.from_yaml(run_dir / CONFIG_FILE)
    m = config.model
    kind, problems = hf_shape(config)
    if kind is None:
        raise ConfigError(f"{run_dir} cannot be exported to Hugging Face: " + "; ".join(problems))
    import seqlab

    tokenizer = seqlab.load(run_dir).tokenizer
    tensors, _ = read_weights(run_dir)
    arch = EXPORTABLE[kind]
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(out_dir / "model.safetensors",
                 {k: v.contiguous() for k, v in arch.to_hf(tensors, m).items()}, {"format": "pt"})
    atomic_write(out_dir / HF_CONFIG, json.dumps(arch.hf_config(m, tokenizer), indent=1))
    return out_dir


def hf_shape(config) -> tuple[str | None, list[str]]:
    """Which Hugging Face architecture a run's model is (``gpt2``, ``llama``), or None
    with every setting that keeps it from being either."""
    m = config.model
    problems = []
    if config.task != "causal_lm":
        problems.append(f"task is {config.task!r}, not causal_lm")
    if set(m.mixers) != {"attention"} or not m.causal:
        problems.append(f"every layer must be causal attention (mixers: {', '.join(sorted(set(m.mixers)))})")
    if not m.residual or m.input != "tokens":
        problems.append("the model must be a residual stack over tokens")
    options = m.mixer_options.get("attention", {})
    if options.get("kernel") not in (None, "sdpa", "naive"):
        problems.append(f"attention kernel {options.get('kernel')!r}")
    if m.rope_scaling == "ntk":
        problems.append("NTK-aware rope scaling has no Hugging Face equivalent (linear has)")
    shapes = {"gpt2": dict(ffn="mlp", norm="layernorm", position="learned", tie_embeddings=True),
              "llama": dict(ffn="swiglu", norm="rmsnorm", position="rope")}
    for kind, wanted in shapes.items():
        misses = [f"model.{k} is {getattr(m, k)!r} (needs {v!r})" for k, v in wanted.items()
                  if getattr(m, k) != v]
        if kind == "gpt2" and options.get("bias", True) is False:
            misses.append("attention without biases")
        if kind == "llama" and options.get("bias", True) is not False:
            misses.append("attention with biases")
        if not misses and not problems:
            return kind, []
        shapes[kind] = misses
    problems += [f"not gpt2-shaped ({', '.join(shapes['gpt2'])})",
                 f"not llama-shaped ({', '.join(shapes['llama'])})"]
    return None, problems
