"""Baselines of ``bench_objectives.py``, scored with the seqlab metrics' own definitions.

Accuracy is the share of items right; macro-F1 is the mean F1 over the labels that
occur in the truth or in the predictions (scikit-learn's ``average="macro"``, as
seqlab's ``tag`` and ``classify`` metrics). Each baseline returns a row like a seqlab
run's: ``metrics``, ``params`` (what it fits), ``fit_s`` and a ``model`` description.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def scores(truth: list, predicted: list) -> dict:
    labels = sorted(set(truth) | set(predicted))
    per = f1_score(truth, predicted, labels=labels, average=None, zero_division=0)
    return {"accuracy": float(accuracy_score(truth, predicted)),
            "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
            **{f"f1/{label}": float(v) for label, v in zip(labels, per)}}


# -- tagging -----------------------------------------------------------------------------

def tag_majority(workdir: Path, *, context: int = 0) -> dict:
    """Each byte's tag is the one most frequent for that byte value in training
    (``context=1``: for the pair (previous byte, byte), backing off to the byte alone);
    a byte never seen in training gets the most frequent tag overall."""
    start = time.perf_counter()
    train, val = (_jsonl(workdir / "tag" / f"{s}.jsonl") for s in ("train", "val"))
    by_key: dict[str, Counter] = defaultdict(Counter)
    by_byte: dict[str, Counter] = defaultdict(Counter)
    overall: Counter = Counter()
    for r in train:
        text, tags = r["text"], r["tags"]
        for i, (c, t) in enumerate(zip(text, tags)):
            by_byte[c][t] += 1
            if context:
                by_key[text[max(0, i - context):i + 1]][t] += 1
        overall.update(tags)
    top = {k: c.most_common(1)[0][0] for k, c in by_byte.items()}
    top_key = {k: c.most_common(1)[0][0] for k, c in by_key.items()}
    default = overall.most_common(1)[0][0]
    truth, predicted = [], []
    for r in val:
        text = r["text"]
        for i, c in enumerate(text):
            guess = top_key.get(text[max(0, i - context):i + 1]) if context else None
            predicted.append(guess or top.get(c, default))
        truth += list(r["tags"])
    fit_s = time.perf_counter() - start
    what = "(previous byte, byte) pair" if context else "byte value"
    entries = len(top_key) if context else len(top)
    return {"metrics": scores(truth, predicted), "params": entries, "fit_s": fit_s,
            "model": f"most frequent training tag per {what} ({entries} entries)",
            "items": len(truth)}


# -- classification of snippets ------------------------------------------------------------

def tfidf_logreg(workdir: Path, *, ngrams: tuple[int, int] = (1, 4), C: float = 10.0) -> dict:
    """TF-IDF of character n-grams (sublinear tf, seen in at least two training
    snippets) and multinomial logistic regression with balanced class weights, the
    same weighting as the seqlab runs; C fixed beforehand, not tuned on validation."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    train, val = (_jsonl(workdir / "classify" / f"{s}.jsonl") for s in ("train", "val"))
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=tuple(ngrams), sublinear_tf=True,
                                 min_df=2, lowercase=False, dtype=np.float32)
    x_train = vectorizer.fit_transform([r["text"] for r in train])
    model = LogisticRegression(C=C, max_iter=3000, class_weight="balanced")
    model.fit(x_train, [r["label"] for r in train])
    predicted = model.predict(vectorizer.transform([r["text"] for r in val])).tolist()
    fit_s = time.perf_counter() - start
    return {"metrics": scores([r["label"] for r in val], predicted),
            "params": int(model.coef_.size + model.intercept_.size), "fit_s": fit_s,
            "model": f"TF-IDF char {ngrams[0]}-{ngrams[1]}-grams ({x_train.shape[1]} features) "
                     f"+ logistic regression (C={C:g}, balanced)",
            "items": len(val)}


# -- dynamics ----------------------------------------------------------------------------------

BAND_EDGES = np.geomspace(0.005, 0.5, 13)  # 12 bands, cycles per sample


