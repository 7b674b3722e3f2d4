"""Decoding through the state gives, at every step, the logits of recomputing the prefix.

Comparing generated tokens is not enough: a small random model whose head is tied to
its embedding emits one token over and over, so equal tokens passed even when
generation threw its state away. These tests compare the logits ``generate`` used at
each step (``on_step``) with a stateless forward over the whole prefix (the prompt and
the tokens generated so far), while sampling at temperature 1 so the tokens vary.
"""

import pytest
import torch

from seqlab.config import ModelConfig
from seqlab.infer import SamplingConfig, generate
from seqlab.models import OutputHead, SequenceModel, build_backbone

V = 11
N_NEW = 20
TOL = dict(atol=1e-5, rtol=1e-5)  # measured gap ~6e-7; a lost state moves logits by > 0.1

# Small windows, chunks and segments, so 20+ tokens cross their boundaries.
SMALL = {
    "mamba": {"chunk_size": 4, "d_state": 4},
    "s4d": {"d_state": 8},
    "window_attention": {"window": 4},
    "linear_attention": {"chunk_size": 4},
    "segment_memory": {"segment": 4, "memory_segments": 1, "compressed_slots": 2,
                       "compression_rate": 2},
}

CAUSAL = {
    **{f"attention-{p}": dict(mixer="attention", position=p)
       for p in ("rope", "alibi", "learned", "sinusoidal", "none")},
    "lstm": dict(mixer="lstm", position="none", ffn="none"),
    "gru": dict(mixer="gru", position="none"),
    "rnn": dict(mixer="rnn", position="none"),
    "mamba": dict(mixer="mamba", position="none", ffn="none"),
    "s4d": dict(mixer="s4d", position="none"),
    "window_attention": dict(mixer="window_attention", position="rope"),
    "window_attention-alibi": dict(mixer="window_attention", position="alibi"),
    "linear_attention": dict(mixer="linear_attention", position="rope"),
    "segment_memory": dict(mixer="segment_memory", position="rope"),
    "hybrid": dict(mixer=["mamba", "segment_memory"], position="rope"),
}


def build(**model):
    mixers = model["mixer"] if isinstance(model["mixer"], list) else [model["mixer"]]
    options = {name: SMALL[name] for name in mixers if name in SMALL}
    cfg = ModelConfig(**{"d_model": 32, "n_layers": 2, "n_heads": 4, "vocab_size": V,
                         "context_length": 64, "mixer_options": options, **model})
    return SequenceModel(build_backbone(cfg), OutputHead(cfg.d_model, cfg.vocab_size)).eval()


def generate_with_logits(model, prompt, n=N_NEW, **kwargs):
    """``generate`` at temperature 1 (seeded), plus the (B, n, V) logits of every step."""
    steps = []
    out = generate(model, prompt, max_new_tokens=n, sampling=SamplingConfig(temperature=1.0),
                   seed=0, on_step=lambda i, logits, token: steps.append(logits.clone()), **kwargs)
    assert len(steps) == n
    return out, torch.stack(steps, 1)


@torch.no_grad()
def recomputed_logits(model, sequence, prompt_length):
    """Reference for one unpadded row (1, L): for every new token, a stateless forward
    over the prefix before it, cropped to the model's last ``max_positions`` tokens,
    read at its last position. Returns (1, L - prompt_length, V)."""
    limit = model.max_positions
    steps = []
    for end in range(prompt_length, sequence.shape[1]):
        prefix = sequence[:, :end]
        if limit is not None:
            prefix = prefix[:, -limit:]
        steps.append(model(prefix).logits[:, -1])
    return torch.stack(steps, 1)


def assert_tokens_vary(new_tokens):
    # The point of sampling: a model stuck on one token hides a lost state.
    assert new_tokens.unique().numel() > 2, new_tokens


@pytest.mark.parametrize("arch", CAUSAL)
def test_step_logits_equal_recomputing_the_prefix(arch):
    model = build(**CAUSAL[arch])
    prompt = torch.randint(0, V, (2, 5))
    out, logits = generate_with_logits(model, prompt)
    assert_tokens_vary(out[:, 5:])
    for row in range(2):
        expected = recomputed_logits(model, out[row:row + 1], 5)
        torch.testing.assert_close(logits[row:row + 1], expected, **TOL)


