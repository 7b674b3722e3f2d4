"""Autoregressive generation over the state protocol.

One loop for every causal model: prefill the prompt through the model's state, then
one step per new token. The loop never asks which mixers the model holds; a model
only needs ``init_state``, ``forward(ids, state, padding_mask=...) -> .logits, .state``
and ``max_positions`` (None when unbounded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from seqlab.errors import ShapeError, StateError


@dataclass(frozen=True)
class SamplingConfig:
    """How the next token is chosen. ``temperature == 0`` (or ``greedy``) takes the argmax."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


Generators = torch.Generator | list[torch.Generator | None] | None


def next_token(logits: Tensor, sampling: SamplingConfig, generator: Generators) -> Tensor:
    """Pick one token per row from ``logits`` (B, V); returns (B,) int64. ``generator``:
    one for the batch, or one per row (a row drawn from its own generator draws what it
    would draw alone, so batching requests does not change any one's tokens)."""
    if sampling.greedy or sampling.temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / sampling.temperature
    if sampling.top_k is not None and sampling.top_k < logits.shape[-1]:
        kth = logits.topk(sampling.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p is not None and sampling.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the tokens ranked above it already hold top_p of the mass.
        drop_sorted = cumulative - sorted_logits.softmax(-1) >= sampling.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(-1)
    if isinstance(generator, list):
        return torch.cat([torch.multinomial(probs[i:i + 1], 1, generator=g)
                          for i, g in enumerate(generator)]).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model, prompt: Tensor, *, max_new_tokens: int, sampling: SamplingConfig | None = None,
             seed: int | list[int | None] | None = None, eos_id: int | None = None, pad_id: int = 0,
             padding_mask: Tensor | None = None,
             on_step: Callable[[int, Tensor, Tensor], None] | None = None) -> Tensor:
    """Continue each prompt by up to ``max_new_tokens`` tokens.

    Args:
        model: a causal model following the state protocol.
        prompt: (B, T) token ids; left-pad rows of different lengths and pass ``padding_mask``.
        sampling: how to choose tokens (default: temperature 1 sampling).
        seed: seeds a private generator, so results repeat without touching global RNG;
            a list gives each row its own (None: that row draws from the global RNG).
        eos_id: rows stop at this token; later slots of a stopped row hold ``pad_id``.
        padding_mask: (B, T) bool, True for real prompt tokens (False for left padding).
        on_step: called as ``on_step(step, logits, token)`` once per new token, with
            ``step`` counting from 0, ``logits`` (B, V) the model's raw next-token logits
            (before temperature, top-k and top-p) from which ``token`` (B,) was drawn
            (``pad_id`` in rows already stopped at ``eos_id``). It serves streaming the
            tokens out as they come and checking that decoding through the state gives
            the logits a full forward over the prefix gives. Do not modify ``logits``.

    Returns:
        (B, T' + n) ids: the (possibly cropped) prompt followed by the new tokens.

    A prompt longer than the model's position limit is cropped to its last
    ``max_positions`` tokens; past that limit each step re-reads the last
    ``max_positions`` tokens, exactly as recomputing a cropped prefix would.
    """
    if not getattr(model, "causal", True):
        raise StateError("generation needs a causal model; this one is bidirectional")
    if prompt.dim() != 2 or prompt.shape[1] == 0:
        raise ShapeError(f"prompt must have shape (batch, time) with time >= 1, got {tuple(prompt.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    sampling = sampling or SamplingConfig()
    device = prompt.device
    generator = ([_seeded(s, device) for s in seed] if isinstance(seed, list)
                 else _seeded(seed, device))
    limit = getattr(model, "max_positions", None)
    if limit is not None and prompt.shape[1] > limit:
        prompt = prompt[:, -limit:]
        padding_mask = padding_mask[:, -limit:] if padding_mask is not None else None

    was_training = model.training
    model.eval()
    try:
        B = prompt.shape[0]
        tokens = prompt
        mask = padding_mask
        state = model.init_state(B, device)
        out = model(prompt, state, padding_mask=padding_mask)
        state, logits = out.state, out.logits[:, -1]
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        for i in range(max_new_tokens):
            token = next_token(logits, sampling, generator)
            if eos_id is not None:
                token = torch.where(finished, torch.full_like(token, pad_id), token)
                finished |= token == eos_id
            if on_step is not None:
                on_step(i, logits, token)
            tokens = torch.cat([tokens, token[:, None]], dim=1)
            if mask is not None:
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            if i == max_new_tokens - 1 or (eos_id is not None and bool(finished.all())):
                break
            if limit is not None and int(state.seen.max()) >= limit:
                # Out of positions: re-read the last `limit` tokens from a fresh state.
                window = tokens[:, -limit:]
                window_mask = mask[:, -limit:] if mask is not None else None
                state = model.init_state(B, device)
                out = model(window, state, padding_mask=window_mask)
            else:
                out = model(token[:, None], state)
            state, logits = out.state, out.logits[:, -1]
        return tokens
    finally:
        model.train(was_training)


def _seeded(seed: int | None, device) -> torch.Generator | None:
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator
