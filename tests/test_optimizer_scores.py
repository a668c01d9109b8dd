"""Per-score observations: the objective composed from told scores, recommendations under another
composition, warm starts that add or remove a task, and the state that keeps them.

References are independent of the code under test: recomposed objectives and warm starts against
hand computations, recommendations against a synthetic law's known optimum (a dense naive grid). Observations are injected with ``warm_start`` triples where a test needs many, so
that no test waits on dozens of GP asks.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixopt.optimizer import MixtureOptimizer

TASKS = ["a", "b", "c"]
OPTIMA = {"a": np.array([0.7, 0.2, 0.1]), "b": np.array([0.1, 0.6, 0.3]), "c": np.array([0.2, 0.2, 0.6])}


def law(w: np.ndarray) -> dict[str, float]:
    """Each score peaks at its own interior mixture (``OPTIMA``), with different scales."""
    return {n: float(s * (1.0 - np.sum((w - OPTIMA[n]) ** 2))) for n, s in zip(TASKS, (1.0, 0.5, 2.0))}


def mixtures(n: int, seed: int, k: int = 3) -> list[np.ndarray]:
    return list(np.random.default_rng(seed).dirichlet(np.ones(k), size=n))


def scored_optimizer(n: int = 24, seed: int = 0, **kw: object) -> MixtureOptimizer:
    opt = MixtureOptimizer(TASKS, random_state=seed, **kw)  # type: ignore[arg-type]
    opt.warm_start([(dict(zip(TASKS, w.tolist())), None, law(w)) for w in mixtures(n, seed)])
    return opt


def test_tell_with_scores_composes_the_objective_and_rejects_bad_scores() -> None:
    opt = MixtureOptimizer(TASKS, objective={"a": 3, "b": 1, "extra_dev": 0}, n_seeds=3)
    assert opt.objective_weights == {"a": 0.75, "b": 0.25, "extra_dev": 0.0}
    assert opt.score_names == ("a", "b", "extra_dev")
    p, q, r = opt.ask(3)
    opt.tell(p, scores={"a": 0.4, "b": 0.8, "mteb": 0.1})
    assert opt.history[-1][1] == pytest.approx(0.75 * 0.4 + 0.25 * 0.8, abs=1e-15)
    assert opt.score_history[-1] == (p, {"a": 0.4, "b": 0.8, "mteb": 0.1})  # extras kept
    before = opt.state_dict()
    with pytest.raises(ValueError, match=r"scores lack \['b'\]"):
        opt.tell(q, scores={"a": 0.5})
    with pytest.raises(ValueError, match="finite"):
        opt.tell(q, scores={"a": 0.5, "b": float("nan")})
    with pytest.raises(ValueError, match="differs from the objective composed"):
        opt.tell(q, 0.9, scores={"a": 0.5, "b": 0.5})
    assert opt.state_dict() == before  # a rejected tell writes nothing
    opt.tell(q, 0.5, scores={"a": 0.5, "b": 0.5})  # the same number is accepted
    opt.tell(r, None)  # failed
    assert opt.score_history[-1] == (r, None) and opt.history[-1] == (r, None)
    assert opt.best() == (p, pytest.approx(0.5))
    with pytest.raises(ValueError, match="weights must be finite numbers >= 0"):
        MixtureOptimizer(TASKS, objective={"a": -1})
    with pytest.raises(ValueError, match="sum to 0"):
        MixtureOptimizer(TASKS, objective={"a": 0})


def test_recommend_under_a_new_composition_lands_at_that_scores_optimum() -> None:
    opt = scored_optimizer(n=30, seed=1)
    for name in TASKS:
        rec = opt.recommend(objective={name: 1.0})
        assert rec is not None and rec.source == "posterior_mean"
        w = np.array([rec.proposal[t] for t in TASKS])
        assert np.abs(w - OPTIMA[name]).sum() < 0.12, (name, w)
        # The predicted mean is the law's value there (noise-free law, smooth GP).
        assert rec.mean == pytest.approx(law(w)[name], abs=0.02 * (1 + abs(law(w)[name])))
    # The plain mean's optimum: the law's maximiser, found by a dense naive grid.
    grid = [np.array([i, j, 60 - i - j]) / 60 for i in range(61) for j in range(61 - i)]
    best = max(grid, key=lambda w: sum(law(w).values()))
    rec = opt.recommend()
    assert rec is not None
    assert np.abs(np.array([rec.proposal[t] for t in TASKS]) - best).sum() < 0.12


def test_recommend_under_a_new_composition_works_in_single_mode() -> None:
    opt = scored_optimizer(n=30, seed=1)
    rec = opt.recommend(objective={"c": 1.0})
    assert rec is not None and rec.source == "posterior_mean"
    w = np.array([rec.proposal[t] for t in TASKS])
    assert np.abs(w - OPTIMA["c"]).sum() < 0.15, w
    with pytest.raises(ValueError, match="no trial was told every score"):
        opt.recommend(objective={"unseen": 1.0})


def test_warm_start_with_a_task_removed_recomputes_the_objective_from_the_scores() -> None:
    src = MixtureOptimizer(
        TASKS,
        n_seeds=4,
        seed_mixtures=[
            {"a": 0.5, "b": 0.3, "c": 0.2},  # c removed (0.2 <= 0.25): a, b / 0.8
            {"a": 0.1, "b": 0.1, "c": 0.8},  # mostly c: dropped
            {"a": 0.9, "b": 0.1, "c": 0.0},  # failed: not reused, not counted
            {"a": 0.2, "b": 0.8, "c": 0.0},
        ],
    )
    scores = [
        {"a": 0.2, "b": 0.3, "c": 0.9},
        {"a": 0.1, "b": 0.1, "c": 0.7},
        None,
        {"a": 0.4, "b": 0.5, "c": 0.6},
    ]
    for p, s in zip(src.ask(4), scores):
        src.tell(p, scores=s)
    state = json.loads(json.dumps(src.state_dict()))
    new = MixtureOptimizer(["a", "b"], n_seeds=2)
    assert new.warm_start(state, name="exp/1") == (2, 1)
    # Hand computation: the plain mean over the two remaining tasks' scores.
    assert [v for _, v in new.history] == [pytest.approx(0.25), pytest.approx(0.45)]
    assert new.history[0][0] == pytest.approx({"a": 0.625, "b": 0.375}, abs=1e-12)
    assert [s for _, s in new.score_history] == [{"a": 0.2, "b": 0.3}, {"a": 0.4, "b": 0.5}]
    assert new.warm_source == {
        "name": "exp/1",
        "reused": 2,
        "dropped": 1,
        "trials": 2,
        "scores_reused": ["a", "b"],
        "scores_new": [],
    }
    # A source without scores: reused only under the same composition.
    pairs_src = MixtureOptimizer(TASKS, n_seeds=1)
    (p,) = pairs_src.ask(1)
    pairs_src.tell(p, 0.5)
    other = MixtureOptimizer(["a", "b"], n_seeds=1)
    assert other.warm_start(pairs_src.state_dict(), max_removed=0.99) == (0, 1)
    same = MixtureOptimizer(TASKS, n_seeds=1)
    assert same.warm_start(pairs_src.state_dict()) == (1, 0) and same.history == [(p, 0.5)]


def test_warm_start_with_a_task_added_leaves_its_score_unobserved() -> None:
    src = scored_optimizer(n=12, seed=2)
    new = MixtureOptimizer([*TASKS, "d"], n_seeds=2, random_state=0)
    assert new.warm_start(src.state_dict()) == (12, 0)
    assert new.warm_source["scores_reused"] == TASKS and new.warm_source["scores_new"] == ["d"]
    assert all(v is None for _, v in new.history)  # objective unknown: d never measured
    assert new.best() is None and new.recommend() is None
    # The old scores alone still recommend under a composition without d.
    rec = new.recommend(objective={"a": 1.0})
    assert rec is not None and rec.proposal["d"] == pytest.approx(0.0, abs=0.05)
    # Unknown objectives are not failures: nothing hallucinated; the next asks are draws until d
    # has two observations, then GP proposals with the added score's own GP.
    (p, q) = new.ask(2)
    assert new.origin(p) == new.origin(q) == "random"
    for x in (p, q):
        w = np.array([x[t] for t in TASKS])
        new.tell(x, scores=law(w) | {"d": x["d"]})
    (r,) = new.ask(1)
    assert new.origin(r) == "bo"


def test_state_round_trip_with_scores_and_old_states_migrate() -> None:
    opt = scored_optimizer(n=10, seed=3, objective={"a": 0.1, "b": 0.7, "c": 0.3})
    (p,) = opt.ask(1)
    state = json.loads(json.dumps(opt.state_dict()))
    assert state["config"]["objective"] == {"a": 0.1, "b": 0.7, "c": 0.3}  # as given: restored bit for bit
    clone = MixtureOptimizer.from_state_dict(state)
    assert clone.objective_weights == opt.objective_weights
    assert clone.score_history == opt.score_history and clone.pending == [p]
    w = np.array([p[t] for t in TASKS])
    opt.tell(p, scores=law(w))
    clone.tell(p, scores=law(w))
    assert clone.ask(1) == opt.ask(1)
    # A state written before scores existed: plain mean over its tasks, the single GP, no scores.
    old = MixtureOptimizer(TASKS, n_seeds=2, random_state=5)
    for x in old.ask(3):
        old.tell(x, float(x["a"]))
    state = json.loads(json.dumps(old.state_dict()))
    for k in ("scores", "partial_scores"):
        del state[k]
    del state["config"]["objective"]
    back = MixtureOptimizer.from_state_dict(state)
    assert back.objective_weights == {t: pytest.approx(1 / 3) for t in TASKS}
    assert [s for _, s in back.score_history] == [None, None, None]
    assert back.ask(1) == old.ask(1)


def test_states_that_name_a_surrogate_restore_on_the_single_gp() -> None:
    """States written while ``surrogate`` was an option record it: ``"single"`` (the model that
    remains) restores the same optimizer; ``"composite"`` (removed) keeps its trials, and the one
    GP proposes from them what it proposes for the same trials told to a fresh optimizer."""
    opt = scored_optimizer(n=10, seed=6)
    (p,) = opt.ask(1)
    state = json.loads(json.dumps(opt.state_dict()))
    assert "surrogate" not in state["config"]
    for recorded in ("single", "composite"):
        old = json.loads(json.dumps(state))
        old["config"]["surrogate"] = recorded
        back = MixtureOptimizer.from_state_dict(old)
        assert back.score_history == opt.score_history and back.pending == [p]
        assert "surrogate" not in back.state_dict()["config"]
        assert back.ask(1) == MixtureOptimizer.from_state_dict(state).ask(1)


def test_a_state_with_proxy_observations_restores_without_them() -> None:
    """States written while ``tell_proxy`` existed hold a ``proxy`` list (merged-expert scores of
    untrained mixtures): they restore with the trained trials alone, as a state without it."""
    opt = scored_optimizer(n=10, seed=7)
    state = json.loads(json.dumps(opt.state_dict()))
    assert "proxy" not in state
    old = json.loads(json.dumps(state))
    old["proxy"] = [{"proposal": opt.history[0][0], "value": 0.1, "scores": {n: 0.1 for n in TASKS}}]
    back = MixtureOptimizer.from_state_dict(old)
    assert back.score_history == opt.score_history and "proxy" not in back.state_dict()
    assert back.ask(1) == MixtureOptimizer.from_state_dict(state).ask(1)
