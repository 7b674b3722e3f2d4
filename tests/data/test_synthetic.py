"""Synthetic task generators: shapes, determinism, scored positions, answers recomputed."""

import collections
import statistics

import pytest
import torch

from seqlab.data.synthetic import (IGNORE, LISTOPS_OPS, SYNTHETIC, ListOps, build_generator,
                                   listops_value)
from seqlab.errors import ConfigError


def sample(name, length=64, batch_size=8, seed=0, **knobs):
    g = build_generator(name, knobs)
    return g, g.sample(batch_size, length, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", SYNTHETIC.names())
@pytest.mark.parametrize("length", [64, 100])
def test_shapes_and_scored_positions(name, length):
    g, b = sample(name, length)
    if g.input_dim is None:
        assert b.inputs.shape == (8, length) and b.inputs.dtype == torch.long
        assert 0 <= int(b.inputs.min()) and int(b.inputs.max()) < g.vocab_size
    else:
        assert b.inputs.shape == (8, length, g.input_dim) and b.inputs.is_floating_point()
        assert g.vocab_size is None
    assert b.targets.shape == b.scored.shape == (8, length) and b.scored.dtype == torch.bool
    assert b.scored.any(1).all()
    if g.regression:
        assert g.n_classes == 1 and (b.targets[~b.scored] == 0).all()
    else:
        assert (b.targets[~b.scored] == IGNORE).all()
        scored = b.targets[b.scored]
        assert (0 <= scored).all() and (scored < g.n_classes).all()
    assert 0 < g.chance < 1


@pytest.mark.parametrize("name", SYNTHETIC.names())
def test_deterministic_per_seed(name):
    _, a = sample(name, seed=1)
    _, b = sample(name, seed=1)
    _, c = sample(name, seed=2)
    for x, y in [(a.inputs, b.inputs), (a.targets, b.targets), (a.scored, b.scored)]:
        assert torch.equal(x, y)
    assert not torch.equal(a.inputs, c.inputs)


@pytest.mark.parametrize("name", SYNTHETIC.names())
def test_too_short_and_bad_knobs_are_config_errors(name):
    g = build_generator(name)
    if g.min_length > 1:
        with pytest.raises(ConfigError, match="length"):
            g.sample(2, g.min_length - 1, torch.Generator())
    with pytest.raises(ConfigError, match="unknown config key"):
        build_generator(name, {"no_such_knob": 1})


def test_unknown_generator_names_the_valid_ones():
    with pytest.raises(ConfigError, match="selective_copy"):
        build_generator("selective_cpy")


def test_copy_targets_are_the_first_tokens_after_the_delimiter():
    g, b = sample("copy", length=40, n_copy=5, n_tokens=6)
    K, T = 5, 40
    assert torch.equal(b.targets[:, T - K:], b.inputs[:, :K])
    assert (b.inputs[:, :K] >= 2).all()
    assert (b.inputs[:, T - K - 1] == g.DELIMITER).all()
    assert (b.inputs[:, K:T - K - 1] == g.BLANK).all() and (b.inputs[:, T - K:] == g.BLANK).all()
    assert b.scored[:, T - K:].all() and not b.scored[:, :T - K].any()
    assert g.chance == pytest.approx(1 / 6)


def test_selective_copy_outputs_the_data_tokens_in_order():
    g, b = sample("selective_copy", length=50, n_data=6, n_tokens=5)
    for row, target, scored in zip(b.inputs, b.targets, b.scored):
        prefix = row[:50 - 6]
        data = prefix[prefix != g.NOISE]
        assert len(data) == 6 and (data >= 2).all()
        assert torch.equal(target[scored], data)  # in order of appearance
        assert (row[50 - 6:] == g.MARKER).all() and scored[50 - 6:].all()
    # the data positions vary between rows (a fixed filter cannot solve it)
    assert len({tuple((r[:44] != 0).nonzero().flatten().tolist()) for r in b.inputs}) > 1


def test_mqar_each_query_is_answered_by_its_pair():
    g, b = sample("mqar", length=64, num_kv_pairs=6, n_keys=10, n_values=7)
    N = 6
    for row, target, scored in zip(b.inputs, b.targets, b.scored):
        pairs = dict(zip(row[0:2 * N:2].tolist(), row[1:2 * N:2].tolist()))
        assert len(pairs) == N and all(1 <= k <= 10 for k in pairs)
        assert all(11 <= v <= 17 for v in pairs.values())
        where = scored.nonzero().flatten()
        assert len(where) == N and (where >= 2 * N).all() and ((where - 2 * N) % 2 == 0).all()
        queries = row[where].tolist()
        assert sorted(queries) == sorted(pairs)  # every key asked once
        assert target[where].tolist() == [pairs[k] for k in queries]
        rest = row[2 * N:]
        assert ((rest == 0) | scored[2 * N:]).all()  # no value is shown after the pairs
    # the power law puts most queries soon after the pairs
    _, big = sample("mqar", length=1024, batch_size=32)
    where = big.scored.nonzero()[:, 1]
    assert (where < 512).float().mean() > 0.6


def test_induction_answer_follows_the_first_trigger():
    g, b = sample("induction", length=30, n_tokens=5)
    for row, target, scored in zip(b.inputs, b.targets, b.scored):
        triggers = (row == g.TRIGGER).nonzero().flatten().tolist()
        assert len(triggers) == 2 and triggers[1] == 29 and triggers[0] <= 27
        assert scored.nonzero().flatten().tolist() == [29]
        assert target[29] == row[triggers[0] + 1] != g.TRIGGER
    # any length, as extrapolation needs
    _, long = sample("induction", length=3000, batch_size=2)
    assert long.inputs.shape == (2, 3000)


def test_adding_target_is_the_sum_of_the_two_marked_values():
    g, b = sample("adding", length=21, batch_size=16)
    values, markers = b.inputs[..., 0], b.inputs[..., 1]
    assert ((values >= 0) & (values <= 1)).all()
    assert (markers[:, :10].sum(1) == 1).all() and (markers[:, 10:].sum(1) == 1).all()
    for row, m, target in zip(values, markers, b.targets):
        marked = [v for v, k in zip(row.tolist(), m.tolist()) if k]
        assert target[-1].item() == pytest.approx(sum(marked))
    assert b.scored[:, -1].all() and b.scored.sum() == 16
    assert g.regression and g.chance == pytest.approx(2 * 0.04 - 0.04 ** 2)


def evaluate_listops(tokens: list[int]) -> int:
    """An independent evaluator: a stack machine over the token ids."""
    stack = []
    for t in tokens:
        if t == ListOps.PAD:
            continue
        if ListOps.DIGIT <= t < ListOps.DIGIT + 10:
            stack.append(t - ListOps.DIGIT)
        elif ListOps.OP <= t < ListOps.OP + 4:
            stack.append(LISTOPS_OPS[t - ListOps.OP])
        else:
            assert t == ListOps.CLOSE
            args = []
            while not isinstance(stack[-1], str):
                args.append(stack.pop())
            op = stack.pop()
            assert len(args) >= 2
            reference = {"[MAX": max, "[MIN": min, "[SM": lambda a: sum(a) % 10,
                         "[MED": lambda a: int(statistics.median(a))}[op]
            stack.append(reference(args))
    assert len(stack) == 1
    return stack[0]


@pytest.mark.parametrize("length", [3, 16, 200])
def test_listops_answers_match_an_independent_evaluator(length):
    g, b = sample("listops", length=length, batch_size=24)
    for row, target in zip(b.inputs, b.targets):
        tokens = row.tolist()
        n_pad = len(tokens) - len(tokens[next(i for i, t in enumerate(tokens) if t):])
        assert all(t != 0 for t in tokens[n_pad:])  # left-padded only
        assert evaluate_listops(tokens) == target[-1].item()
    assert b.scored[:, -1].all() and b.scored.sum() == 24


def test_listops_fills_the_length_and_nests():
    _, b = sample("listops", length=256, batch_size=64)
    lengths = (b.inputs != 0).sum(1)
    assert lengths.max() <= 256 and lengths.float().mean() > 0.4 * 256
    assert ((b.inputs == ListOps.CLOSE).sum(1) > 3).all()
    assert listops_value("[MED", [1, 2, 3, 9]) == 2  # int of the mean of the middle two


def test_listops_chance_is_the_majority_class_rate():
    g, b = sample("listops", length=128, batch_size=1500, seed=3)
    counts = collections.Counter(b.targets[:, -1].tolist())
    assert max(counts.values()) / 1500 == pytest.approx(g.chance, abs=0.03)
