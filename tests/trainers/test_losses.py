"""Losses against naive per-example loops of the formulas, closed forms, and sentence-transformers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from trainers.losses import (
    LossWeights,
    TeacherTargets,
    distillation_loss,
    embedding_loss,
    false_negative_mask,
    matryoshka_prefix,
    nce_loss,
    spread_out_loss,
)


def unit(*shape: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def naive_nce(q, p, n, tau, alpha, queries, positives, groups=None, has_neg=None):
    """The loss of trainers.losses' docstring, one example at a time, in Python floats."""
    b = q.shape[0]
    total = 0.0
    for i in range(b):
        num = math.exp(float(q[i] @ p[i]) / tau)
        den = 0.0
        for j in range(b):
            same = j != i and (
                queries[i] == queries[j]
                or positives[i] == positives[j]
                or (groups is not None and groups[i] is not None and groups[i] == groups[j])
            )
            if not same:
                den += math.exp(float(q[i] @ p[j]) / tau)
        if n is not None and (has_neg is None or has_neg[i]):
            s = float(q[i] @ n[i])
            den += math.exp(alpha * s) * math.exp(s / tau)
        total += -math.log(num / den)
    return total / b


def naive_spread(q, p):
    b = q.shape[0]
    out = 0.0
    for x in (q, p):
        acc = 0.0
        for i in range(b):
            for j in range(b):
                if i != j:
                    acc += float(x[i] @ x[j]) ** 2
        out += acc / (b * (b - 1))
    return out


