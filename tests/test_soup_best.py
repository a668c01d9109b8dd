"""The soup against its best ingredient (mixopt.soup.compare): when the soup scores below its best
ingredient on the rows it is judged on, the console, the model card and the MLflow run say so,
with both figures and the alternatives.

The reference is independent of the soup code: each candidate soup is averaged by hand in
float64 (tests/test_soup.py's ``reference_model``) and scored by the same paraphrase evaluation;
the trials' recorded objectives are their own scores under that evaluation, as a sweep records a
trial's dev score on the rows the soup is scored on.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mixopt.soup.pipeline import soup_from_sweep
from tests.test_soup import TEXTS, build_checkpoint, evaluate_pairs, log_sweep, reference_model


def _objective(model) -> float:
    e = model.encode(TEXTS, convert_to_tensor=True)
    return (float(e[0] @ e[1]) + float(e[2] @ e[3])) / 2


@pytest.fixture(scope="module")
def candidates(tmp_path_factory) -> tuple[list[Path], list[float], dict[tuple[int, int], float]]:
    """Six tiny checkpoints, each one's score, and every pair's hand-averaged soup score."""
    root = tmp_path_factory.mktemp("best")
    cks = [build_checkpoint(root / f"c{s}", seed=20 + s) for s in range(6)]
    own = [evaluate_pairs(c).objective for c in cks]
    pairs = {
        (a, b): _objective(reference_model([cks[a], cks[b]])) for a, b in itertools.combinations(range(6), 2)
    }
    return cks, own, pairs


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


def _soup(cks: list[Path], own: list[float], pair: tuple[int, int], uri: str, name: str, out: Path):
    trials = [
        {"id": f"t{i}", "checkpoint": cks[i], "objective": own[i], "mixture": {"a": 0.5, "b": 0.5}}
        for i in pair
    ]
    ids = log_sweep(uri, name, trials)
    printed: list[str] = []
    _, result = soup_from_sweep(
        None,
        experiment_name=name,
        tracking_uri=uri,
        runs="all",
        out=out,
        evaluate=evaluate_pairs,
        echo=printed.append,
    )
    return ids, printed, result


def test_a_soup_below_its_best_ingredient_says_so_everywhere(candidates, uri: str, tmp_path: Path) -> None:
    cks, own, pairs = candidates
    worse = [p for p, s in pairs.items() if s < max(own[p[0]], own[p[1]]) - 1e-3]
    assert worse, "no pair of the six checkpoints soups below its better member: pick other seeds"
    pair = worse[0]
    best = max(pair, key=lambda i: own[i])
    ids, printed, result = _soup(cks, own, pair, uri, "worse", tmp_path / "soup")

    soup_score = pairs[pair]
    assert result.evaluation.objective == pytest.approx(soup_score, abs=1e-5)
    line = printed[-1]
    assert line.startswith("WARNING: the uniform soup scores objective")
    assert f"{soup_score:.4f}" in line and f"{own[best]:.4f}" in line
    assert f"trial t{best}" in line and ids[f"t{best}"] in line
    assert "--method greedy" in line and "ship the best trial" in line

    card = (tmp_path / "soup" / "README.md").read_text()
    assert "**Warning: the uniform soup scores" in card and f"{own[best]:.4f}" in card

    run = MlflowClient(uri).get_run(result.run_id)
    assert run.data.tags["mixopt.soup_warning"].startswith("the uniform soup scores")
    assert run.data.metrics["best_ingredient.score"] == pytest.approx(own[best], abs=1e-9)
    assert run.data.metrics["soup_minus_best_ingredient"] == pytest.approx(soup_score - own[best], abs=1e-5)
    assert run.data.params["best_ingredient"] == ids[f"t{best}"]


def test_a_soup_above_its_best_ingredient_warns_nowhere(candidates, uri: str, tmp_path: Path) -> None:
    cks, own, pairs = candidates
    better = [p for p, s in pairs.items() if s > max(own[p[0]], own[p[1]]) + 1e-3]
    if not better:
        pytest.skip("no pair of the six checkpoints soups above its better member")
    ids, printed, result = _soup(cks, own, better[0], uri, "better", tmp_path / "soup")
    assert printed[-1].startswith("the soup is not behind its best ingredient")
    assert "Warning" not in (tmp_path / "soup" / "README.md").read_text()
    run = MlflowClient(uri).get_run(result.run_id)
    assert "mixopt.soup_warning" not in run.data.tags
    assert run.data.metrics["soup_minus_best_ingredient"] > 0
