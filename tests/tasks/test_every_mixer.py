"""Every objective with every mixer that runs the mode it needs, on token and on feature
inputs: a padded batch trains one step (finite loss and gradients) and the head's
outputs for each example equal those of the example run alone (padding changes nothing)."""

import json

import numpy as np
import pytest
import torch

from seqlab.config import RunConfig
from seqlab.nn import MIXERS
from seqlab.tasks import OBJECTIVES

SMALL = {"window_attention": {"window": 4}, "linear_attention": {"chunk_size": 4},
         "sparse_attention": {"window": 4}, "segment_memory": {"segment": 4, "compressed_slots": 2},
         "mamba": {"chunk_size": 8, "d_state": 4}}
USES_POSITIONS = {n for n in MIXERS if MIXERS.get(n).uses_positions}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("every")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        n = int(rng.integers(3, 12))
        text = "".join(rng.choice(list("abcxyz"), n))
        rows.append({"text": text, "label": "ab"[i % 2], "tags": text.replace("x", "X"),
                     "value": float(text.count("a"))})
    (folder / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lengths = rng.integers(3, 12, 24)
    feats = rng.normal(size=(int(lengths.sum()), 2)).astype(np.float32)
    np.savez(folder / "f.npz", features=feats, lengths=lengths, labels=np.arange(24) % 3)
    np.savez(folder / "tags.npz", features=feats, lengths=lengths, labels=(feats[:, 0] > 0).astype(int))
    np.savez(folder / "values.npz", features=feats, lengths=lengths, labels=rng.normal(size=(24, 2)))
    return folder


def cases():
    for task in ("classify", "tag", "regress", "masked_lm"):
        modes = OBJECTIVES.get(task).modes
        for name in MIXERS:
            for causal in (True, False):
                if ("causal" if causal else "bidirectional") in modes and MIXERS.get(name).supports(causal):
                    for source in ("examples", "features"):
                        if task == "masked_lm" and source == "features":
                            continue
                        if task in ("tag", "regress") and source == "features" and name != "gru":
                            continue  # features reach every head through the same adapter
                        yield task, name, causal, source


def build(task, name, causal, source, files):
    options = {name: SMALL[name]} if name in SMALL else {}
    label = {"tag": "tags", "regress": "value"}.get(task, "label")
    if source == "examples":
        data = {"source": "examples", "path": str(files / "t.jsonl"), "label_field": label}
        if task == "masked_lm":
            data.pop("label_field")
    else:
        file = {"tag": "tags.npz", "regress": "values.npz"}.get(task, "f.npz")
        data = {"source": "features", "path": str(files / file)}
    config = RunConfig.from_dict({
        "task": task, "data": data, "seed": 0,
        "model": {"mixer": name, "d_model": 16, "n_layers": 1, "n_heads": 2, "causal": causal,
                  "position": "rope" if name in USES_POSITIONS else "none",
                  "context_length": 16, "mixer_options": options},
        "train": {"batch_size": 6, "progress": False}})
    objective = OBJECTIVES.get(task).cls(config)
    objective.prepare(None)
    return objective


@pytest.mark.parametrize("task, name, causal, source", list(cases()))
def test_objective_runs_with_mixer(task, name, causal, source, files):
    objective = build(task, name, causal, source, files)
    model = objective.build_model()
    batch = objective.train_batch(0, 0)
    assert batch.padding_mask is not None  # lengths differ in this batch
    result = objective.loss(model, batch)
    assert torch.isfinite(result.total) and float(result.count) > 0
    result.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if task == "masked_lm":
        return
    model.eval()
    with torch.no_grad():
        out = model(batch.inputs, padding_mask=batch.padding_mask).logits
        for i in range(batch.size):
            n = int(batch.padding_mask[i].sum())
            alone = model(batch.inputs[i:i + 1, :n]).logits
            got = out[i, :n] if task == "tag" else out[i]
            want = alone[0, :n] if task == "tag" else alone[0]
            torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