@pytest.mark.parametrize("alpha", [0.0, 5.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nce_matches_naive_loop_with_masking(alpha, dtype):
    b, d, tau = 6, 8, 0.1
    q, p, n = (
        unit(b, d, seed=1, dtype=dtype),
        unit(b, d, seed=2, dtype=dtype),
        unit(b, d, seed=3, dtype=dtype),
    )
    # Rows 0, 3 and 4 share a query text, rows 1 and 4 a positive text, rows 2 and 5 a label.
    queries = ["a", "b", "c", "a", "a", "f"]
    positives = ["P", "Q", "R", "S", "Q", "U"]
    groups = [None, None, "x", None, None, "x"]
    has_neg = torch.tensor([True, True, False, True, True, True])
    got = nce_loss(
        q,
        p,
        n,
        temperature=tau,
        hardness_alpha=alpha,
        false_negatives=false_negative_mask(queries, positives, groups),
        has_negative=has_neg,
    )
    want = naive_nce(q, p, n, tau, alpha, queries, positives, groups, has_neg.tolist())
    assert got.item() == pytest.approx(want, rel=1e-5 if dtype == torch.float32 else 1e-10)


def test_nce_without_hard_negatives_and_mask_is_plain_infonce():
    q, p = unit(5, 4, seed=4), unit(5, 4, seed=5)
    got = nce_loss(q, p, None, temperature=0.5)
    want = naive_nce(q, p, None, 0.5, 0.0, list("abcde"), list("ABCDE"))
    assert got.item() == pytest.approx(want, rel=1e-10)


def test_masking_changes_the_loss():
    # A mask that removed nothing would make the masked and unmasked losses equal.
    q, p = unit(4, 4, seed=6), unit(4, 4, seed=7)
    plain = nce_loss(q, p, None, temperature=0.1)
    masked = nce_loss(
        q, p, None, temperature=0.1, false_negatives=false_negative_mask(list("aabc"), list("ABCD"))
    )
    assert masked.item() < plain.item()


def test_hardness_weight_carries_no_gradient():
    """d/dn of the loss equals the gradient with w_i frozen as a constant, not with w_i trained."""
    b, d, tau, alpha = 4, 6, 0.2, 5.0
    q, p = unit(b, d, seed=8), unit(b, d, seed=9)
    n = unit(b, d, seed=10).requires_grad_(True)
    nce_loss(q, p, n, temperature=tau, hardness_alpha=alpha).backward()
    got = n.grad.clone()

    def reference(n_var, weight_fn):
        s_pos = q @ p.T / tau
        s_neg = (q * n_var).sum(-1)
        den = torch.exp(s_pos).sum(1) + weight_fn(s_neg) * torch.exp(s_neg / tau)
        return (torch.log(den) - s_pos.diagonal()).mean()

    frozen = n.detach().clone().requires_grad_(True)
    w_const = torch.exp(alpha * (q * n.detach()).sum(-1))  # numbers, no graph
    reference(frozen, lambda s: w_const).backward()
    torch.testing.assert_close(got, frozen.grad, rtol=1e-10, atol=1e-12)

    trained = n.detach().clone().requires_grad_(True)
    reference(trained, lambda s: torch.exp(alpha * s)).backward()
    assert not torch.allclose(got, trained.grad), "the weight must not be differentiated"


def test_nce_equals_sentence_transformers_mnrl():
    """Peer check: MNRL (scale = 1/τ) is the same loss when there are no hard negatives, and,
    with one example per batch, the same hardness weighting (ST's hardness_mode='hard_negatives')."""
    tau, alpha = 0.05, 5.0
    q, p = unit(8, 16, seed=11, dtype=torch.float32), unit(8, 16, seed=12, dtype=torch.float32)
    mnrl = MultipleNegativesRankingLoss(None, scale=1 / tau)
    want = mnrl.compute_loss_from_embeddings([q, p], None)
    assert nce_loss(q, p, temperature=tau).item() == pytest.approx(want.item(), rel=1e-5)

    n = unit(8, 16, seed=13, dtype=torch.float32)
    hard = MultipleNegativesRankingLoss(
        None, scale=1 / tau, hardness_mode="hard_negatives", hardness_strength=alpha
    )
    for i in range(8):
        rows = slice(i, i + 1)
        st = hard.compute_loss_from_embeddings([q[rows], p[rows], n[rows]], None)
        ours = nce_loss(q[rows], p[rows], n[rows], temperature=tau, hardness_alpha=alpha)
        assert ours.item() == pytest.approx(st.item(), rel=1e-5)


def test_false_negative_mask_rules():
    mask = false_negative_mask(["q1", "q1", "q2", "q3"], ["p1", "p2", "p2", "p3"], [None, None, None, None])
    want = torch.tensor(
        [
            [False, True, False, False],  # same query as row 1
            [True, False, True, False],  # same query as row 0, same positive as row 2
            [False, True, False, False],
            [False, False, False, False],
        ]
    )
    assert torch.equal(mask, want)
    by_label = false_negative_mask(list("abcd"), list("ABCD"), ["x", "y", "x", None])
    assert by_label[0, 2] and by_label[2, 0] and not by_label[0, 1] and not by_label[3].any()


def test_spread_out_matches_naive_loop_and_closed_forms():
    q, p = unit(5, 7, seed=14), unit(5, 7, seed=15)
    assert spread_out_loss(q, p).item() == pytest.approx(naive_spread(q, p), rel=1e-10)
    eye = torch.eye(6, dtype=torch.float64)
    assert spread_out_loss(eye, eye).item() == pytest.approx(0.0, abs=1e-12)  # orthogonal
    same = unit(1, 6, seed=16).expand(6, 6)
    assert spread_out_loss(same, same).item() == pytest.approx(2.0, rel=1e-12)  # collapsed: 1 + 1
    assert spread_out_loss(unit(1, 6), unit(1, 6)).item() == 0.0


def test_distillation_is_mean_squared_distance_over_present_rows():
    s, t = unit(4, 5, seed=17), unit(4, 5, seed=18)
    present = torch.tensor([True, False, True, True])
    want = sum(float(((s[i] - t[i]) ** 2).sum()) for i in (0, 2, 3)) / 3
    assert distillation_loss(s, t, present).item() == pytest.approx(want, rel=1e-12)
    assert distillation_loss(s, s).item() == pytest.approx(0.0, abs=1e-14)
    assert distillation_loss(s, t, torch.zeros(4, dtype=torch.bool)).item() == 0.0


def test_matryoshka_prefix_is_truncated_and_renormalised():
    x = unit(3, 8, seed=19)
    got = matryoshka_prefix(x, 3)
    for i in range(3):
        v = x[i, :3]
        want = v / math.sqrt(float((v * v).sum()))
        torch.testing.assert_close(got[i], want)


def test_embedding_loss_sums_each_loss_over_matryoshka_prefixes():
    b, d, dims, tau, alpha = 5, 8, (8, 4, 2), 0.1, 5.0
    q, p, n = unit(b, d, seed=20), unit(b, d, seed=21), unit(b, d, seed=22)
    tq, tp = unit(b, 6, seed=23), unit(b, 6, seed=24)  # a 6-dim teacher: dim 8 gets no distillation
    present = torch.tensor([True, True, False, True, True])
    queries, positives = list("abcde"), list("ABCDE")
    weights = LossWeights(dims=dims, temperature=tau, hardness_alpha=alpha, spread_out=0.3, distill=0.7)
    teacher = TeacherTargets({"query": (tq, present), "positive": (tp, present)})
    got, parts = embedding_loss(q, p, n, weights, teacher=teacher)

    want = 0.0
    want_distill = 0.0
    for m in dims:

        def cut(x, m=m):
            return torch.stack([x[i, :m] / x[i, :m].norm() for i in range(x.shape[0])])

        qm, pm, nm = cut(q), cut(p), cut(n)
        distill = 0.0
        if m <= 6:
            for s, t in ((qm, cut(tq)), (pm, cut(tp))):
                rows = [i for i in range(b) if present[i]]
                distill += sum(float(((s[i] - t[i]) ** 2).sum()) for i in rows) / len(rows)
        want += (
            naive_nce(qm, pm, nm, tau, alpha, queries, positives) + 0.3 * naive_spread(qm, pm) + 0.7 * distill
        )
        want_distill += distill
    assert got.item() == pytest.approx(want, rel=1e-9)
    assert parts["distill"].item() == pytest.approx(want_distill, rel=1e-9)


def test_embedding_loss_forwards_the_mask_the_missing_negatives_and_the_negative_teacher():
    """Each of false_negatives, has_negative and the teacher's "negative" side changes the loss, so the
    naive sum over dims below matches only if embedding_loss passes all three on."""
    b, d, dims, tau, alpha = 6, 8, (8, 4), 0.1, 2.0
    q, p, n = unit(b, d, seed=30), unit(b, d, seed=31), unit(b, d, seed=32)
    tq, tp, tn = unit(b, 8, seed=33), unit(b, 8, seed=34), unit(b, 8, seed=35)
    queries, positives = ["a", "b", "a", "c", "d", "e"], ["A", "B", "C", "D", "B", "F"]
    groups = [None, "x", None, None, None, "x"]
    has_neg = torch.tensor([True, False, True, True, False, True])
    t_present = torch.tensor([True, True, False, True, True, True])
    n_present = torch.tensor([True, False, True, True, False, False])  # no teacher where no negative
    weights = LossWeights(dims=dims, temperature=tau, hardness_alpha=alpha, spread_out=0.0, distill=0.5)
    teacher = TeacherTargets(
        {"query": (tq, t_present), "positive": (tp, t_present), "negative": (tn, n_present)}
    )
    got, parts = embedding_loss(
        q,
        p,
        n,
        weights,
        false_negatives=false_negative_mask(queries, positives, groups),
        has_negative=has_neg,
        teacher=teacher,
    )

    want = want_distill = 0.0
    for m in dims:

        def cut(x, m=m):
            return torch.stack([x[i, :m] / x[i, :m].norm() for i in range(x.shape[0])])

        qm, pm, nm = cut(q), cut(p), cut(n)
        distill = 0.0
        for s, t, present in ((qm, cut(tq), t_present), (pm, cut(tp), t_present), (nm, cut(tn), n_present)):
            rows = [i for i in range(b) if present[i]]
            distill += sum(float(((s[i] - t[i]) ** 2).sum()) for i in rows) / len(rows)
        want += (
            naive_nce(qm, pm, nm, tau, alpha, queries, positives, groups, has_neg.tolist()) + 0.5 * distill
        )
        want_distill += distill
    assert got.item() == pytest.approx(want, rel=1e-10)
    assert parts["distill"].item() == pytest.approx(want_distill, rel=1e-10)


def test_rejects_bad_arguments():
    q = unit(2, 4)
    with pytest.raises(ValueError, match="temperature"):
        nce_loss(q, q, temperature=0.0)
    with pytest.raises(ValueError, match="exceeds"):
        embedding_loss(q, q, None, LossWeights(dims=(8,)))