def _sequences(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    data = np.load(path, allow_pickle=False)
    ends = np.cumsum(data["lengths"])
    return np.split(data["features"], ends[:-1]), data["labels"]


def _summary(x: np.ndarray, spectral: bool) -> np.ndarray:
    """Per channel mean and std, the length; with ``spectral``, per channel the log of
    the share of power (after removing the mean) in each of 12 log-spaced bands."""
    parts = [x.mean(0), x.std(0), [len(x)]]
    if spectral:
        z = (x - x.mean(0)) / (x.std(0) + 1e-8)
        power = np.abs(np.fft.rfft(z, axis=0)) ** 2  # (F, C)
        freqs = np.fft.rfftfreq(len(x))
        bands = np.stack([power[(freqs >= a) & (freqs < b)].sum(0)
                          for a, b in zip(BAND_EDGES[:-1], BAND_EDGES[1:])])  # (12, C)
        parts.append(np.log(bands / power[1:].sum(0) + 1e-6).ravel())
    return np.concatenate([np.ravel(p) for p in parts])


def dynamics_logreg(workdir: Path, *, spectral: bool = True, C: float = 1.0) -> dict:
    """Standardised summary features of each whole sequence + logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    (xs, y), (vs, vy) = (_sequences(workdir / "features" / f"{s}.npz") for s in ("train", "val"))
    features = np.stack([_summary(x, spectral) for x in xs])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))
    model.fit(features, y)
    predicted = model.predict(np.stack([_summary(x, spectral) for x in vs]))
    fit_s = time.perf_counter() - start
    names = json.loads((workdir / "features" / "classes.json").read_text())
    label = {int(k): v["name"] for k, v in names.items()}
    what = ("mean, std per channel, length, log share of power in 12 FFT bands per channel"
            if spectral else "mean, std per channel and length")
    return {"metrics": scores([label[int(v)] for v in vy], [label[int(p)] for p in predicted]),
            "params": int(features.shape[1] * len(label) + len(label)), "fit_s": fit_s,
            "model": f"{what} ({features.shape[1]} features) + logistic regression (C={C:g})",
            "items": len(vy)}


# -- masked LM -------------------------------------------------------------------------------

def mlm_unigram(workdir: Path, *, run) -> dict:
    """Scored on the positions the run's own evaluation masked (its masks are a pure
    function of the seed and the batch): always the most frequent byte of the training
    text; and, as a stronger reference, the most frequent byte between the two bytes
    around it, read from the masked input as the model sees it (backing off to the
    most frequent byte when a neighbour is masked, missing or the pair unseen)."""
    import torch

    from seqlab.data.batch import IGNORE

    start = time.perf_counter()
    objective, tok = run.objective, run.tokenizer
    source = objective.source
    source.load(tok, source.fitted())  # what run.evaluate() read: the same token streams
    train = source.train_tokens.numpy().astype(np.int64)
    V = tok.vocab_size
    top = int(np.bincount(train, minlength=V).argmax())
    triples = (train[:-2] * V + train[2:]) * V + train[1:-1]  # (left, right) -> centre
    counts = np.bincount(triples, minlength=V ** 3).reshape(V * V, V)
    seen = counts.sum(1) > 0
    best = np.where(seen, counts.argmax(1), top)
    hits = {"unigram": 0, "neighbours": 0}
    chosen = real = 0
    for i, batch in enumerate(source.eval_sets()["val"]()):
        batch = objective.transform(batch, key=(1, i))  # exactly what evaluation scores
        inputs, targets = batch.inputs, batch.targets
        where = (targets != IGNORE).nonzero()
        b, t = where[:, 0], where[:, 1]
        wanted = targets[b, t]
        left = torch.where(t > 0, inputs[b, (t - 1).clamp(min=0)], -1)
        right = torch.where(t < inputs.shape[1] - 1, inputs[b, (t + 1).clamp(max=inputs.shape[1] - 1)], -1)
        usable = (left >= 0) & (right >= 0) & (left != tok.mask_id) & (right != tok.mask_id)
        guess = torch.full_like(wanted, top)
        pair = (left * V + right)[usable].numpy()
        guess[usable] = torch.from_numpy(best[pair])
        hits["unigram"] += int((wanted == top).sum())
        hits["neighbours"] += int((wanted == guess).sum())
        chosen += int(wanted.numel())
        real += int(inputs.numel())
    return {"baseline": {"most_frequent_byte": tok.decode([top]), "masked_positions": chosen,
                         "val_tokens_scored": real,
                         "unigram_masked_accuracy": hits["unigram"] / max(chosen, 1),
                         "neighbours_masked_accuracy": hits["neighbours"] / max(chosen, 1),
                         "train_tokens": int(len(train)), "baseline_s": time.perf_counter() - start}}


BASELINES = {"tag_majority": tag_majority, "tfidf_logreg": tfidf_logreg,
             "dynamics_logreg": dynamics_logreg, "mlm_unigram": mlm_unigram}
