"""The ``features`` source: sequences of feature vectors from NumPy files."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch

from seqlab.data.batch import IGNORE
from seqlab.data.sources import DATA_SOURCES, SourceContext
import seqlab
from seqlab.errors import ConfigError, DataError

F = 3


def source(path, *, label_kind="class", seed=0, batch_size=4, load=True, **options):
    """A ``features`` source over ``path`` (``options`` are FeaturesOptions fields)."""
    entry = DATA_SOURCES.get("features")
    ctx = SourceContext(seed=seed, batch_size=batch_size, grad_accum=1, eval_batches=None,
                        max_length=64, label_kind=label_kind)
    src = entry.cls(entry.options(source="features", path=str(path), **options), ctx)
    if load:
        src.load(None)
    return src


def ragged(n=10, seed=0, shift=0.0):
    """n sequences of lengths 1..5 with F features: (rows, lengths)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 6, size=n)
    rows = [(rng.normal(size=(t, F)) * 2 + shift).astype(np.float32) for t in lengths]
    return rows, lengths


def write_labels(path, pairs, id_field="id", label_field="label"):
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([id_field, label_field])
        writer.writerows(pairs)
    return path


def index_of(where: str) -> int:
    """``file[3]`` -> 3."""
    return int(where.rsplit("[", 1)[1].rstrip("]"))


def frames(batch):
    """The real (unpadded) frames of a batch, (n, F)."""
    if batch.padding_mask is None:
        return batch.inputs.reshape(-1, batch.inputs.shape[-1])
    return batch.inputs[batch.padding_mask]


# --- layouts ---------------------------------------------------------------------------


def test_ragged_npz_with_lengths_and_labels(tmp_path):
    rows, lengths = ragged(10)
    names = np.array(["cat", "dog"] * 5)
    path = tmp_path / "d.npz"
    np.savez(path, features=np.concatenate(rows), lengths=lengths, labels=names)
    src = source(path, normalize=False, val_fraction=0.2)
    assert src.input_dim == F and src.input_kind == "features"
    assert src.labels.names == ["cat", "dog"]
    assert len(src.train) == 8 and len(src.val) == 2
    for split in (src.train, src.val):
        for i, where in enumerate(split.names):
            k = index_of(where)
            assert where.startswith(str(path))
            assert np.array_equal(split.row(i), rows[k])
            assert src.labels.names[split.labels[i]] == names[k]
    batch = src.train_batch(0, 0)
    assert batch.inputs.dtype == torch.float32 and batch.inputs.shape[2] == F  # (B, T, F)
    if batch.padding_mask is not None:
        assert (batch.inputs[~batch.padding_mask] == 0).all()
    assert batch.n_positions == sum(src.train.lengths[i] for i in batch.index.tolist())


def test_npy_of_n_sequences_with_a_labels_file_keyed_by_row_index(tmp_path):
    data = np.random.default_rng(1).normal(size=(6, 4, F)).astype(np.float32)  # (N, T, F)
    np.save(tmp_path / "d.npy", data)
    order = [3, 0, 5, 1, 4, 2]  # the labels file need not follow the rows
    labels = write_labels(tmp_path / "labels.csv", [(i, f"c{i % 2}") for i in order])
    src = source(tmp_path / "d.npy", labels=str(labels), normalize=False, val_fraction=0.34)
    assert len(src.train) + len(src.val) == 6
    for split in (src.train, src.val):
        for i, where in enumerate(split.names):
            k = index_of(where)
            assert np.array_equal(split.row(i), data[k])
            assert src.labels.names[split.labels[i]] == f"c{k % 2}"
    batch = src.train_batch(0, 0)
    assert batch.padding_mask is None  # equal lengths: no mask


