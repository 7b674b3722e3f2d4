"""Multivariate sequence classification: which family of dynamical system made this?

A demo and benchmark task for sequence classifiers whose answer lies in the dynamics
(frequencies, couplings, waveform shape, burstiness), not in anything a summary
statistic gives away: every sequence has a random length drawn independently of its
class, and each channel is standardised and then given a random gain and offset from
the same distribution for every class, so mean, standard deviation and length carry no
class information. Each sample draws its own parameters within its family's range,
its own initial state (phase) and its own noise.

Nonlinear systems are integrated with a plain fixed-step RK4 in numpy, vectorised over
the samples of a class; linear ones are solved exactly. A full build takes seconds and
is bit-identical for a seed.
"""

from __future__ import annotations

import io
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np

from seqlab.io import atomic_write

__all__ = ["DYNAMICS_CLASSES", "make_dynamics", "write_dynamics", "write_dynamics_folders"]

#: Class index order: name -> description. ``n_classes`` uses the first ones.
DYNAMICS_CLASSES: dict[str, str] = {
    "uncoupled": "independent harmonic oscillators, one random frequency per channel",
    "coupled": "a chain of harmonic oscillators joined by springs: every channel carries "
               "the same normal-mode frequencies",
    "van_der_pol": "Van der Pol relaxation oscillator (mu 1..4), position and velocity "
                   "mixed into the channels",
    "lorenz": "Lorenz chaotic system (rho 24..40), x, y and z mixed into the channels",
    "ar2": "independent resonant AR(2) processes (pole radius 0.90..0.99), one per channel",
    "kicked": "independent damped oscillators kicked at random (Poisson) times: bursts of "
              "ringing that die away",
}

_F_LOW, _F_HIGH = 0.02, 0.10  # fundamental frequencies, cycles per sample, every class
_BURN_IN = 100  # samples simulated and thrown away (transients, landing on the attractor)

Deriv = Callable[[np.ndarray], np.ndarray]


def _rk4(deriv: Deriv, y: np.ndarray, h: np.ndarray, n_samples: int, substeps: int) -> np.ndarray:
    """Fixed-step RK4 from ``y`` (B, d), ``substeps`` steps of ``h`` (B, 1) per sample.

    Returns:
        (B, n_samples, d): the state after each sample's substeps.
    """
    out = np.empty((y.shape[0], n_samples, y.shape[1]))
    for t in range(n_samples):
        for _ in range(substeps):
            k1 = deriv(y)
            k2 = deriv(y + 0.5 * h * k1)
            k3 = deriv(y + 0.5 * h * k2)
            k4 = deriv(y + h * k3)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out[:, t] = y
    return out


