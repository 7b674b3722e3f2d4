"""``task_options.reduce`` of the tag objective: eight-state secondary structure scored
as Q8 and, reduced to three classes, as Q3; the mapping checked against the data's tags."""

import pytest
import torch
import torch.nn.functional as F

import seqlab
from seqlab.config import RunConfig
from seqlab.data.batch import IGNORE, Batch
from seqlab.datasets.proteins import write_secondary_structure
from seqlab.errors import ConfigError
from seqlab.models.heads import LossSum
from seqlab.tasks.labelled import reduction
from seqlab.tasks.metrics import ReducedTaggingMetric, sov_terms

NAMES = ["C", "E", "G", "H", "T"]
EIGHT_TO_THREE = {"G": "H", "I": "H", "B": "E", "T": "C", "S": "C"}


def feed(metric, truth: list[str], predicted: list[str], mask=None):
    ids = {n: i for i, n in enumerate(NAMES)}
    targets = torch.tensor([[ids.get(t, IGNORE) for t in row] for row in truth])
    found = torch.tensor([[ids[p] for p in row] for row in predicted])
    logits = F.one_hot(found, len(NAMES)).float() * 3 - 1
    metric.update(LossSum(torch.tensor(0.0), 1.0, logits),
                  Batch(torch.zeros_like(targets), targets, mask))


def metric(segments=True):
    classes, lookup = reduction({"G": "H", "T": "C"}, NAMES)
    return ReducedTaggingMetric(NAMES, classes, lookup, prefix="q3", spans=False,
                                segments=segments)


def test_reduction_orders_classes_as_the_tags():
    classes, lookup = reduction({"G": "H", "T": "C"}, NAMES)
    assert classes == ["C", "E", "H"]
    assert lookup.tolist() == [0, 1, 2, 2, 0]  # C E G->H H T->C


def test_reduced_accuracy_f1_and_segments_by_hand():
    truth, pred = "CTGHHHEEC", "CCHHGHECC"
    m = metric()
    feed(m, [list(truth)], [list(pred)])
    out = m.compute()
    # Q8: right at 0, 3, 5, 6, 8 -> 5/9.
    assert out["accuracy"] == pytest.approx(5 / 9)
    # Q3: CCHHHHEEC against CCHHHHECC, wrong only at 7 -> 8/9.
    assert out["q3_accuracy"] == pytest.approx(8 / 9)
    # per class (tp, predicted, true): C (3, 4, 3) -> 6/7; E (1, 1, 2) -> 2/3; H (4, 4, 4) -> 1
    assert out["q3_f1/C"] == pytest.approx(6 / 7)
    assert out["q3_f1/E"] == pytest.approx(2 / 3)
    assert out["q3_f1/H"] == pytest.approx(1.0)
    assert out["q3_macro_f1"] == pytest.approx((6 / 7 + 2 / 3 + 1) / 3)
    # segments: gold C0-2 H2-6 E6-8 C8-9, found C0-2 H2-6 E6-7 C7-9: 2 of 4 exact.
    assert out["q3_segment_precision"] == out["q3_segment_recall"] == pytest.approx(0.5)
    score, norm = sov_terms(list("CCHHHHEEC"), list("CCHHHHECC"))
    assert out["q3_sov"] == pytest.approx(score / norm)
    assert {"q3_accuracy", "q3_sov", "q3_segment_f1", "q3_macro_f1"} <= set(m.directions)


def test_padding_and_unseen_tags_in_the_reduced_scores():
    m = metric(segments=False)
    mask = torch.tensor([[True, True, False]])
    feed(m, [["X", "G", "C"]], [["H", "H", "T"]], mask)  # X: a tag training never saw
    out = m.compute()
    # X is a miss at both levels; G for H is a miss in Q8, a hit in Q3; C is padding.
    assert out["accuracy"] == 0.0 and out["unseen"] == 1.0
    assert out["q3_accuracy"] == pytest.approx(0.5) and "q3_unseen" not in out
    assert not any(k.startswith("q3_segment") for k in out)


@pytest.mark.parametrize("reduce, message", [
    ({"G": "H", "H": "E"}, "task_options.reduce maps G to H and H on to E"),
    ([["G", "H"]], "task_options.reduce must be"),
])
def test_a_malformed_mapping_fails_at_config_time(reduce, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict({"task": "tag", "task_options": {"reduce": reduce}})


def test_a_mapping_that_names_no_tag_fails_before_training(tmp_path):
    write_secondary_structure(tmp_path, n_train=12, n_val=4, states=8)
    for reduce, message in (({"X": "H"}, "key 'X'"), ({"G": "Q"}, "value 'Q'")):
        with pytest.raises(ConfigError, match=rf"^task_options.reduce {message} is not a tag "
                                              r"of the data; the tags are B, C, E, G, H, I, S, T$"):
            seqlab.fit(config(tmp_path, reduce=reduce), tmp_path / "run")
        assert not (tmp_path / "run").exists()


def config(data, steps=4, **task_options):
    return RunConfig.from_dict({
        "task": "tag", "seed": 0, "tokenizer": {"kind": "protein"},
        "task_options": {"scheme": "segments", **task_options},
        "model": {"mixer": "gru", "d_model": 16, "n_layers": 1, "causal": False,
                  "context_length": 256, "position": "none"},
        "data": {"source": "examples", "path": str(data / "train.fasta"),
                 "val_path": str(data / "val.fasta"), "tags_path": str(data / "ss8.fasta")},
        "train": {"steps": steps, "batch_size": 8, "lr": 1e-2, "warmup_steps": 1,
                  "eval_every": steps, "progress": False, "num_threads": 1,
                  "best_metric": "q3_sov"}})


def test_eight_states_train_and_report_q3(tmp_path):
    write_secondary_structure(tmp_path, n_train=24, n_val=8, states=8)
    run = tmp_path / "run"
    result = seqlab.fit(config(tmp_path, reduce=EIGHT_TO_THREE, reduce_name="q3"), run)
    m = result.metrics
    assert {"accuracy", "sov", "f1/G", "q3_accuracy", "q3_segment_f1", "q3_sov",
            "q3_f1/H", "q3_f1/E", "q3_f1/C"} <= set(m)
    assert not any(k.startswith("q3_f1/") and k[-1] in "GIBTS" for k in m)
    assert m["q3_accuracy"] >= m["accuracy"]  # merging classes only forgives errors
    assert (run / "plots" / "confusion-q3.png").read_bytes()[:4] == b"\x89PNG"
    again = seqlab.load(run).evaluate(tmp_path / "val.fasta")
    assert again["q3_accuracy"] == pytest.approx(m["q3_accuracy"])
