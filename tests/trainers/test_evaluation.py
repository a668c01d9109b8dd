"""Dev metrics against naive loops, scipy and scikit-learn; the objective; metric keys."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from sklearn.metrics import ndcg_score

from mixopt.config import TaskConfig
from trainers.evaluation import average_ranks, evaluate_tasks, ndcg_mrr_at_k, recall_at_k, spearman


def naive_ndcg_mrr(scores, relevant, k=10):
    ndcgs, mrrs = [], []
    for i, rel in enumerate(relevant):
        order = sorted(range(len(scores[i])), key=lambda j: -scores[i][j])[:k]
        dcg = sum(1 / math.log2(r + 2) for r, d in enumerate(order) if d in rel)
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(rel), k)))
        ndcgs.append(dcg / idcg)
        first = next((r for r, d in enumerate(order) if d in rel), None)
        mrrs.append(0.0 if first is None else 1 / (first + 1))
    return sum(ndcgs) / len(ndcgs), sum(mrrs) / len(mrrs)


def test_ndcg_and_mrr_match_a_naive_loop_and_scikit_learn():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(
        7, 30, generator=g, dtype=torch.float64
    )  # distinct scores: no tie handling differences
    relevant = [{0}, {3, 4}, {29}, {1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13}, {15}, {20, 21}, {7}]
    ndcg, mrr = ndcg_mrr_at_k(scores, relevant)
    want_ndcg, want_mrr = naive_ndcg_mrr(scores.tolist(), relevant)
    assert ndcg == pytest.approx(want_ndcg, rel=1e-12) and mrr == pytest.approx(want_mrr, rel=1e-12)
    truth = np.zeros((7, 30))
    for i, rel in enumerate(relevant):
        truth[i, list(rel)] = 1
    assert ndcg == pytest.approx(ndcg_score(truth, scores.numpy(), k=10), rel=1e-9)
    perfect = torch.tensor(truth)
    assert ndcg_mrr_at_k(perfect + 0.001 * scores, relevant) == pytest.approx((1.0, 1.0))


def test_recall_at_k_matches_a_naive_loop():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(6, 12, generator=g, dtype=torch.float64)
    relevant = [{0}, {3, 4}, {11}, {1, 2, 5}, {7}, {int(scores[5].argmax())}]
    for k in (1, 3):
        want = []
        for i, rel in enumerate(relevant):
            order = sorted(range(12), key=lambda j: -float(scores[i][j]))[:k]
            want.append(sum(d in rel for d in order) / len(rel))
        assert recall_at_k(scores, relevant, k) == pytest.approx(sum(want) / len(want), rel=1e-12)
    assert recall_at_k(scores[5:], relevant[5:], 1) == 1.0


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = np.round(x + rng.normal(size=40), 0)  # many ties in y
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, rel=1e-12)
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert spearman([1, 2, 3], [5, 5, 5]) == 0.0


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _concept_embed(dim: int):
    """Embeds a text as the normalised sum of one-hot vectors of its words 'c<k>' (others ignored)."""

    def embed(texts):
        out = torch.zeros(len(texts), dim, dtype=torch.float64)
        for i, t in enumerate(texts):
            for w in t.split():
                if w.startswith("c") and w[1:].isdigit():
                    out[i, int(w[1:])] += 1.0
        return F.normalize(out + 1e-6, dim=-1)

    return embed


@pytest.fixture()
def toy_tasks(tmp_path):
    ret = tmp_path / "ret"
    _write(
        ret / "dev.jsonl",
        [
            {"query": "c0", "positive": "c0 c0", "negatives": ["c1"]},
            {"query": "c2", "positive": "c2 c2", "negatives": ["c3", "c1"]},
            {"query": "c2", "positive": "c2 c2 c2"},  # the same query: both positives are relevant
        ],
    )
    _write(ret / "train.jsonl", [{"query": "c0", "positive": "c0"}])
    sts = tmp_path / "sts"
    _write(
        sts / "dev.jsonl",
        [
            {"text1": "c0", "text2": "c0", "score": 5.0},
            {"text1": "c0", "text2": "c0 c1", "score": 3.0},
            {"text1": "c0", "text2": "c1", "score": 0.0},
        ],
    )
    _write(sts / "train.jsonl", [{"text1": "c0", "text2": "c0", "score": 5.0}])
    cls = tmp_path / "cls"
    _write(cls / "train.jsonl", [{"text": f"c{k % 2} c{2 + k % 3}", "label": f"L{k % 2}"} for k in range(12)])
    _write(cls / "dev.jsonl", [{"text": "c0", "label": "L0"}, {"text": "c1", "label": "L1"}])
    return (
        TaskConfig(name="ret", kind="retrieval", path=ret, prompt={"query": "Q ", "document": "D "}),
        TaskConfig(name="sts", kind="sts", path=sts),
        TaskConfig(name="cls", kind="classification", path=cls),
    )


def test_evaluate_tasks_metrics_keys_and_objectives(toy_tasks, tmp_path):
    seen = []

    def embed(texts):
        seen.extend(texts)
        return _concept_embed(8)(texts)

    result = evaluate_tasks(toy_tasks, embed, dims=(8, 4))
    assert "Q c0" in seen and "D c0 c0" in seen  # prompts per side
    keys = set(result.task_metrics)
    want_keys = {f"ret/{m}/d{d}" for m in ("ndcg_at_10", "mrr_at_10", "recall_at_1") for d in (8, 4)}
    want_keys |= {f"sts/spearman/d{d}" for d in (8, 4)} | {f"cls/accuracy/d{d}" for d in (8, 4)}
    assert keys == want_keys
    # Concept embeddings rank each query's positives first, order STS perfectly, separate the labels.
    assert result.task_metrics["ret/ndcg_at_10/d8"] == pytest.approx(1.0)
    assert result.task_metrics["sts/spearman/d8"] == pytest.approx(1.0)
    assert result.task_metrics["cls/accuracy/d8"] == 1.0
    assert result.task_scores == {
        "ret": result.task_metrics["ret/ndcg_at_10/d8"],
        "sts": result.task_metrics["sts/spearman/d8"],
        "cls": result.task_metrics["cls/accuracy/d8"],
    }
    assert result.objective == pytest.approx(np.mean(list(result.task_scores.values())))

    # mean_kind weighs kinds, not tasks: two STS tasks count once. The second one's gold scores are
    # reversed, so its Spearman is -1 and the two objectives differ.
    reversed_rows = [json.loads(line) for line in (toy_tasks[1].path / "dev.jsonl").read_text().splitlines()]
    for r in reversed_rows:
        r["score"] = 5.0 - r["score"]
    _write(tmp_path / "sts2" / "dev.jsonl", reversed_rows)
    _write(tmp_path / "sts2" / "train.jsonl", reversed_rows)
    second = TaskConfig(name="sts2", kind="sts", path=tmp_path / "sts2")
    by_kind = evaluate_tasks((*toy_tasks, second), embed, dims=(8,), objective="mean_kind")
    scores = by_kind.task_scores
    assert scores["sts2"] == pytest.approx(-1.0)
    assert by_kind.objective == pytest.approx(
        (scores["ret"] + (scores["sts"] + scores["sts2"]) / 2 + scores["cls"]) / 3
    )
    by_task = evaluate_tasks((*toy_tasks, second), embed, dims=(8,))
    assert by_task.objective == pytest.approx(np.mean(list(scores.values())))
    assert by_task.objective != pytest.approx(by_kind.objective)


def test_retrieval_corpus_is_every_dev_positive_and_negative(toy_tasks):
    docs = []

    def embed(texts):
        docs.extend(t for t in texts if t.startswith("D "))
        return _concept_embed(8)(texts)

    evaluate_tasks(toy_tasks[:1], embed, dims=(8,))
    assert sorted(docs) == sorted(["D c0 c0", "D c1", "D c2 c2", "D c3", "D c2 c2 c2"])


def test_nan_scores_are_refused_not_ranked():
    # Without the check an all-NaN prediction ranks as 1..n (argsort keeps NaNs in order): rho = 1.
    nan = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        spearman([nan, nan, nan], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="not finite"):
        spearman([0.1, nan, 0.3], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="NaN"):
        average_ranks(np.array([nan, nan]))
    # topk orders NaN as the largest score: without the check this scores nDCG = MRR = 1.
    scores = torch.tensor([[nan, 0.1, 0.2], [0.3, 0.2, 0.1]], dtype=torch.float64)
    with pytest.raises(ValueError, match="not finite"):
        ndcg_mrr_at_k(scores, [{0}, {0}])


@pytest.mark.parametrize("index", [0, 1, 2], ids=["retrieval", "sts", "classification"])
def test_non_finite_embeddings_fail_evaluation_naming_the_task(toy_tasks, index):
    clean = _concept_embed(8)

    def diverged(texts):
        out = clean(texts)
        out[0, 0] = float("nan")  # one diverged coordinate is enough to refuse the task
        return out

    task = toy_tasks[index]
    with pytest.raises(ValueError, match=rf"task '{task.name}': .*non-finite"):
        evaluate_tasks((task,), diverged, dims=(8, 4))
