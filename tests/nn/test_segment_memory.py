"""Segment memory against a dense T x T reference, streaming laws on small segments,
bounded state and context reaching past the raw memory through compressed slots."""

import math

import pytest
import torch

from seqlab.config import RunConfig
from seqlab.errors import ConfigError
from seqlab.nn.mixers import MIXERS, MixerArgs
from seqlab.nn.positions import ALiBiPosition, RotaryPosition
from seqlab.nn.segment_memory import SegmentMemoryAttention

D, H = 32, 4
SMALL = dict(segment=4, memory_segments=1, compressed_slots=3, compression_rate=2)


def make(position=None, n_kv_heads=None, **options):
    pos = {"rope": RotaryPosition(D // H), "alibi": ALiBiPosition(H), None: None}[position]
    return SegmentMemoryAttention(D, H, n_kv_heads=n_kv_heads, position=pos,
                                  **{**SMALL, **options}).eval()


def reference(m, x):
    """Dense attention over [all tokens, all pooled slots] under an explicit allowed-mask.

    Query i in segment s sees tokens of segment s up to i, tokens of segments s-M..s-1,
    and the pooled slots g with (s-M)P - Nc <= g < (s-M)P (P slots per segment).
    """
    B, T, _ = x.shape
    Hkv, Dh = m.n_kv_heads, m.d_head
    L, M, Nc, c = m.segment, m.memory_segments, m.compressed_slots, m.compression_rate
    P = L // c
    q = m.q_proj(x).view(B, T, H, Dh).transpose(1, 2)  # (B, H, T, Dh)
    kv = m.kv_proj(x).view(B, T, 2, Hkv, Dh)
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)  # (B, Hkv, T, Dh)
    pos = torch.arange(T)
    if isinstance(m.position, RotaryPosition):
        q, k = m.position.rotate(q, k, pos.expand(B, T))
    G = (T // L) * P  # pooled slots of complete segments
    kp = k[:, :, :G * c].reshape(B, Hkv, G, c, Dh).mean(3)
    vp = v[:, :, :G * c].reshape(B, Hkv, G, c, Dh).mean(3)

    seg = pos // L
    same = (seg[:, None] == seg[None]) & (pos[None] <= pos[:, None])
    raw = (seg[None] < seg[:, None]) & (seg[None] >= seg[:, None] - M)
    hi = (seg - M) * P  # (T,) first slot a query may not see
    g = torch.arange(G)
    slots = (g[None] < hi[:, None]) & (g[None] >= hi[:, None] - Nc)
    allowed = torch.cat([same | raw, slots], 1)  # (T, T + G)

    keys = torch.cat([k, kp], 2).repeat_interleave(H // Hkv, 1)
    vals = torch.cat([v, vp], 2).repeat_interleave(H // Hkv, 1)
    scores = q @ keys.transpose(-1, -2) / math.sqrt(Dh)  # (B, H, T, T + G)
    if isinstance(m.position, ALiBiPosition):
        key_pos = torch.cat([pos.float(), g * c + (c - 1) / 2])
        scores = scores + m.position.bias(pos[None], key_pos[None])
    y = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ vals
    return m.out_proj(y.transpose(1, 2).reshape(B, T, D))


CASES = {
    "default-small": {},
    "rope": dict(position="rope"),
    "alibi-gqa": dict(position="alibi", n_kv_heads=2),
    "no-raw-memory": dict(memory_segments=0, compressed_slots=2),
    "no-compression": dict(memory_segments=2, compressed_slots=0),
    "rate-1-mqa": dict(compression_rate=1, compressed_slots=5, n_kv_heads=1, position="rope"),
}


@pytest.mark.parametrize("case", CASES)
def test_matches_dense_reference(case):
    m = make(**CASES[case])
    x = torch.randn(2, 23, D)
    torch.testing.assert_close(m(x)[0], reference(m, x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", ["default-small", "alibi-gqa", "no-raw-memory"])
@pytest.mark.parametrize("splits", [[1] * 23, [5, 1, 2, 7, 8], [3, 12, 8]])
def test_chunked_equals_full_across_segment_boundaries(case, splits, run_chunks):
    m = make(**CASES[case])
    x = torch.randn(2, 23, D)
    full, _ = m(x)
    chunked, _ = run_chunks(m, x, splits)
    torch.testing.assert_close(chunked, full, atol=2e-5, rtol=1e-4)


def test_padding_anywhere_in_a_stream_occupies_no_position(run_chunks):
    """Ragged segment grids: each row, chunked with pads at random places, equals itself alone."""
    m = make(position="rope", segment=3, compressed_slots=2, compression_rate=3)
    x = torch.randn(3, 30, D)
    mask = torch.rand(3, 30) > 0.3
    mask[2, :12] = False  # a long left pad
    dirty = x.masked_fill(~mask[..., None], float("nan"))
    full, _ = m(dirty, padding_mask=mask)
    chunked, state = run_chunks(m, dirty, [4, 1, 9, 2, 14], padding_mask=mask)
    torch.testing.assert_close(chunked, full, atol=2e-5, rtol=1e-4)
    assert state.seen.tolist() == mask.sum(1).tolist()
    for i in range(3):
        alone, _ = m(x[i:i + 1, mask[i]])
        torch.testing.assert_close(full[i, mask[i]], alone[0], atol=2e-5, rtol=1e-4)
        assert (full[i, ~mask[i]] == 0).all()


def test_left_padded_generation_batch_equals_each_alone():
    m = make()
    lengths = [13, 6]
    x = torch.randn(2, 13, D)
    mask = torch.arange(13)[None] >= (13 - torch.tensor(lengths))[:, None]
    state = m.init_state(2)
    _, state = m(x, state, padding_mask=mask)
    steps = torch.randn(2, 5, D)
    outs = []
    for i in range(5):
        y, state = m(steps[:, i:i + 1], state)
        outs.append(y)
    for i, n in enumerate(lengths):
        alone, _ = m(torch.cat([x[i:i + 1, 13 - n:], steps[i:i + 1]], 1))
        torch.testing.assert_close(torch.cat(outs, 1)[i], alone[0, n:], atol=2e-5, rtol=1e-4)


def test_state_size_is_bounded():
    m = make(n_kv_heads=2)
    state = m.init_state(2)
    shapes = set()
    for _ in range(60):
        _, state = m(torch.randn(2, 1, D), state)
        shapes.add((tuple(state.memory.shape), tuple(state.compressed.shape)))
    # (B, M + 1, L, Hkv, 2 Dh) and (B, Nc, Hkv, 2 Dh), whatever the number of steps
    assert shapes == {((2, 2, 4, 2, 16), (2, 3, 2, 16))}
    picked = state.reorder(torch.tensor([1]))
    assert picked.memory.shape[0] == 1 and picked.seen.tolist() == [60]
    assert state.memory.shape[0] == 2  # reorder returns a new state, this one is unchanged


def test_context_reaches_past_raw_memory_through_compressed_slots():
    """segment 4, 1 raw segment, 4 slots of 2 tokens: query 12 (segment 3) sees raw segment
    2 and slots 0..3 = tokens 0..7, so token 0 moves it although 12 >= L (M + 1) = 8."""
    def grad_of_output_on_token0(model, query):
        x = torch.randn(1, 20, D, requires_grad=True)
        y, _ = model(x)
        y[0, query].sum().backward()
        return x.grad[0, 0].abs().sum()

    m = make(compressed_slots=4)
    assert grad_of_output_on_token0(m, 12) > 0
    assert grad_of_output_on_token0(m, 16) == 0  # slot 0 has left the FIFO
    plain = make(compressed_slots=0)
    assert grad_of_output_on_token0(plain, 12) == 0  # negative control: raw memory only
    assert grad_of_output_on_token0(plain, 7) > 0


def test_options_are_checked_and_mode_is_causal_only():
    with pytest.raises(ValueError, match="compression_rate \\(3\\) must divide segment \\(4\\)"):
        make(compression_rate=3)
    with pytest.raises(ValueError, match="segment >= 1"):
        make(segment=0)
    entry = MIXERS.get("segment_memory")
    assert entry.modes == ("causal",)
    args = MixerArgs(d_model=D, n_heads=H, n_kv_heads=None, causal=False, dropout=0.0,
                     context_length=16, position=None)
    with pytest.raises(ValueError, match="causal only"):
        entry.build(args, entry.options())
    with pytest.raises(ConfigError, match="'segment_memory' runs only causal"):
        RunConfig.from_dict({"task": "classify", "data": {"path": "x.jsonl"},
                             "model": {"mixer": "segment_memory", "causal": False,
                                       "vocab_size": 9}})


def test_generates_through_a_model_built_from_config():
    from seqlab.infer import SamplingConfig, generate
    from seqlab.tasks.causal_lm import build_language_model

    cfg = RunConfig.from_dict({"model": {
        "d_model": 32, "n_layers": 2, "n_heads": 4, "vocab_size": 11, "context_length": 64,
        "mixer": "segment_memory", "position": "rope",
        "mixer_options": {"segment_memory": {**SMALL}}}})
    model = build_language_model(cfg).eval()
    prompt = torch.randint(0, 11, (1, 7))
    out = generate(model, prompt, max_new_tokens=10, sampling=SamplingConfig(greedy=True))
    with torch.no_grad():
        full = model(out[:, :-1]).logits.argmax(-1)
    assert torch.equal(full[0, 6:], out[0, 7:])  # cached decoding == recomputing the prefix
