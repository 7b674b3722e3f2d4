"""Causal language modeling: next-token loss, perplexity, bits per byte, generation."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from seqlab.config import RunConfig
from seqlab.data.text import RandomBlocks, read_corpus, resolve_paths, sequential_blocks, split_tokens
from seqlab.data.tokenizers import Tokenizer, build_tokenizer, load_tokenizer
from seqlab.errors import ConfigError, DataError
from seqlab.infer.generate import SamplingConfig, generate
from seqlab.models.backbone import BackboneState
from seqlab.models.build import OutputHead, build_backbone
from seqlab.models.model import ModelOutput, SequenceModel
from seqlab.tasks.base import TASKS, Task

logger = logging.getLogger("seqlab")

TOKENIZER_FILE = "tokenizer.json"


LMOutput = ModelOutput  # (logits, state, loss)


class LanguageModel(SequenceModel):
    """Backbone + vocabulary head; ``targets`` add the next-token loss."""

    def forward(self, ids: Tensor, state: BackboneState | None = None, *,
                padding_mask: Tensor | None = None, targets: Tensor | None = None) -> LMOutput:
        """ids (B, T) -> logits (B, T, V); with ``targets`` (B, T) also the mean loss
        over targets that are not -100."""
        out = super().forward(ids, state, padding_mask=padding_mask)
        if targets is not None:
            out.loss = F.cross_entropy(out.logits.flatten(0, 1).float(), targets.flatten(),
                                       ignore_index=-100)
        return out


def build_language_model(config: RunConfig) -> LanguageModel:
    cfg = config.model
    backbone = build_backbone(cfg)
    tie = backbone.embed if cfg.tie_embeddings and cfg.input == "tokens" else None
    return LanguageModel(backbone, OutputHead(cfg.d_model, cfg.vocab_size, tie_to=tie))


def bits_key(tokenizer: Tokenizer) -> str:
    return f"bits_per_{tokenizer.unit}"


@torch.no_grad()
def evaluate_lm(model: LanguageModel, batches, tokenizer: Tokenizer, *,
                device, autocast=None) -> dict[str, float]:
    """Token-weighted loss over ``batches`` with perplexity and bits per byte/char."""
    was_training = model.training
    model.eval()
    total_nll, total_tokens, total_units = 0.0, 0, 0
    try:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            with autocast() if autocast else _null():
                logits = model(x).logits
            nll = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
            total_nll += float(nll)
            total_tokens += y.numel()
            total_units += tokenizer.count_units(y.flatten())
    finally:
        model.train(was_training)
    if total_tokens == 0:
        raise DataError("no validation tokens to evaluate")
    loss = total_nll / total_tokens
    return {"val_loss": loss, "perplexity": math.exp(min(loss, 700.0)),
            bits_key(tokenizer): total_nll / math.log(2) / max(total_units, 1)}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@TASKS.register("causal_lm")
class CausalLMTask(Task):
    """Next-token prediction on text blocks."""

    item_name = "tokens"

    tokenizer: Tokenizer

    def prepare(self, run_dir: Path | None, *, resume: bool = False) -> None:
        cfg = self.config
        files = corpus_files(cfg)
        self.tokenizer = self._tokenizer(run_dir, files)
        sync_vocab(cfg, self.tokenizer)
        train_tokens, val_tokens = token_splits(cfg, self.tokenizer, files)
        block = cfg.model.context_length
        if len(train_tokens) < block + 1:
            raise DataError(
                f"the training data ({cfg.data.path}) has {len(train_tokens)} tokens, fewer than "
                f"model.context_length + 1 = {block + 1}; use a smaller context_length or more data"
            )
        self.train_tokens, self.val_tokens = train_tokens, val_tokens
        self.blocks = RandomBlocks(train_tokens, block_size=block,
                                   batch_size=cfg.train.batch_size, seed=cfg.seed)
        logger.info("data: %d files, %d training and %d validation tokens (%s tokenizer, vocab %d)",
                    len(files), len(train_tokens), len(val_tokens), self.tokenizer.kind,
                    self.tokenizer.vocab_size)

    def _tokenizer(self, run_dir: Path | None, files) -> Tokenizer:
        saved = run_dir / TOKENIZER_FILE if run_dir is not None else None
        if saved is not None and saved.exists():
            return load_tokenizer(saved)
        if self.config.tokenizer.path:
            return load_tokenizer(self.config.tokenizer.path)
        if self.config.tokenizer.kind == "char":
            from seqlab.data.text import read_texts

            return build_tokenizer("char", read_texts(files))
        return build_tokenizer(self.config.tokenizer.kind)

    def build_model(self) -> LanguageModel:
        return build_language_model(self.config)

    def train_batch(self, step: int, micro: int):
        return self.blocks.batch(step, micro)

    def loss(self, model: LanguageModel, batch) -> tuple[Tensor, int]:
        x, y = batch
        return model(x, targets=y).loss, y.numel()

    def evaluate(self, model: LanguageModel) -> dict[str, float]:
        device = next(model.parameters()).device
        batches = sequential_blocks(self.val_tokens, block_size=self.config.model.context_length,
                                    batch_size=self.config.train.batch_size,
                                    max_batches=self.config.train.eval_batches)
        return evaluate_lm(model, batches, self.tokenizer, device=device,
                           autocast=self.autocast)

    def data_state(self) -> dict:
        return self.blocks.state_dict()

    def load_data_state(self, state: dict) -> None:
        self.blocks.load_state_dict(state)

    def save_artifacts(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir / TOKENIZER_FILE)

    def sample(self, model: LanguageModel) -> str | None:
        device = next(model.parameters()).device
        prompt = torch.tensor([document_start(self.tokenizer)], device=device)
        ids = generate(model, prompt, max_new_tokens=64, seed=0,
                       sampling=SamplingConfig(temperature=0.8, top_k=40))
        return self.tokenizer.decode(ids[0, 1:])

    @classmethod
    def load_pipeline(cls, run_dir: Path, config: RunConfig, *, device: str = "cpu"):
        from seqlab.api import load_weights_into

        tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
        sync_vocab(config, tokenizer)
        model = build_language_model(config)
        load_weights_into(model, run_dir)
        return LMPipeline(model.to(device).eval(), tokenizer, config, run_dir)


def corpus_files(config: RunConfig) -> list[Path]:
    """The training files named by ``data``, in a seeded shuffle when ``shuffle_files``."""
    data = config.data
    if data.path is None:
        raise ConfigError("data.path is not set: give a text file, a folder or a glob")
    files = resolve_paths(data.path, extensions=data.extensions, exclude=data.exclude)
    if data.shuffle_files:
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(config.seed))
        files = [files[i] for i in order.tolist()]
    return files


def token_splits(config: RunConfig, tokenizer: Tokenizer, files: list[Path]) -> tuple[Tensor, Tensor]:
    """Training and validation token streams: ``data.val_path`` when given, else the
    last ``val_fraction`` of the training stream."""
    data = config.data
    tokens = read_corpus(files, tokenizer, max_bytes=data.max_bytes).tokens
    if data.val_path is None:
        return split_tokens(tokens, data.val_fraction)
    val_files = resolve_paths(data.val_path, extensions=data.extensions, exclude=data.exclude)
    return tokens, read_corpus(val_files, tokenizer).tokens


def document_start(tokenizer: Tokenizer) -> list[int]:
    """The ids a generation prompt starts with: training text joins documents with eos,
    so eos is what the model has seen right before a document begins."""
    return [tokenizer.eos_id]


def sync_vocab(config: RunConfig, tokenizer: Tokenizer) -> None:
    """Set model.vocab_size from the tokenizer, or fail if they disagree."""
    if config.model.vocab_size is None:
        config.model.vocab_size = tokenizer.vocab_size
    elif config.model.vocab_size != tokenizer.vocab_size:
        raise ConfigError(f"model.vocab_size is {config.model.vocab_size} but the {tokenizer.kind} "
                          f"tokenizer has {tokenizer.vocab_size} tokens; they must agree "
                          "(leave model.vocab_size unset to take the tokenizer's)")


class LMPipeline:
    """A trained language model ready to use: ``.generate``, ``.evaluate``, ``.model``,
    ``.tokenizer``, ``.config`` (what ``seqlab.load`` returns for causal_lm runs)."""

    def __init__(self, model: LanguageModel, tokenizer: Tokenizer, config: RunConfig,
                 run_dir: Path | None = None):
        self.model, self.tokenizer, self.config, self.run_dir = model, tokenizer, config, run_dir

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, prompt: str = "", *, max_new_tokens: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 greedy: bool = False) -> str:
        """Continue ``prompt`` and return only the new text."""
        ids = document_start(self.tokenizer) + self.tokenizer.encode(prompt)
        out = generate(self.model, torch.tensor([ids], device=self.device),
                       max_new_tokens=max_new_tokens, seed=seed,
                       sampling=SamplingConfig(temperature, top_k, top_p, greedy),
                       eos_id=self.tokenizer.eos_id, pad_id=self.tokenizer.pad_id)
        limit = self.model.max_positions
        n_prompt = min(len(ids), limit) if limit else len(ids)  # the prompt may be cropped
        return self.tokenizer.decode(out[0, n_prompt:])

    def evaluate(self, data: str | Path | list | None = None, *, max_batches: int | None = None,
                 batch_size: int | None = None) -> dict[str, float]:
        """Loss, perplexity and bits per byte/char on ``data`` (default: the run's validation split)."""
        cfg = self.config
        if data is None:
            if cfg.data.path is None:
                raise ConfigError("this run has no data.path; pass data to evaluate on")
            tokens = token_splits(cfg, self.tokenizer, corpus_files(cfg))[1]
        else:
            tokens = read_corpus(resolve_paths(data), self.tokenizer).tokens
        batches = sequential_blocks(tokens, block_size=cfg.model.context_length,
                                    batch_size=batch_size or cfg.train.batch_size,
                                    max_batches=max_batches)
        return evaluate_lm(self.model, batches, self.tokenizer, device=self.device)