def test_folder_of_per_sequence_files_with_labels_keyed_by_file_stem(tmp_path):
    folder = tmp_path / "seqs"
    folder.mkdir()
    rows, _ = ragged(5, seed=2)
    stems = ["walk", "run", "sit", "jump", "lie"]
    for stem, row in zip(stems, rows):
        np.save(folder / f"{stem}.npy", row)
    # a labels file inside the folder is not read as data
    labels = tmp_path / "seqs" / "labels.jsonl"
    labels.write_text("".join(json.dumps({"name": s, "y": len(s)}) + "\n" for s in stems))
    src = source(folder, labels=str(labels), id_field="name", label_field="y",
                 label_kind="number", normalize=False, val_fraction=0.2)
    assert src.labels.names == ["target"]
    assert len(src.train) == 4 and len(src.val) == 1
    for split in (src.train, src.val):
        for i, where in enumerate(split.names):
            stem = os.path.basename(where)[:-len(".npy")]
            assert np.array_equal(split.row(i), rows[stems.index(stem)])
            assert split.labels[i].tolist() == [len(stem)]


def test_tags_stored_in_the_npz_aligned_with_the_frames(tmp_path):
    rows, lengths = ragged(8, seed=3)
    total = int(lengths.sum())
    tags = np.array(["on", "off", "idle"])[np.arange(total) % 3]
    path = tmp_path / "d.npz"
    np.savez(path, features=np.concatenate(rows), lengths=lengths, labels=tags)
    src = source(path, label_kind="tags", normalize=False, val_path=str(path))
    assert src.labels.names == ["idle", "off", "on"]
    ends = np.cumsum(lengths)
    ex = src.train
    for i in range(len(ex)):
        got = [src.labels.names[t] for t in ex.labels[ex.offsets[i]:ex.offsets[i + 1]]]
        assert got == tags[ends[i] - lengths[i]:ends[i]].tolist()
    batch = src.train_batch(0, 0)
    assert batch.targets.shape == batch.inputs.shape[:2]
    if batch.padding_mask is not None:
        assert torch.equal(batch.targets != IGNORE, batch.padding_mask)


def test_a_folder_of_single_sequence_npz_files_with_their_own_tags(tmp_path):
    rows, _ = ragged(4, seed=4)
    for k, row in enumerate(rows):
        np.savez(tmp_path / f"s{k}.npz", features=row, labels=np.arange(len(row)) % 2)
    src = source(tmp_path, label_kind="tags", normalize=False, val_path=str(tmp_path))
    assert src.labels.names == [0, 1]
    for i in range(len(src.train)):
        tags = src.train.labels[src.train.offsets[i]:src.train.offsets[i + 1]]
        assert tags.tolist() == (np.arange(len(rows[i])) % 2).tolist()


def test_numbers_stored_in_the_npz(tmp_path):
    rows, lengths = ragged(6, seed=5)
    y = np.arange(12, dtype=np.float32).reshape(6, 2)  # (N, K)
    path = tmp_path / "d.npz"
    np.savez(path, features=np.concatenate(rows), lengths=lengths, labels=y)
    src = source(path, label_kind="number", normalize=False, val_path=str(path))
    assert src.labels.names == ["target_0", "target_1"]
    assert np.array_equal(src.train.labels, y)


# --- normalization ---------------------------------------------------------------------


