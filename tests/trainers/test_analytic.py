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
