import csv
import json

import numpy as np
import pytest

from seqlab.datasets import DYNAMICS_CLASSES, write_dynamics, write_dynamics_folders
from seqlab.datasets.dynamics import make_dynamics

SMALL = {"n_train": 48, "n_val": 24, "channels": 2, "min_length": 32, "max_length": 64, "noise": 0.1}


def load(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_npz_layout(tmp_path):
    summary = write_dynamics(tmp_path, **SMALL, n_classes=4, seed=0)
    for split, n in (("train", 48), ("val", 24)):
        z = load(tmp_path / f"{split}.npz")
        assert set(z) == {"features", "lengths", "labels"}
        assert z["features"].dtype == np.float32 and z["features"].shape[1] == 2
        assert z["lengths"].dtype == np.int64 and z["labels"].dtype == np.int64
        assert z["lengths"].shape == z["labels"].shape == (n,)
        assert z["lengths"].sum() == len(z["features"])
        assert 32 <= z["lengths"].min() and z["lengths"].max() <= 64
        assert np.bincount(z["labels"], minlength=4).tolist() == [n // 4] * 4
        assert np.isfinite(z["features"]).all()
        assert summary[split]["steps"] == len(z["features"])
    classes = json.loads((tmp_path / "classes.json").read_text())
    assert list(classes) == ["0", "1", "2", "3"]
    assert [c["name"] for c in classes.values()] == list(DYNAMICS_CLASSES)[:4]


def test_deterministic_for_a_seed(tmp_path):
    write_dynamics(tmp_path / "a", **SMALL, seed=7)
    write_dynamics(tmp_path / "b", **SMALL, seed=7)
    write_dynamics(tmp_path / "c", **SMALL, seed=8)
    for split in ("train.npz", "val.npz"):
        assert (tmp_path / "a" / split).read_bytes() == (tmp_path / "b" / split).read_bytes()
        assert (tmp_path / "a" / split).read_bytes() != (tmp_path / "c" / split).read_bytes()


def test_folder_layout_holds_the_same_sequences(tmp_path):
    write_dynamics(tmp_path / "npz", **SMALL, seed=1)
    write_dynamics_folders(tmp_path / "dir", **SMALL, seed=1)
    z = load(tmp_path / "npz" / "val.npz")
    with open(tmp_path / "dir" / "val" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [f"seq_{i:05d}" for i in range(48, 72)]  # after train's
    with open(tmp_path / "dir" / "labels.csv", newline="") as f:
        assert list(csv.DictReader(f))[48:] == rows  # one file for both splits
    assert [int(r["label"]) for r in rows] == z["labels"].tolist()
    starts = np.concatenate([[0], np.cumsum(z["lengths"])])
    for i, row in enumerate(rows):
        seq = np.load(tmp_path / "dir" / "val" / f"{row['id']}.npy", allow_pickle=False)
        assert seq.dtype == np.float32
        np.testing.assert_array_equal(seq, z["features"][starts[i]:starts[i + 1]])


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_classes"):
        make_dynamics(10, n_classes=len(DYNAMICS_CLASSES) + 1)
    with pytest.raises(ValueError, match="min_length"):
        make_dynamics(10, min_length=100, max_length=50)


def _summary_stats(seqs):
    return np.array([[s.mean(), s.std(), len(s)] for s in seqs])


def _spectra(seqs, bins=12):
    """Per-channel power in equal frequency bins, channels sorted per bin, so that the
    features do not depend on which channel is which."""
    out = []
    for s in seqs:
        x = (s - s.mean(0)) / (s.std(0) + 1e-8)
        power = np.abs(np.fft.rfft(x, axis=0)) ** 2
        which = np.minimum(np.linspace(0, bins, len(power), endpoint=False).astype(int), bins - 1)
        binned = np.stack([power[which == b].sum(0) for b in range(bins)]) / power.sum(0)
        out.append(np.sort(binned, axis=1).ravel())
    return np.array(out)


def _nearest_centroid(features, labels, n_train):
    x = (features - features[:n_train].mean(0)) / (features[:n_train].std(0) + 1e-9)
    centroids = np.stack([x[:n_train][labels[:n_train] == k].mean(0) for k in range(labels.max() + 1)])
    guess = ((x[n_train:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    return (guess == labels[n_train:]).mean()


def test_learnable_from_dynamics_not_from_summary_statistics():
    seqs, labels = make_dynamics(480, channels=3, min_length=64, max_length=192, seed=0)
    trivial = _nearest_centroid(_summary_stats(seqs), labels, 360)
    spectral = _nearest_centroid(_spectra(seqs), labels, 360)
    chance = 1 / len(DYNAMICS_CLASSES)
    assert trivial < chance + 0.12
    assert spectral > trivial + 0.2
