from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mixopt.config import experiment_from_dict
from mixopt.trial import Trial, TrialFailed
from trainers.analytic import Options, scores, train


def make_tasks(tmp_path: Path):
    # Three tiny tasks with known vocabularies: a={x,y}, b={y,z,w,v}, c={q}.
    texts = {"a": ["x y", "y x"], "b": ["y z", "w v"], "c": ["q q"]}
    specs = []
    for name, rows in texts.items():
        d = tmp_path / name
        d.mkdir()
        for split in ("train", "dev"):
            (d / f"{split}.jsonl").write_text(
                "".join(json.dumps({"text": t, "label": "l"}) + "\n" for t in rows)
            )
        specs.append({"name": name, "kind": "classification", "path": str(d)})
    exp = experiment_from_dict(
        {"name": "t", "tasks": specs, "trainer": {"target": "trainers.analytic:train"}}
    )
    return exp.tasks


def naive_scores(mixture, vocab, steps, rate):
    out = []
    for k in vocab:
        learnt = []
        for u in sorted(vocab[k]):
            x = sum(steps * mixture[j] / len(vocab[j]) for j in vocab if u in vocab[j])
            learnt.append(1 - math.exp(-rate * x))
        out.append(sum(learnt) / len(learnt))
    return out


def test_scores_match_the_closed_form(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path)
    vocab = {"a": {"x", "y"}, "b": {"y", "z", "w", "v"}, "c": {"q"}}
    mixture = {"a": 0.5, "b": 0.3, "c": 0.2}
    got = scores(mixture, tasks, 10, Options(rate=0.7))
    np.testing.assert_allclose(got, naive_scores(mixture, vocab, 10, 0.7), rtol=1e-12)


def test_best_mixture_is_interior(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path)
    opts = Options(rate=0.5)
    grid = [(i / 20, j / 20, 1 - i / 20 - j / 20) for i in range(21) for j in range(21 - i)]
    values = [scores(dict(zip("abc", w)), tasks, 10, opts).mean() for w in grid]
    best = grid[int(np.argmax(values))]
    assert all(0 < w < 1 for w in best)
    assert max(values) > scores({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, tasks, 10, opts).mean()


def test_train_reports_and_injects_failures(tmp_path: Path) -> None:
    tasks = make_tasks(tmp_path)
    seen = []
    trial = Trial(
        {"a": 0.2, "b": 0.3, "c": 0.5}, {}, 0, 10, tmp_path / "out", tuple(tasks), {"report_every": 5}
    )
    result = train(trial, lambda step, m: seen.append((step, dict(m))))
    assert [s for s, _ in seen] == [5, 10]
    assert result.objective == pytest.approx(np.mean(list(result.task_scores.values())))
    assert set(result.task_metrics) == {"a/accuracy/d0", "b/accuracy/d0", "c/accuracy/d0"}

    failing = Trial(
        {"a": 0.9, "b": 0.1, "c": 0.0}, {}, 0, 10, tmp_path / "f", tuple(tasks), {"fail_above": {"a": 0.5}}
    )
    with pytest.raises(TrialFailed, match="weight of a"):
        train(failing, lambda *_: None)
    nan = Trial(
        {"a": 0.9, "b": 0.1, "c": 0.0}, {}, 0, 10, tmp_path / "n", tuple(tasks), {"nan_above": {"a": 0.5}}
    )
    assert math.isnan(train(nan, lambda *_: None).objective)


def test_on_the_synthetic_tasks_the_optimum_is_interior_and_clearly_beats_uniform(tmp_path: Path) -> None:
    """The stand-in's landscape matches the real one's shape (bench/landscape.py, bench/RESULTS.md):
    retrieval gets the most steps, then STS, then classification, every weight well inside the
    simplex, and the optimum is clearly above uniform and above every corner-ish mixture."""
    from scipy.optimize import minimize

    from mixopt.synth import synthesize

    synthesize(tmp_path / "data", n_tasks=3, seed=0, with_model=False)
    names = ["retrieval_0", "sts_1", "classification_2"]
    exp = experiment_from_dict(
        {
            "name": "t",
            "tasks": [
                {"name": n, "kind": n.rsplit("_", 1)[0], "path": str(tmp_path / "data" / n)} for n in names
            ],
            "trainer": {"target": "trainers.analytic:train"},
        }
    )
    opts, steps = Options(), 80  # the analytic defaults at the tiny experiment's step budget

    def objective(w) -> float:
        w = np.clip(w, 0.0, None)
        return float(scores(dict(zip(names, w / w.sum())), exp.tasks, steps, opts).mean())

    # SLSQP on the simplex from several starts (the objective is concave: they must agree).
    optima = []
    for start in ([1 / 3] * 3, [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]):
        res = minimize(
            lambda w: -objective(w),
            np.array(start),
            method="SLSQP",
            bounds=[(0.0, 1.0)] * 3,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
        )
        assert res.success
        optima.append((res.x, -res.fun))
    best_w, best = max(optima, key=lambda o: o[1])
    for w, _ in optima:
        np.testing.assert_allclose(w, best_w, atol=0.02)
    assert min(best_w) >= 0.15  # interior, far from every edge
    assert best_w[0] > best_w[1] > best_w[2]  # retrieval > STS > classification, as measured
    uniform = objective(np.full(3, 1 / 3))
    assert best - uniform >= 0.01
    for corner in ([0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]):
        assert best - objective(np.array(corner)) >= 0.05
    # A dense grid (step 0.025) finds no better mixture: SLSQP found the maximum, not a saddle.
    grid = [np.array([i, j, 40 - i - j]) / 40 for i in range(41) for j in range(41 - i)]
    assert max(objective(w) for w in grid) <= best + 1e-6