def _freqs(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.uniform(_F_LOW, _F_HIGH, shape)


def _mix(rng: np.random.Generator, states: np.ndarray, channels: int) -> np.ndarray:
    """Project (B, T, d) states to (B, T, channels) with a random matrix per sample."""
    w = rng.normal(size=(states.shape[0], states.shape[2], channels))
    return np.einsum("btd,bdc->btc", states, w)  # (B, T, C)


def _uncoupled(rng: np.random.Generator, b: int, t: int, c: int) -> np.ndarray:
    f, phase = _freqs(rng, b, 1, c), rng.uniform(0, 2 * np.pi, (b, 1, c))
    return np.sin(2 * np.pi * f * np.arange(t)[None, :, None] + phase)  # (B, T, C)


def _coupled(rng: np.random.Generator, b: int, t: int, c: int) -> np.ndarray:
    """Solved exactly by normal modes: x'' = -K x with K = diag(omega^2) + kappa L,
    L the Laplacian of a chain with free ends (symmetric, so K = V diag(lam) V^T)."""
    n = max(c, 2)  # with one channel, a hidden second oscillator still couples in
    omega2 = (2 * np.pi * _freqs(rng, b, n)) ** 2
    kappa = rng.uniform(0.3, 1.0, (b, 1, 1)) * omega2.mean(1)[:, None, None]
    chain = np.diag(np.r_[1.0, np.full(n - 2, 2.0), 1.0]) - np.eye(n, k=1) - np.eye(n, k=-1)
    lam, v = np.linalg.eigh(omega2[:, :, None] * np.eye(n) + kappa * chain)  # (B, n), (B, n, n)
    amp, phase = rng.normal(size=(b, 1, n)), rng.uniform(0, 2 * np.pi, (b, 1, n))
    modes = amp * np.cos(np.sqrt(lam)[:, None] * np.arange(t)[None, :, None] + phase)  # (B, T, n)
    return np.einsum("btj,bij->bti", modes, v)[:, :, :c]


# Van der Pol limit-cycle period (time units) at mu = 1, 2, 3, 4, to place its
# fundamental in the shared frequency band.
_VDP_MU = np.array([1.0, 2.0, 3.0, 4.0])
_VDP_PERIOD = np.array([6.663, 7.630, 8.857, 10.204])


def _van_der_pol(rng: np.random.Generator, b: int, t: int, c: int) -> np.ndarray:
    mu = rng.uniform(1.0, 4.0, (b, 1))
    per_sample = np.interp(mu, _VDP_MU, _VDP_PERIOD) * _freqs(rng, b, 1)  # time per sample

    def deriv(y: np.ndarray) -> np.ndarray:
        x, v = y[:, :1], y[:, 1:]
        return np.concatenate([v, mu * (1 - x * x) * v - x], 1)

    y0 = rng.uniform(-2, 2, (b, 2))
    states = _rk4(deriv, y0, per_sample / 16, t, 16)
    return _mix(rng, states, c)


def _lorenz(rng: np.random.Generator, b: int, t: int, c: int) -> np.ndarray:
    rho = rng.uniform(24.0, 40.0, (b, 1))
    per_sample = _freqs(rng, b, 1) / 1.3  # the lobes turn about 1.3 times per time unit

    def deriv(y: np.ndarray) -> np.ndarray:
        x, v, z = y[:, :1], y[:, 1:2], y[:, 2:]
        return np.concatenate([10.0 * (v - x), x * (rho - z) - v, x * v - 8 / 3 * z], 1)

    y0 = rng.normal(size=(b, 3)) * 5 + np.array([0.0, 0.0, 25.0])
    states = _rk4(deriv, y0, per_sample / 5, t, 5)
    return _mix(rng, states, c)


def _ar2(rng: np.random.Generator, b: int, t: int, c: int) -> np.ndarray:
    r, f = rng.uniform(0.90, 0.99, (b, c)), _freqs(rng, b, c)
    a1, a2 = 2 * r * np.cos(2 * np.pi * f), -r * r
    eps = rng.normal(size=(b, t, c))
    x = np.zeros((b, t, c))
    for i in range(2, t):
        x[:, i] = a1 * x[:, i - 1] + a2 * x[:, i - 2] + eps[:, i]
    return x


def _kicked(rng: np.random.Generator, b: int, t: int, c: int) -> np.ndarray:
    omega = 2 * np.pi * _freqs(rng, b, c)
    zeta = rng.uniform(0.02, 0.08, (b, c))
    rate = rng.uniform(1 / 60, 1 / 25, (b, 1, c))  # kicks per sample
    kicks = (rng.random((b, t, c)) < rate) * rng.normal(size=(b, t, c)) * omega[:, None]
    # One sample of the damped oscillator, exactly: rotate-and-shrink the (x, v) phase.
    wd = omega * np.sqrt(1 - zeta ** 2)
    decay, cos, sin = np.exp(-zeta * omega), np.cos(wd), np.sin(wd)
    x, v = np.zeros((b, c)), np.zeros((b, c))
    out = np.empty((b, t, c))
    for i in range(t):
        v = v + kicks[:, i]
        x, v = (decay * (x * (cos + zeta * omega / wd * sin) + v / wd * sin),
                decay * (v * (cos - zeta * omega / wd * sin) - x * omega ** 2 / wd * sin))
        out[:, i] = x
    return out


_SIMULATORS = [_uncoupled, _coupled, _van_der_pol, _lorenz, _ar2, _kicked]


def make_dynamics(n: int, *, channels: int = 3, min_length: int = 64, max_length: int = 256,
                  n_classes: int = 6, noise: float = 0.1,
                  seed: int | np.random.SeedSequence = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Draw ``n`` labelled sequences (classes as balanced as ``n`` allows, random order).

    Args:
        n: number of sequences.
        channels: channels per time step.
        min_length, max_length: each length is uniform in this closed range.
        n_classes: use the first ``n_classes`` of :data:`DYNAMICS_CLASSES`.
        noise: standard deviation of the Gaussian noise added to each standardised channel.
        seed: seeds everything.

    Returns:
        ``(sequences, labels)``: float32 arrays of shape (T_i, channels), and int64 (n,).
    """
    if not 2 <= n_classes <= len(_SIMULATORS):
        raise ValueError(f"n_classes must be in [2, {len(_SIMULATORS)}], got {n_classes}")
    if n < 1 or channels < 1 or not 8 <= min_length <= max_length or noise < 0:
        raise ValueError(f"need n >= 1, channels >= 1, 8 <= min_length <= max_length and "
                         f"noise >= 0; got n={n}, channels={channels}, min_length={min_length}, "
                         f"max_length={max_length}, noise={noise}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % n_classes).astype(np.int64)
    lengths = rng.integers(min_length, max_length + 1, n)
    sequences: list[np.ndarray] = [np.empty(0)] * n
    for k in range(n_classes):
        idx = np.flatnonzero(labels == k)
        if not len(idx):
            continue
        raw = _SIMULATORS[k](rng, len(idx), _BURN_IN + int(lengths[idx].max()), channels)
        for row, i in enumerate(idx):
            x = raw[row, _BURN_IN:_BURN_IN + lengths[i]]  # (T, C)
            x = (x - x.mean(0)) / (x.std(0) + 1e-8)
            x = x + noise * rng.normal(size=x.shape)
            gain = np.exp(rng.normal(0.0, 0.5, channels))
            sequences[i] = (gain * x + rng.normal(0.0, 1.0, channels)).astype(np.float32)
    return sequences, labels


def _splits(n_train: int, n_val: int, seed: int, **options) -> dict:
    train_seed, val_seed = np.random.SeedSequence(seed).spawn(2)
    return {"train": make_dynamics(n_train, seed=train_seed, **options),
            "val": make_dynamics(n_val, seed=val_seed, **options)}


def _write_meta(out: Path, splits: dict, layout: str, seed: int, options: dict) -> dict:
    n_classes = options["n_classes"]
    names = list(DYNAMICS_CLASSES)[:n_classes]
    classes = {str(k): {"name": name, "description": DYNAMICS_CLASSES[name]}
               for k, name in enumerate(names)}
    atomic_write(out / "classes.json", json.dumps(classes, indent=2) + "\n")
    summary = {"task": "dynamics", "layout": layout, "python": platform.python_version(),
               "numpy": np.__version__, "seed": seed, **options, "classes": names}
    for split, (seqs, labels) in splits.items():
        lengths = np.array([len(s) for s in seqs])
        summary[split] = {"sequences": len(seqs), "steps": int(lengths.sum()),
                          "min_length": int(lengths.min()), "max_length": int(lengths.max()),
                          "per_class": {names[k]: int((labels == k).sum()) for k in range(n_classes)}}
    atomic_write(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def write_dynamics(out_dir: str | os.PathLike, *, n_train: int = 1200, n_val: int = 300,
                   channels: int = 3, min_length: int = 64, max_length: int = 256,
                   n_classes: int = 6, noise: float = 0.1, seed: int = 0) -> dict:
    """Write the dynamics classification set as ``train.npz`` and ``val.npz``.

    Each ``.npz`` (plain ``np.savez``, no pickled objects, loads with
    ``allow_pickle=False``) holds ``features`` float32 (sum of lengths, channels), every
    sequence concatenated along time; ``lengths`` int64 (N,); ``labels`` int64 (N,).
    Sequence ``i`` is ``features[lengths[:i].sum():lengths[:i + 1].sum()]``. Beside
    them: ``classes.json`` (``{"0": {"name", "description"}, ...}``) and
    ``summary.json``. Train and validation come from independent seed streams, so the
    validation set does not change with ``n_train``.

    Args:
        out_dir: folder to write in.
        n_train, n_val: sequences per split.
        channels, min_length, max_length, n_classes, noise: as for :func:`make_dynamics`.
        seed: seeds everything; the same seed gives bit-identical files.

    Returns:
        The summary also written to ``summary.json``.
    """
    options = {"channels": channels, "min_length": min_length, "max_length": max_length,
               "n_classes": n_classes, "noise": noise}
    splits = _splits(n_train, n_val, seed, **options)
    out = Path(out_dir)
    for split, (seqs, labels) in splits.items():
        buf = io.BytesIO()
        np.savez(buf, features=np.concatenate(seqs, 0),
                 lengths=np.array([len(s) for s in seqs], dtype=np.int64), labels=labels)
        atomic_write(out / f"{split}.npz", buf.getvalue())
    return _write_meta(out, splits, "npz", seed, options)


def write_dynamics_folders(out_dir: str | os.PathLike, *, n_train: int = 1200, n_val: int = 300,
                           channels: int = 3, min_length: int = 64, max_length: int = 256,
                           n_classes: int = 6, noise: float = 0.1, seed: int = 0) -> dict:
    """Write the same sequences as :func:`write_dynamics`, one ``.npy`` file each.

    Layout: ``out_dir/train/seq_00000.npy`` (float32, shape (T, channels)) and so on,
    with ``labels.csv`` beside the files (header ``id,label``; ``id`` is the file stem,
    ``label`` the class index); the same under ``val/``, whose numbering continues
    where training's stops, so that ids are unique across splits and one
    ``out_dir/labels.csv`` (every id of both splits) serves a reader that takes a single
    labels file for training and validation. Plus ``classes.json`` and ``summary.json``
    in ``out_dir``. The same arguments give the same sequences, in the same order, as
    the ``.npz`` layout.

    Returns:
        The summary also written to ``summary.json``.
    """
    options = {"channels": channels, "min_length": min_length, "max_length": max_length,
               "n_classes": n_classes, "noise": noise}
    splits = _splits(n_train, n_val, seed, **options)
    out = Path(out_dir)
    width = max(5, len(str(n_train + n_val - 1)))
    first, every = 0, ["id,label"]
    for split, (seqs, labels) in splits.items():
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        rows = ["id,label"]
        for i, (seq, label) in enumerate(zip(seqs, labels), start=first):
            stem = f"seq_{i:0{width}d}"
            np.save(folder / f"{stem}.npy", seq, allow_pickle=False)
            rows.append(f"{stem},{int(label)}")
        atomic_write(folder / "labels.csv", "\n".join(rows) + "\n")
        every += rows[1:]
        first += len(seqs)
    atomic_write(out / "labels.csv", "\n".join(every) + "\n")
    return _write_meta(out, splits, "npy_folders", seed, options)
