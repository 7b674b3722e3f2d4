"""ExampleSampler and eval_plan: batches as a pure function of (seed, step, micro)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.data.sampling import ExampleSampler, eval_plan
from seqlab.errors import DataError


def _lengths(n, seed=0):
    return np.random.default_rng(seed).integers(1, 50, size=n)


def _epoch(sampler, epoch):
    per = sampler.batches_per_epoch
    return [sampler.indices(k) for k in range(epoch * per, (epoch + 1) * per)]


@pytest.mark.parametrize("bucket", [False, True])
def test_batch_is_a_pure_function_of_seed_step_micro(bucket):
    lengths = _lengths(37)
    a = ExampleSampler(lengths, batch_size=4, seed=5, grad_accum=2, bucket=bucket, bucket_span=2)
    b = ExampleSampler(lengths, batch_size=4, seed=5, grad_accum=2, bucket=bucket, bucket_span=2)
    keys = [(s, m) for s in range(25) for m in range(2)]
    want = {key: a.indices(*key).tolist() for key in keys}
    # another sampler asked in a different order (crossing epochs back and forth) agrees
    for key in reversed(keys):
        assert b.indices(*key).tolist() == want[key]
    assert a.indices(3, 1).tolist() == want[(3, 1)]  # and asking again changes nothing


def test_different_seeds_give_different_orders():
    lengths = _lengths(40)
    a = ExampleSampler(lengths, batch_size=8, seed=0)
    b = ExampleSampler(lengths, batch_size=8, seed=1)
    assert [x.tolist() for x in _epoch(a, 0)] != [x.tolist() for x in _epoch(b, 0)]


def test_state_dict_round_trip_restores_the_position():
    lengths = _lengths(30)
    saved = ExampleSampler(lengths, batch_size=4, seed=11, bucket=True, bucket_span=3)
    state = saved.state_dict()
    restored = ExampleSampler(lengths, batch_size=4, seed=999, bucket=True, bucket_span=3)
    restored.indices(0)  # a cached plan of the wrong seed must not survive the load
    restored.load_state_dict(state)
    for step in (0, 5, 8, 40):
        assert restored.indices(step).tolist() == saved.indices(step).tolist()


@pytest.mark.parametrize("change, key", [({"batch_size": 5}, "batch_size"),
                                         ({"n": 31}, "n_examples"),
                                         ({"grad_accum": 2}, "grad_accum"),
                                         ({"bucket": True}, "bucket")])
def test_load_state_dict_refuses_other_data_or_batch_settings(change, key):
    state = ExampleSampler(_lengths(30), batch_size=4, seed=0).state_dict()
    args = {"batch_size": 4, "grad_accum": 1, "bucket": False, "n": 30, **change}
    other = ExampleSampler(_lengths(args.pop("n")), seed=0, **args)
    with pytest.raises(DataError, match=key):
        other.load_state_dict(state)


def test_load_state_dict_names_a_missing_key():
    sampler = ExampleSampler(_lengths(10), batch_size=4, seed=0)
    state = sampler.state_dict()
    del state["n_examples"]
    with pytest.raises(DataError, match="n_examples"):
        sampler.load_state_dict(state)


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(1, 60), min_size=1, max_size=60),
       batch_size=st.integers(1, 9), bucket=st.booleans(), span=st.integers(1, 4),
       seed=st.integers(0, 2**31))
def test_every_example_appears_exactly_once_per_epoch(lengths, batch_size, bucket, span, seed):
    sampler = ExampleSampler(np.array(lengths), batch_size=batch_size, seed=seed,
                             bucket=bucket, bucket_span=span)
    n = len(lengths)
    assert sampler.batches_per_epoch == -(-n // batch_size)
    for epoch in (0, 1):
        batches = _epoch(sampler, epoch)
        assert all(1 <= len(b) <= batch_size for b in batches)
        assert sorted(np.concatenate(batches).tolist()) == list(range(n))


def _padded_positions(sampler, lengths):
    return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in _epoch(sampler, 0))


def test_bucketing_reduces_padding_on_lengths_of_high_variance():
    lengths = np.random.default_rng(3).lognormal(3.0, 1.0, size=400).astype(int) + 1
    plain = ExampleSampler(lengths, batch_size=8, seed=0)
    bucketed = ExampleSampler(lengths, batch_size=8, seed=0, bucket=True, bucket_span=10)
    waste_plain = _padded_positions(plain, lengths)
    waste_bucketed = _padded_positions(bucketed, lengths)
    assert waste_bucketed < 0.3 * waste_plain, (waste_bucketed, waste_plain)


def test_bucketed_batch_order_is_shuffled_not_sorted_by_length():
    lengths = np.arange(1, 201)
    sampler = ExampleSampler(lengths, batch_size=4, seed=0, bucket=True, bucket_span=50)
    # one pool: a sorted order would make every batch's longest example grow with k
    tops = [int(lengths[b].max()) for b in _epoch(sampler, 0)]
    assert tops != sorted(tops)


@pytest.mark.parametrize("bucket", [False, True])
def test_grad_accum_maps_step_and_micro_to_consecutive_batches(bucket):
    lengths = _lengths(23)
    single = ExampleSampler(lengths, batch_size=3, seed=2, bucket=bucket, bucket_span=2)
    accum = ExampleSampler(lengths, batch_size=3, seed=2, grad_accum=3, bucket=bucket,
                           bucket_span=2)
    for step in range(12):
        for micro in range(3):
            assert (accum.indices(step, micro).tolist()
                    == single.indices(step * 3 + micro).tolist())


def test_indices_refuses_a_micro_step_out_of_range():
    sampler = ExampleSampler(_lengths(10), batch_size=2, seed=0, grad_accum=2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        sampler.indices(0, 2)
    with pytest.raises(ValueError):
        sampler.indices(-1)


def test_sampler_refuses_no_examples_and_bad_sizes():
    with pytest.raises(DataError, match="no training examples"):
        ExampleSampler(np.array([], dtype=int), batch_size=2, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        ExampleSampler(_lengths(5), batch_size=0, seed=0)


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=50),
       batch_size=st.integers(1, 8))
def test_eval_plan_covers_every_example_once_sorted_by_length(lengths, batch_size):
    lengths = np.array(lengths)
    plan = eval_plan(lengths, batch_size=batch_size, max_batches=None, seed=0)
    flat = np.concatenate(plan)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in plan)
    assert (np.diff(lengths[flat]) >= 0).all()


def test_eval_plan_cap_takes_the_same_subset_every_time():
    lengths = _lengths(100)
    first = eval_plan(lengths, batch_size=4, max_batches=3, seed=7)
    again = eval_plan(lengths, batch_size=4, max_batches=3, seed=7)
    assert len(first) == 3
    assert [b.tolist() for b in first] == [b.tolist() for b in again]
    chosen = np.concatenate(first)
    assert len(set(chosen.tolist())) == 12
    other_seed = np.concatenate(eval_plan(lengths, batch_size=4, max_batches=3, seed=8))
    assert set(other_seed.tolist()) != set(chosen.tolist())


def test_eval_plan_cap_larger_than_the_set_keeps_everything():
    plan = eval_plan(_lengths(10), batch_size=4, max_batches=50, seed=0)
    assert sorted(np.concatenate(plan).tolist()) == list(range(10))