@pytest.mark.parametrize("arch", CAUSAL)
def test_left_padded_step_logits_equal_each_row_alone(arch):
    model = build(**CAUSAL[arch])
    a, b = torch.randint(0, V, (1, 6)), torch.randint(1, V, (1, 2))
    batch = torch.cat([a, torch.cat([torch.zeros(1, 4, dtype=torch.long), b], 1)])
    mask = torch.tensor([[True] * 6, [False] * 4 + [True] * 2])
    out, logits = generate_with_logits(model, batch, padding_mask=mask)
    assert_tokens_vary(out[:, 6:])
    for row, alone in enumerate((a, b)):
        sequence = torch.cat([alone, out[row:row + 1, 6:]], 1)
        expected = recomputed_logits(model, sequence, alone.shape[1])
        torch.testing.assert_close(logits[row:row + 1], expected, **TOL)


# Learned positions stop at context_length: once the context is full, each step re-reads
# the last context_length tokens, and its logits must be those of a stateless forward
# over exactly them. Other mixers under learned positions take the same path.
LEARNED = {
    "attention": dict(mixer="attention"),
    "lstm": dict(mixer="lstm", ffn="none"),
    "mamba": dict(mixer="mamba", ffn="none"),
    "window_attention": dict(mixer="window_attention"),
    "segment_memory": dict(mixer="segment_memory"),
}
CONTEXT = 8


def build_learned(arch):
    return build(**LEARNED[arch], position="learned", context_length=CONTEXT)


@pytest.mark.parametrize("arch", LEARNED)
@pytest.mark.parametrize("prompt_length", [3, CONTEXT, 13])
def test_step_logits_after_the_context_fills_equal_the_last_window(arch, prompt_length):
    model = build_learned(arch)
    assert model.max_positions == CONTEXT
    prompt = torch.randint(0, V, (2, prompt_length))
    out, logits = generate_with_logits(model, prompt)
    kept = min(prompt_length, CONTEXT)  # a longer prompt is cropped to its last CONTEXT tokens
    assert out.shape == (2, kept + N_NEW)
    torch.testing.assert_close(out[:, :kept], prompt[:, -kept:])
    assert_tokens_vary(out[:, kept:])
    for row in range(2):
        sequence = torch.cat([prompt[row:row + 1], out[row:row + 1, kept:]], 1)
        expected = recomputed_logits(model, sequence, prompt_length)
        torch.testing.assert_close(logits[row:row + 1], expected, **TOL)


@pytest.mark.parametrize("arch", LEARNED)
def test_left_padded_step_logits_after_the_context_fills(arch):
    # Row 0 fills the context first; row 1 is re-read with it while it still fits, and
    # later past its own limit. A long prompt row (11 > CONTEXT) is also cropped.
    model = build_learned(arch)
    a, b = torch.randint(0, V, (1, 11)), torch.randint(1, V, (1, 3))
    batch = torch.cat([a, torch.cat([torch.zeros(1, 8, dtype=torch.long), b], 1)])
    mask = torch.tensor([[True] * 11, [False] * 8 + [True] * 3])
    out, logits = generate_with_logits(model, batch, padding_mask=mask)
    assert_tokens_vary(out[:, -N_NEW:])
    for row, alone in enumerate((a, b)):
        sequence = torch.cat([alone, out[row:row + 1, -N_NEW:]], 1)
        expected = recomputed_logits(model, sequence, alone.shape[1])
        torch.testing.assert_close(logits[row:row + 1], expected, **TOL)


def test_on_step_sees_each_token_as_returned_and_leaves_the_result_unchanged():
    model = build(mixer="gru", position="none")
    prompt = torch.randint(0, V, (2, 3))
    calls = []
    out = generate(model, prompt, max_new_tokens=6, seed=3,
                   on_step=lambda i, logits, token: calls.append((i, logits.shape, token.clone())))
    assert torch.equal(out, generate(model, prompt, max_new_tokens=6, seed=3))
    assert [i for i, _, _ in calls] == list(range(6))
    assert all(shape == (2, V) for _, shape, _ in calls)
    torch.testing.assert_close(torch.stack([t for _, _, t in calls], 1), out[:, 3:])


def test_on_step_stops_with_the_rows_at_eos():
    model = build(mixer="gru", position="none")

    def only_four(module, args, logits):  # whatever the hidden states, greedy picks id 4 ...
        return torch.full_like(logits, -1.0).index_fill_(-1, torch.tensor([4]), 1.0)

    model.head.proj.register_forward_hook(only_four)
    calls = []
    out = generate(model, torch.ones(2, 2, dtype=torch.long), max_new_tokens=5,
                   sampling=SamplingConfig(greedy=True), eos_id=4, pad_id=9,
                   on_step=lambda i, logits, token: calls.append(token.tolist()))
    assert out.shape == (2, 3) and calls == [[4, 4]]  # ... which is eos: one step, then stop
