"""Generation through the state protocol equals recomputing the full prefix."""

import pytest
import torch

from seqlab.config import RunConfig
from seqlab.errors import ShapeError
from seqlab.infer import SamplingConfig, generate, next_token
from seqlab.tasks.causal_lm import build_language_model

V = 23


def model_for(**model):
    base = {"d_model": 32, "n_layers": 2, "n_heads": 4, "context_length": 12, "vocab_size": V}
    return build_language_model(RunConfig.from_dict({"model": {**base, **model}})).eval()


ARCHS = {
    "gpt-learned": dict(position="learned"),
    "rope-swiglu": dict(position="rope", ffn="swiglu", norm="rmsnorm"),
    "alibi-gqa": dict(position="alibi", n_kv_heads=2),
    "sinusoidal": dict(position="sinusoidal"),
    "lstm": dict(mixer="lstm", position="none", ffn="none"),
    "gru": dict(mixer="gru", position="none"),
    "rnn": dict(mixer="rnn", position="none"),
    "hybrid": dict(mixer=["gru", "attention"], position="rope"),
}


def greedy_by_recomputing(model, prompt, n):
    """Reference: run the whole (cropped) prefix again for every new token."""
    tokens = prompt
    limit = model.max_positions
    for _ in range(n):
        context = tokens[:, -limit:] if limit else tokens
        logits = model(context).logits[:, -1]
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], 1)
    return tokens


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_with_state_equals_recomputing_the_prefix(arch):
    torch.manual_seed(0)
    model = model_for(**ARCHS[arch])
    prompt = torch.randint(0, V, (2, 5))
    # 20 new tokens run past the learned-position model's 12-position context.
    out = generate(model, prompt, max_new_tokens=20, sampling=SamplingConfig(greedy=True))
    torch.testing.assert_close(out, greedy_by_recomputing(model, prompt, 20))


def test_long_prompt_is_cropped_for_learned_positions():
    model = model_for(position="learned")
    prompt = torch.randint(0, V, (1, 30))
    out = generate(model, prompt, max_new_tokens=3, sampling=SamplingConfig(greedy=True))
    assert out.shape == (1, 12 + 3)
    torch.testing.assert_close(out[:, :12], prompt[:, -12:])


def test_sampling_is_seeded_and_leaves_global_rng_alone():
    model = model_for()
    prompt = torch.randint(0, V, (1, 3))
    before = torch.get_rng_state()
    a = generate(model, prompt, max_new_tokens=10, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = generate(model, prompt, max_new_tokens=10, seed=7)
    c = generate(model, prompt, max_new_tokens=10, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_top_k_and_top_p_restrict_the_candidates():
    logits = torch.tensor([[4.0, 3.0, 2.0, -1.0, -2.0]])
    g = torch.Generator().manual_seed(0)
    picks = {int(next_token(logits, SamplingConfig(top_k=2), g)) for _ in range(200)}
    assert picks == {0, 1}
    # softmax mass: 0.665, 0.245, 0.090, ... -> top_p 0.8 keeps the first two
    picks = {int(next_token(logits, SamplingConfig(top_p=0.8), g)) for _ in range(200)}
    assert picks == {0, 1}
    picks = {int(next_token(logits, SamplingConfig(top_p=0.5), g)) for _ in range(50)}
    assert picks == {0}
    assert int(next_token(logits, SamplingConfig(temperature=0), g)) == 0


def test_eos_stops_rows_and_pads_the_rest():
    model = model_for()
    with torch.no_grad():
        model.head.proj.weight.zero_()
        model.backbone.embed.weight.zero_()  # tied: every logit is 0 ...
    model.head.proj.weight.data[3] = 0  # ... so greedy picks id 0 every time
    out = generate(model, torch.ones(2, 2, dtype=torch.long), max_new_tokens=5,
                   sampling=SamplingConfig(greedy=True), eos_id=0, pad_id=9)
    assert out.shape == (2, 3)  # stopped as soon as every row emitted eos
    assert out[:, 2].tolist() == [0, 0]


def test_left_padded_batch_generates_what_each_prompt_generates_alone():
    model = model_for(position="rope")
    a, b = torch.randint(0, V, (1, 5)), torch.randint(0, V, (1, 2))
    batch = torch.cat([a, torch.cat([torch.zeros(1, 3, dtype=torch.long), b], 1)])
    mask = torch.tensor([[True] * 5, [False] * 3 + [True] * 2])
    out = generate(model, batch, max_new_tokens=6, sampling=SamplingConfig(greedy=True),
                   padding_mask=mask)
    alone_a = generate(model, a, max_new_tokens=6, sampling=SamplingConfig(greedy=True))
    alone_b = generate(model, b, max_new_tokens=6, sampling=SamplingConfig(greedy=True))
    assert torch.equal(out[0, 5:], alone_a[0, 5:])
    assert torch.equal(out[1, 5:], alone_b[0, 2:])


def test_bad_generation_inputs():
    model = model_for()
    with pytest.raises(ShapeError, match="prompt must have shape"):
        generate(model, torch.zeros(3, dtype=torch.long), max_new_tokens=2)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=1.5)