def test_normalization_uses_training_statistics_and_round_trips(tmp_path):
    train_rows, train_len = ragged(12, seed=6, shift=5.0)
    val_rows, val_len = ragged(5, seed=7, shift=-3.0)  # a different distribution
    train, val = tmp_path / "train.npz", tmp_path / "val.npz"
    np.savez(train, features=np.concatenate(train_rows), lengths=train_len,
             labels=np.array(["a", "b", "c"] * 4))
    np.savez(val, features=np.concatenate(val_rows), lengths=val_len,
             labels=np.array(["a", "b", "c", "a", "b"]))
    src = source(train, val_path=str(val))
    all_train = np.concatenate(train_rows)
    mean, std = all_train.mean(0), all_train.std(0)
    assert np.allclose(src.mean, mean, atol=1e-5) and np.allclose(src.std, std, atol=1e-5)

    val_batches = list(src.eval_sets()["val"]())
    got = torch.cat([frames(b) for b in val_batches])
    want = np.concatenate([val_rows[i] for b in val_batches for i in b.index.tolist()])
    assert torch.allclose(got, torch.from_numpy((want - mean) / std), atol=1e-5)
    for b in val_batches:  # padding stays zero after standardising
        if b.padding_mask is not None:
            assert (b.inputs[~b.padding_mask] == 0).all()
    # training batches are standardised too: over an epoch, mean 0 and std 1 per channel
    epoch = torch.cat([frames(src.train_batch(k, 0)) for k in range(src.sampler.batches_per_epoch)])
    assert torch.allclose(epoch.mean(0), torch.zeros(F), atol=1e-5)
    assert torch.allclose(epoch.std(0, unbiased=False), torch.ones(F), atol=1e-4)

    fitted = json.loads(json.dumps(src.fitted()))  # saved as JSON with the run
    assert fitted["width"] == F and fitted["labels"]["names"] == ["a", "b", "c"]
    fresh = source(train, val_path=str(val), load=False)
    fresh.attach(None, fitted)
    assert fresh.input_dim == F
    for a, b in zip(src.read(str(val))(), fresh.read(str(val))()):
        assert torch.allclose(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def test_without_normalize_the_frames_are_as_stored(tmp_path):
    rows, lengths = ragged(4, seed=8, shift=10.0)
    path = tmp_path / "d.npz"
    np.savez(path, features=np.concatenate(rows), lengths=lengths)
    src = source(path, label_kind=None, normalize=False, val_path=str(path))
    assert src.mean is None and src.fitted()["features"] is None
    batch = src.train_batch(0, 0)
    assert batch.targets is None
    want = np.concatenate([rows[i] for i in batch.index.tolist()])
    assert torch.equal(frames(batch), torch.from_numpy(want))


def test_from_inputs_standardises_and_checks_the_width(tmp_path):
    rows, lengths = ragged(6, seed=9)
    path = tmp_path / "d.npz"
    np.savez(path, features=np.concatenate(rows), lengths=lengths, labels=np.arange(6) % 2)
    src = source(path, val_path=str(path))
    item = np.ones((2, F), dtype=np.float32)
    (batch,) = list(src.from_inputs([item])())
    assert torch.allclose(batch.inputs[0], torch.from_numpy((item - src.mean) / src.std))
    with pytest.raises(DataError, match="an input has 2 features; the model reads 3"):
        src.from_inputs([np.ones((2, 2))])


# --- bad input -------------------------------------------------------------------------


def test_a_file_whose_width_differs_from_the_first_names_both(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 3), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((4, 5), np.float32))
    with pytest.raises(DataError) as e:
        source(tmp_path, label_kind=None)
    msg = str(e.value)
    assert f"{tmp_path / 'b.npy'}: sequences have 5 features" in msg
    assert f"{tmp_path / 'a.npy'} has 3" in msg


def test_validation_width_differs_from_training(tmp_path):
    np.save(tmp_path / "train.npy", np.zeros((3, 4, 3), np.float32))
    np.save(tmp_path / "val.npy", np.zeros((2, 4, 2), np.float32))
    with pytest.raises(DataError, match=r"val\.npy: sequences have 2 features, but the training data has 3"):
        source(tmp_path / "train.npy", label_kind=None, val_path=str(tmp_path / "val.npy"))


def test_a_labels_file_missing_an_id_names_it(tmp_path):
    for stem in ("s1", "s2", "s3"):
        np.save(tmp_path / f"{stem}.npy", np.ones((2, F), np.float32))
    labels = write_labels(tmp_path / "labels.csv", [("s1", "a"), ("s3", "b")])
    with pytest.raises(DataError) as e:
        source(tmp_path, labels=str(labels))
    msg = str(e.value)
    assert str(labels) in msg and "1 sequence(s)" in msg and "s2" in msg and "'id'" in msg


def test_a_labels_file_without_the_id_column_names_the_record(tmp_path):
    np.save(tmp_path / "d.npy", np.ones((3, 2, F), np.float32))
    labels = write_labels(tmp_path / "labels.csv", [(0, "a")], id_field="key")
    with pytest.raises(DataError, match=rf"{labels}:2: no id field 'id'.*key, label"):
        source(tmp_path / "d.npy", labels=str(labels))


def test_no_labels_anywhere(tmp_path):
    np.save(tmp_path / "d.npy", np.ones((3, 2, F), np.float32))
    with pytest.raises(DataError, match="no labels"):
        source(tmp_path / "d.npy")


