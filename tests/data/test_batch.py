"""The collator: padding, the padding mask, and the position counts of a Batch."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.data.batch import IGNORE, Batch, pad
from seqlab.data.examples import ExampleSet
from seqlab.data.labels import UNSEEN


def test_ignore_is_the_cross_entropy_ignore_index_and_unseen():
    assert IGNORE == UNSEEN == -100


def test_pad_right_pads_ids_and_masks_real_positions():
    rows = [np.array([1, 2, 3], dtype=np.int32), np.array([4], dtype=np.int32)]
    inputs, mask = pad(rows, value=9, dtype=torch.int64)
    assert inputs.dtype == torch.int64
    assert inputs.tolist() == [[1, 2, 3], [4, 9, 9]]
    assert mask.shape == (2, 3) and mask.dtype == torch.bool
    assert mask.tolist() == [[True, True, True], [True, False, False]]


def test_pad_gives_no_mask_when_all_lengths_agree():
    rows = [np.arange(4, dtype=np.int32), np.arange(4, 8, dtype=np.int32)]
    inputs, mask = pad(rows, value=0, dtype=torch.int64)
    assert mask is None
    assert inputs.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_pad_features_with_zero_vectors():
    rows = [np.ones((2, 3), dtype=np.float32), np.full((4, 3), 2.0, dtype=np.float32)]
    inputs, mask = pad(rows, value=0.0, dtype=torch.float32)
    assert inputs.shape == (2, 4, 3)  # (B, T, F)
    assert torch.equal(inputs[0, 2:], torch.zeros(2, 3))
    assert torch.equal(inputs[0, :2], torch.ones(2, 3))
    assert mask.tolist() == [[True, True, False, False], [True] * 4]


def _tag_set():
    # three examples of lengths 3, 1, 2 with aligned tag ids
    rows = [np.array([5, 6, 7], dtype=np.int32), np.array([8], dtype=np.int32),
            np.array([9, 10], dtype=np.int32)]
    tags = [np.array([0, 1, 2]), np.array([1]), np.array([2, 0])]
    return ExampleSet.from_rows(rows, tags, "tags", ["a", "b", "c"])


def test_example_set_pads_tags_with_ignore_and_ids_with_pad_id():
    batch = _tag_set().batch(np.array([0, 1, 2]), pad_id=99)
    assert batch.inputs.tolist() == [[5, 6, 7], [8, 99, 99], [9, 10, 99]]
    assert batch.targets.tolist() == [[0, 1, 2], [1, IGNORE, IGNORE], [2, 0, IGNORE]]
    assert batch.padding_mask.tolist() == [[True] * 3, [True, False, False], [True, True, False]]
    # a target is IGNORE exactly where the input is padding
    assert torch.equal(batch.targets != IGNORE, batch.padding_mask)
    assert batch.index.tolist() == [0, 1, 2]


def test_example_set_batch_follows_the_given_order():
    batch = _tag_set().batch(np.array([2, 0]), pad_id=0)
    assert batch.inputs.tolist() == [[9, 10, 0], [5, 6, 7]]
    assert batch.index.tolist() == [2, 0]


def test_example_set_standardises_features_then_pads_with_zero():
    rows = [np.array([[1.0, 10.0], [3.0, 30.0]], dtype=np.float32),
            np.array([[5.0, 50.0]], dtype=np.float32)]
    ex = ExampleSet.from_rows(rows, [0, 1], "class", ["a", "b"])
    mean, std = np.array([1.0, 10.0], np.float32), np.array([2.0, 10.0], np.float32)
    batch = ex.batch(np.array([0, 1]), transform=lambda r: (r - mean) / std)
    assert batch.inputs.dtype == torch.float32
    assert batch.inputs.tolist() == [[[0.0, 0.0], [1.0, 2.0]], [[2.0, 4.0], [0.0, 0.0]]]
    assert batch.targets.tolist() == [0, 1]


def test_n_positions_and_n_padded():
    inputs, mask = pad([np.arange(5), np.arange(2), np.arange(3)], value=0)
    batch = Batch(inputs, padding_mask=mask)
    assert batch.size == 3
    assert batch.n_positions == 10
    assert batch.n_padded == 15 - 10
    full = Batch(torch.zeros(4, 6, 2))  # (B, T, F), no mask: every position real
    assert full.n_positions == 24 and full.n_padded == 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=8))
def test_pad_mask_counts_every_real_position_once(lengths):
    rows = [np.arange(n, dtype=np.int32) + 1 for n in lengths]
    inputs, mask = pad(rows, value=0, dtype=torch.int64)
    batch = Batch(inputs, padding_mask=mask)
    assert inputs.shape == (len(lengths), max(lengths))
    assert batch.n_positions == sum(lengths)
    assert batch.n_padded == len(lengths) * max(lengths) - sum(lengths)
    assert (mask is None) == (len(set(lengths)) == 1)
    if mask is not None:
        assert mask.sum(1).tolist() == lengths
        assert torch.equal(inputs != 0, mask)  # real ids are >= 1, padding is 0
