"""Heads: pooling, each loss against an independent torch.nn.functional reference on the
unpadded rows, padding that never counts, exact averaging over micro-batches, tying,
and predictions."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.errors import ConfigError, ShapeError
from seqlab.models.heads import (
    HEADS,
    IGNORE,
    POOLINGS,
    ClassifierHead,
    LMHead,
    MaskedLMHead,
    RegressionHead,
    ScoredHead,
    TaggerHead,
    pool,
)

D = 8


def make_mask(lengths, T, *, left=False):
    """(B, T) bool, True at real positions; right-padded, or left-padded."""
    pos = torch.arange(T)
    n = torch.tensor(lengths).unsqueeze(1)
    return pos >= T - n if left else pos < n


def ref_pool_row(row, how):
    """row: (T_real, D), the real positions of one sequence."""
    if how == "mean":
        return row.mean(0)
    return row[0] if how == "first" else row[-1]


def ref_pool(hidden, mask, how):
    return torch.stack([ref_pool_row(h[m], how) for h, m in zip(hidden, mask)])


def poison(hidden, mask, value):
    """A copy of ``hidden`` with ``value`` at every padded position."""
    return hidden.masked_fill(~mask.unsqueeze(-1), value)


LENGTHS, T_ALL = [5, 2, 4], 6  # a right-padded batch where every row has padding
MASK = make_mask(LENGTHS, T_ALL)


def tag_targets(n_classes, mask):
    """Real class ids everywhere, padded positions included (the head must drop them)."""
    return torch.randint(0, n_classes, mask.shape)


def lm_targets(vocab, mask):
    t = torch.randint(0, vocab, mask.shape)
    t[0, 1] = IGNORE  # an ignored real position as well
    return t.masked_fill(~mask, IGNORE)


# ---------------------------------------------------------------- pooling

@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 7), min_size=1, max_size=4),
       extra=st.integers(0, 2), left=st.booleans(), how=st.sampled_from(POOLINGS),
       seed=st.integers(0, 2**16))
def test_pool_matches_a_per_row_loop(lengths, extra, left, how, seed):
    T = max(lengths) + extra
    hidden = torch.randn(len(lengths), T, D, generator=torch.Generator().manual_seed(seed))
    mask = make_mask(lengths, T, left=left)
    torch.testing.assert_close(pool(hidden, mask, how), ref_pool(hidden, mask, how))


@pytest.mark.parametrize("how", POOLINGS)
def test_pool_without_mask_reads_every_position(how):
    hidden = torch.randn(3, 5, D)
    full = torch.ones(3, 5, dtype=torch.bool)
    torch.testing.assert_close(pool(hidden, None, how), ref_pool(hidden, full, how))


@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("how", POOLINGS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e30])
def test_pool_ignores_whatever_is_stored_at_padding(how, left, value):
    mask = make_mask(LENGTHS, T_ALL, left=left)
    clean = torch.randn(3, T_ALL, D)
    dirty = poison(clean, mask, value).requires_grad_()
    out = pool(dirty, mask, how)
    torch.testing.assert_close(out, pool(clean, mask, how))
    out.sum().backward()
    assert torch.isfinite(dirty.grad).all()
    assert (dirty.grad[~mask] == 0).all()


# ---------------------------------------------------------------- losses vs references

def test_lm_head_matches_cross_entropy_on_unpadded_rows():
    V = 11
    head = LMHead(D, V)
    hidden, targets = torch.randn(3, T_ALL, D), lm_targets(V, MASK)
    out = head.loss(hidden, targets, MASK)
    total, count = 0.0, 0
    for h, t, m in zip(hidden, targets, MASK):
        h, t = h[m], t[m]
        keep = t != IGNORE
        logits = F.linear(h[keep], head.proj.weight)
        total = total + F.cross_entropy(logits, t[keep], reduction="sum")
        count += int(keep.sum())
    torch.testing.assert_close(out.total, total)
    assert int(out.count) == count == sum(LENGTHS) - 1
    torch.testing.assert_close(out.outputs, head(hidden, MASK))  # (B, T, V) logits for metrics


def _mlm_reference(head, rows, targets):
    lin, _, norm = head.transform
    x = F.gelu(F.linear(rows, lin.weight, lin.bias))
    x = F.layer_norm(x, (D,), norm.weight, norm.bias, norm.eps)
    logits = F.linear(x, head.proj.weight, head.bias)
    return F.cross_entropy(logits, targets, reduction="sum")


def test_masked_lm_head_reads_only_masked_positions():
    V = 13
    head = MaskedLMHead(D, V)
    with torch.no_grad():
        head.bias.normal_()  # a non-zero bias, so the reference must add it
    hidden = torch.randn(3, T_ALL, D)
    targets = torch.full((3, T_ALL), IGNORE)
    targets[0, 1], targets[0, 4], targets[2, 0] = 3, 7, 12
    chosen = targets != IGNORE

    seen = []
    handle = head.proj.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    out = head.loss(hidden, targets, MASK)
    handle.remove()
    assert seen == [torch.Size([3, D])]  # the projection ran on N = 3 rows, not B x T

    torch.testing.assert_close(out.total, _mlm_reference(head, hidden[chosen], targets[chosen]))
    assert int(out.count) == 3

    elsewhere = hidden.clone()
    elsewhere[~chosen] = torch.randn(int((~chosen).sum()), D) * 1e6
    elsewhere[~MASK] = float("nan")
    again = head.loss(elsewhere, targets, MASK)
    assert torch.equal(again.total, out.total) and int(again.count) == 3


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("weighted", [False, True])
def test_classifier_head_matches_weighted_cross_entropy(pooling, weighted):
    C = 4
    w = torch.tensor([1.0, 3.0, 0.5, 2.0]) if weighted else None
    head = ClassifierHead(D, C, pooling=pooling, class_weights=w)
    hidden = torch.randn(3, T_ALL, D)
    targets = torch.tensor([2, IGNORE, 1])  # an unseen class counts in no loss
    out = head.loss(hidden, targets, MASK)

    logits = F.linear(ref_pool(hidden, MASK, pooling), head.proj.weight, head.proj.bias)
    keep = targets != IGNORE
    nll = F.cross_entropy(logits[keep], targets[keep], reduction="none")
    weight = w[targets[keep]] if weighted else torch.ones(int(keep.sum()))
    torch.testing.assert_close(out.total, (weight * nll).sum())
    torch.testing.assert_close(torch.as_tensor(out.count, dtype=torch.float32), weight.sum())
    torch.testing.assert_close(out.total / out.count,
                               F.cross_entropy(logits, targets, weight=w, ignore_index=IGNORE))
    torch.testing.assert_close(out.outputs, logits)


@pytest.mark.parametrize("weighted", [False, True])
def test_tagger_head_never_counts_padding_even_with_real_targets(weighted):
    C = 5
    w = torch.tensor([0.2, 1.0, 2.0, 1.5, 3.0]) if weighted else None
    head = TaggerHead(D, C, class_weights=w)
    hidden, targets = torch.randn(3, T_ALL, D), tag_targets(C, MASK)
    targets[1, 0] = IGNORE  # an unseen tag at a real position
    out = head.loss(hidden, targets, MASK)

    keep = MASK & (targets != IGNORE)
    logits = F.linear(hidden[keep], head.proj.weight, head.proj.bias)
    nll = F.cross_entropy(logits, targets[keep], reduction="none")
    weight = w[targets[keep]] if weighted else torch.ones(int(keep.sum()))
    torch.testing.assert_close(out.total, (weight * nll).sum())
    torch.testing.assert_close(torch.as_tensor(out.count, dtype=torch.float32), weight.sum())
    assert out.outputs.shape == (3, T_ALL, C)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("kind", ["mse", "mae"])
def test_regression_head_learns_standardised_targets(pooling, kind):
    K = 2
    head = RegressionHead(D, K, pooling=pooling, loss=kind)
    mean, std = torch.tensor([100.0, -3.0]), torch.tensor([20.0, 0.5])
    head.set_target_stats(mean, std)
    hidden = torch.randn(3, T_ALL, D)
    targets = mean + std * torch.randn(3, K)
    out = head.loss(hidden, targets, MASK)

    standard = F.linear(ref_pool(hidden, MASK, pooling), head.proj.weight, head.proj.bias)
    goal = (targets - mean) / std
    lossfn = F.mse_loss if kind == "mse" else F.l1_loss
    torch.testing.assert_close(out.total, lossfn(standard, goal, reduction="sum"))
    assert out.count == 3 * K
    torch.testing.assert_close(out.outputs, standard * std + mean)  # original units
    torch.testing.assert_close(head(hidden, MASK), standard * std + mean)
    torch.testing.assert_close(head.predict(out.outputs), out.outputs)


def test_regression_target_stats_travel_with_the_weights_and_std_is_floored():
    head = RegressionHead(D, 1)
    head.set_target_stats(torch.tensor([5.0]), torch.tensor([0.0]))
    assert head.target_std.item() > 0
    head.set_target_stats(torch.tensor([5.0]), torch.tensor([2.0]))
    other = RegressionHead(D, 1)
    other.load_state_dict(head.state_dict())
    hidden = torch.randn(2, 4, D)
    torch.testing.assert_close(other(hidden), head(hidden))


def test_regression_head_rejects_targets_of_the_wrong_shape():
    head = RegressionHead(D, 2)
    with pytest.raises(ShapeError, match=r"\(3,\).*\(3, 2\)"):
        head.loss(torch.randn(3, 4, D), torch.randn(3))


def test_scored_head_classifies_only_scored_positions():
    C = 6
    head = ScoredHead(D, C)
    hidden, targets = torch.randn(3, T_ALL, D), torch.randint(0, C, (3, T_ALL))
    scored = torch.zeros(3, T_ALL, dtype=torch.bool)
    scored[0, 4], scored[1, 1], scored[2, 3] = True, True, True
    out = head.loss(hidden, targets, MASK, scored=scored)
    logits = F.linear(hidden[scored], head.proj.weight)
    torch.testing.assert_close(out.total, F.cross_entropy(logits, targets[scored], reduction="sum"))
    assert int(out.count) == 3

    elsewhere = hidden.clone()
    elsewhere[~scored] = float("nan")
    assert torch.equal(head.loss(elsewhere, targets, MASK, scored=scored).total, out.total)
    probs = head.predict(out.outputs)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))


def test_scored_head_regresses_only_scored_positions():
    head = ScoredHead(D, 1, regression=True)
    hidden, targets = torch.randn(2, 5, D), torch.randn(2, 5)
    scored = torch.tensor([[0, 1, 0, 0, 1], [0, 0, 0, 1, 0]], dtype=torch.bool)
    out = head.loss(hidden, targets, None, scored=scored)
    values = F.linear(hidden[scored], head.proj.weight)[:, 0]
    torch.testing.assert_close(out.total, F.mse_loss(values, targets[scored], reduction="sum"))
    assert out.count == 3
    torch.testing.assert_close(head.predict(out.outputs)[:, 0], values)


# ---------------------------------------------------------------- padding never counts

def _heads():
    """(name, head, targets, extras) for every head on the batch MASK describes."""
    torch.manual_seed(1)
    scored = MASK.clone()
    scored[:, 0] = False
    return [
        ("lm", LMHead(D, 7), lm_targets(7, MASK), {}),
        ("masked_lm", MaskedLMHead(D, 7), lm_targets(7, MASK), {}),
        *[(f"classify-{p}", ClassifierHead(D, 3, pooling=p), torch.tensor([0, 2, 1]), {})
          for p in POOLINGS],
        ("classify-weighted", ClassifierHead(D, 3, class_weights=torch.tensor([1.0, 2.0, 3.0])),
         torch.tensor([0, 2, 1]), {}),
        ("tag", TaggerHead(D, 3), tag_targets(3, MASK), {}),
        ("tag-weighted", TaggerHead(D, 3, class_weights=torch.tensor([1.0, 2.0, 3.0])),
         tag_targets(3, MASK), {}),
        ("regress-mse", RegressionHead(D, 2), torch.randn(3, 2), {}),
        ("regress-mae-last", RegressionHead(D, 2, loss="mae", pooling="last"),
         torch.randn(3, 2), {}),
        ("scored", ScoredHead(D, 4), torch.randint(0, 4, MASK.shape), {"scored": scored}),
    ]


HEAD_NAMES = [name for name, *_ in _heads()]


def _head(name):
    return next(h for h in _heads() if h[0] == name)[1:]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e30])
@pytest.mark.parametrize("name", HEAD_NAMES)
def test_padding_never_counts_whatever_is_stored_there(name, value):
    head, targets, extras = _head(name)
    clean = torch.randn(3, T_ALL, D)
    base = head.loss(clean, targets, MASK, **extras)
    dirty = poison(clean, MASK, value)
    out = head.loss(dirty, targets, MASK, **extras)
    torch.testing.assert_close(out.total, base.total)
    assert float(out.count) == float(base.count)


# Heads whose gradients (to the hidden states and the weights) stay finite whatever the
# padding holds. LMHead is not among them: its projection runs on all B x T positions,
# so a NaN stored at padding reaches the weight gradient through hidden^T @ grad_logits
# (its loss value is unaffected); a backbone zeroes padded positions, so that case
# does not arise in a SequenceModel.
GRADIENT_SAFE = [n for n in HEAD_NAMES if n != "lm"]


@pytest.mark.parametrize("name", GRADIENT_SAFE)
def test_padding_never_reaches_the_gradients(name):
    head, targets, extras = _head(name)
    dirty = poison(torch.randn(3, T_ALL, D), MASK, float("nan")).requires_grad_()
    out = head.loss(dirty, targets, MASK, **extras)
    out.total.backward()
    assert torch.isfinite(dirty.grad).all() and (dirty.grad[~MASK] == 0).all()
    for p in head.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


# ---------------------------------------------------------------- exact micro-batch averaging

@pytest.mark.parametrize("name", HEAD_NAMES)
def test_sum_and_count_average_exactly_over_micro_batches(name):
    head, targets, extras = _head(name)
    hidden = torch.randn(3, T_ALL, D)

    whole = head.loss(hidden, targets, MASK, **extras)
    (whole.total / whole.count).backward()
    expected = {n: p.grad.clone() for n, p in head.named_parameters() if p.grad is not None}
    head.zero_grad(set_to_none=True)

    # rows [0] and [1, 2], each trimmed to its own longest row: 0 and 1 padded positions
    totals, counts = [], []
    for rows in ([0], [1, 2]):
        T = max(LENGTHS[i] for i in rows)
        part = {k: v[rows, :T] for k, v in extras.items()}
        t = targets[rows, :T] if targets.shape == MASK.shape else targets[rows]
        out = head.loss(hidden[rows, :T], t, MASK[rows, :T], **part)
        totals.append(out.total)
        counts.append(float(out.count))
    (sum(totals) / sum(counts)).backward()

    torch.testing.assert_close(sum(totals) / sum(counts), whole.total / whole.count)
    got = {n: p.grad for n, p in head.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for n, grad in expected.items():
        torch.testing.assert_close(got[n], grad, msg=lambda m, n=n: f"{n}: {m}")


# ---------------------------------------------------------------- tying, predict, config

@pytest.mark.parametrize("cls", [LMHead, MaskedLMHead, ScoredHead])
def test_tied_heads_share_the_embedding_weight(cls):
    emb = torch.nn.Embedding(9, D)
    head = cls(D, 9, tie_to=emb)
    assert head.proj.weight is emb.weight
    with torch.no_grad():
        emb.weight.add_(1.0)
    assert torch.equal(head.proj.weight, emb.weight)
    with pytest.raises(ConfigError, match=r"\(9 x 8\).*\(9, 4\)"):
        cls(D, 9, tie_to=torch.nn.Embedding(9, 4))


def test_predict_gives_probabilities_that_sum_to_one():
    hidden = torch.randn(3, T_ALL, D)
    for head in (LMHead(D, 7), TaggerHead(D, 3), ClassifierHead(D, 4), MaskedLMHead(D, 5)):
        probs = head.predict(head(hidden, MASK))
        assert (probs >= 0).all()
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))


def test_bad_head_options_raise_config_errors():
    with pytest.raises(ConfigError, match="pooling must be one of"):
        ClassifierHead(D, 2, pooling="max")
    with pytest.raises(ConfigError, match="pooling must be one of"):
        RegressionHead(D, 2, pooling="max")
    with pytest.raises(ConfigError, match="regression loss must be one of"):
        RegressionHead(D, 2, loss="huber")


def test_registry_names_every_head():
    assert {HEADS.get(k) for k in ("lm", "masked_lm", "classify", "tag", "regress", "scored")} == {
        LMHead, MaskedLMHead, ClassifierHead, TaggerHead, RegressionHead, ScoredHead}