def test_tags_of_the_wrong_length_name_the_sequence_and_both_lengths(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, features=np.ones((5, F), np.float32), lengths=np.array([2, 3]),
             labels=np.array([0, 1, 0, 1, 1]))
    labels = tmp_path / "tags.jsonl"
    labels.write_text('{"id": 0, "label": "AB"}\n{"id": 1, "label": "ABAB"}\n')
    with pytest.raises(DataError) as e:
        source(path, label_kind="tags", labels=str(labels), val_path=str(path))
    msg = str(e.value)
    assert f"{path}[1]" in msg and "4 per-position labels" in msg and "3 positions" in msg


def test_lengths_that_do_not_sum_to_the_frames(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, features=np.ones((5, F), np.float32), lengths=np.array([2, 2]))
    with pytest.raises(DataError, match=r"'lengths' sums to 4 but 'features' has 5 rows"):
        source(path, label_kind=None)


def test_an_npz_without_the_features_array_names_what_it_holds(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((5, F)), lengths=np.array([5]))
    with pytest.raises(DataError, match=r"no array 'features'; it holds: .*x"):
        source(path, label_kind=None)


def test_non_finite_features_are_refused(tmp_path):
    data = np.ones((2, 3, F), np.float32)
    data[1, 2, 0] = np.nan
    np.save(tmp_path / "d.npy", data)
    with pytest.raises(DataError, match=r"d\.npy\[1\]: features hold NaN"):
        source(tmp_path / "d.npy", label_kind=None)


class _Trap:
    """Unpickling this runs ``os.mkdir(marker)``: proof that a file was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_pickled_object_arrays_are_refused_and_never_unpickled(tmp_path, suffix):
    marker = tmp_path / "unpickled"
    trap = np.empty(1, dtype=object)
    trap[0] = _Trap(marker)
    path = tmp_path / f"d{suffix}"
    if suffix == ".npy":
        np.save(path, trap, allow_pickle=True)
    else:
        np.savez(path, features=trap, lengths=np.array([1]))
    with pytest.raises(DataError) as e:
        source(path, label_kind=None)
    assert str(path) in str(e.value) and "pickle" in str(e.value)
    assert not marker.exists()
    # the trap is real: loading it with pickle allowed would have run code
    loaded = np.load(path, allow_pickle=True)
    if suffix == ".npz":
        loaded["features"]
    assert marker.exists()


@pytest.mark.parametrize("content", [b"not numpy at all", b"\x80\x04K\x01."])  # text; a pickle
def test_a_file_that_is_not_numpy_is_named(tmp_path, content):
    path = tmp_path / "d.npy"
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"{path}: not a NumPy \.npy or \.npz file"):
        source(path, label_kind=None)


def test_sequence_normalisation_removes_each_recordings_gain_and_offset(tmp_path):
    rng = np.random.default_rng(0)
    base = [rng.normal(size=(n, 2)).astype(np.float32) for n in (5, 9, 7, 6)]
    scaled = [b * rng.uniform(0.1, 10.0, size=2) + rng.normal(size=2) * 50 for b in base]
    for name, rows in (("a", base), ("b", scaled)):
        np.savez(tmp_path / f"{name}.npz", features=np.concatenate(rows).astype(np.float32),
                 lengths=np.array([len(r) for r in rows]), labels=np.arange(4) % 2)
    batches = []
    for name in ("a", "b"):
        src = source(tmp_path / f"{name}.npz", normalize="sequence", val_path=str(tmp_path / f"{name}.npz"))
        batches.append(next(iter(src.eval_sets()["val"]())))
    torch.testing.assert_close(batches[0].inputs, batches[1].inputs, atol=1e-4, rtol=1e-4)
    real = batches[0].inputs[batches[0].padding_mask]
    assert abs(float(real.mean())) < 1e-5
    with pytest.raises(ConfigError, match="data.normalize must be one of dataset, sequence, none"):
        seqlab.RunConfig.from_dict({"task": "classify", "data": {"source": "features", "path": "x",
                                                                 "normalize": "instance"}})
