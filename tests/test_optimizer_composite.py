"""The composite surrogate (issue 34): one GP per score, composed into the objective by its weights.

References are independent of the code under test: the composed posterior against a numpy
closed-form GP per score (the fitted hyperparameters read off the batched model), recomposed
objectives and warm starts against hand computations, recommendations against a synthetic law's
known optimum. Observations are injected with ``warm_start`` triples where a test needs many, so
that no test waits on dozens of GP asks.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from mixopt.optimizer import MixtureOptimizer
from mixopt.optimizer.fidelity import score_rows

TASKS = ["a", "b", "c"]
OPTIMA = {"a": np.array([0.7, 0.2, 0.1]), "b": np.array([0.1, 0.6, 0.3]), "c": np.array([0.2, 0.2, 0.6])}


def law(w: np.ndarray) -> dict[str, float]:
    """Each score peaks at its own interior mixture (``OPTIMA``), with different scales."""
    return {n: float(s * (1.0 - np.sum((w - OPTIMA[n]) ** 2))) for n, s in zip(TASKS, (1.0, 0.5, 2.0))}


def mixtures(n: int, seed: int, k: int = 3) -> list[np.ndarray]:
    return list(np.random.default_rng(seed).dirichlet(np.ones(k), size=n))


def scored_optimizer(n: int = 24, seed: int = 0, **kw: object) -> MixtureOptimizer:
    # The composite model (not the default) is the one under test here.
    opt = MixtureOptimizer(TASKS, random_state=seed, **{"surrogate": "composite", **kw})  # type: ignore[arg-type]
    opt.warm_start([(dict(zip(TASKS, w.tolist())), None, law(w)) for w in mixtures(n, seed)])
    return opt


def matern52(x1: np.ndarray, x2: np.ndarray, ls: float) -> np.ndarray:
    r = np.sqrt(np.maximum(((x1[:, None, :] - x2[None, :, :]) ** 2).sum(-1), 0.0)) / ls
    return (1 + math.sqrt(5) * r + 5.0 / 3.0 * r**2) * np.exp(-math.sqrt(5) * r)


def closed_form(
    x: np.ndarray, y: np.ndarray, xs: np.ndarray, ls: float, noise: float, const: float
) -> tuple[np.ndarray, np.ndarray]:
    """Latent posterior mean and sd of a unit-variance Matern-5/2 GP with constant mean ``const``
    on standardised y."""
    mu, sd = y.mean(), y.std(ddof=1)
    ys = (y - mu) / sd
    kxx = matern52(x, x, ls) + noise * np.eye(len(x))
    ks = matern52(xs, x, ls)
    mean = const + ks @ np.linalg.solve(kxx, ys - const)
    var = 1.0 - np.einsum("ij,ji->i", ks, np.linalg.solve(kxx, ks.T))
    return mu + sd * mean, sd * np.sqrt(np.maximum(var, 0.0))


def test_composed_posterior_is_the_weighted_sum_of_independent_score_posteriors() -> None:
    weights = {"a": 2.0, "b": 1.0, "c": 1.0}
    opt = scored_optimizer(objective=weights)
    assert opt.surrogate_in_use == "composite"
    (group,) = opt._surrogate.scores.groups(TASKS)  # every score on the same rows: one batch
    model = group.fitted.model
    ls = model.covar_module.lengthscale.detach().reshape(-1).numpy()
    noise = model.likelihood.noise.detach().reshape(-1).numpy()
    const = model.mean_module.constant.detach().reshape(-1).numpy()
    assert len(ls) == 3 and len(set(ls.round(6))) > 1  # one GP per score, own hyperparameters
    x = np.array([opt.space.encode(p) for p, _ in opt.history])
    ys = {n: np.array([s[n] for _, s in opt.score_history]) for n in TASKS}
    probes = [dict(zip(TASKS, w.tolist())) for w in mixtures(5, 99)]
    xs = np.array([opt.space.encode(p) for p in probes])
    per = {n: closed_form(x, ys[n], xs, ls[j], noise[j], const[j]) for j, n in enumerate(group.names)}
    # The proposal models: the per-score GPs and their composition (predict() and predict_scores()
    # report the integrated posteriors instead, tests/test_calibrated.py).
    surrogate = opt._surrogate
    got = surrogate.scores.predict(list(TASKS), probes, list(TASKS))
    for n in TASKS:
        np.testing.assert_allclose(got[n][0], per[n][0], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got[n][1], per[n][1], rtol=1e-5, atol=1e-9)
    c = {n: w / 4.0 for n, w in weights.items()}
    mean, sd = surrogate.predict(probes)
    np.testing.assert_allclose(mean, sum(c[n] * per[n][0] for n in TASKS), rtol=1e-6)
    np.testing.assert_allclose(sd, np.sqrt(sum(c[n] ** 2 * per[n][1] ** 2 for n in TASKS)), rtol=1e-5)
    # The joint posterior of one score: its diagonal is predict_scores' variance.
    m, cov = surrogate.scores.joint("b", probes, list(TASKS))
    np.testing.assert_allclose(m, per["b"][0], rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), per["b"][1], rtol=1e-5)
    np.testing.assert_allclose(cov, cov.T, atol=1e-12)


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
    with pytest.raises(ValueError, match="surrogate must be"):
        MixtureOptimizer(TASKS, surrogate="both")


def test_scalar_tells_give_the_same_proposals_in_both_modes() -> None:
    runs = []
    for mode in ("composite", "single"):
        opt = MixtureOptimizer(TASKS, n_seeds=3, random_state=4, surrogate=mode)
        out = []
        for _ in range(5):
            (p,) = opt.ask(1)
            opt.tell(p, sum(law(np.array([p[t] for t in TASKS])).values()) / 3)
            out.append(p)
        assert opt.surrogate_in_use == "single"
        runs.append(out)
    assert json.dumps(runs[0]) == json.dumps(runs[1])


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
    opt = scored_optimizer(n=30, seed=1, surrogate="single")
    assert opt.surrogate_in_use == "single"
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
    new = MixtureOptimizer([*TASKS, "d"], n_seeds=2, random_state=0, surrogate="composite")
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
    assert new.origin(r) == "bo" and new.surrogate_in_use == "composite"
    groups = new._surrogate.scores.groups(new.score_names)
    assert sorted(g.names for g in groups) == [("a", "b", "c"), ("d",)]  # two row sets: two models


def test_state_round_trip_with_scores_and_old_states_migrate() -> None:
    opt = scored_optimizer(n=10, seed=3, objective={"a": 0.1, "b": 0.7, "c": 0.3})
    (p,) = opt.ask(1)
    state = json.loads(json.dumps(opt.state_dict()))
    assert state["config"]["objective"] == {"a": 0.1, "b": 0.7, "c": 0.3}  # as given: restored bit for bit
    clone = MixtureOptimizer.from_state_dict(state)
    assert clone.objective_weights == opt.objective_weights and clone.surrogate == "composite"
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
    for k in ("objective", "surrogate"):
        del state["config"][k]
    back = MixtureOptimizer.from_state_dict(state)
    assert back.surrogate == "single" and back.objective_weights == {t: pytest.approx(1 / 3) for t in TASKS}
    assert [s for _, s in back.score_history] == [None, None, None]
    assert back.ask(1) == old.ask(1)


def test_mixed_scalar_and_scored_trials_fall_back_to_the_single_gp(caplog) -> None:
    opt = scored_optimizer(n=6, seed=4)
    assert opt.surrogate_in_use == "composite"
    (p,) = opt.ask(1)
    opt.tell(p, 0.3)
    with caplog.at_level(logging.WARNING, logger="mixopt.optimizer"):
        assert opt.surrogate_in_use == "single"
        assert opt.surrogate_in_use == "single"
    assert caplog.text.count("told a scalar without scores") == 1


def test_multi_fidelity_partial_scores_are_rows_of_each_scores_gp() -> None:
    opt = MixtureOptimizer(TASKS, n_seeds=3, multi_fidelity=True, random_state=0, surrogate="composite")
    p, q, r = opt.ask(3)
    opt.tell_partial(p, fraction=0.25, scores={"a": 0.1, "b": 0.2, "c": 0.3})
    opt.tell_partial(p, fraction=0.5, scores={"a": 0.2, "b": 0.3, "c": 0.4})
    opt.tell_partial(q, fraction=0.5, scores={"a": 0.3, "b": 0.1, "c": 0.2})
    opt.tell(q, scores={"a": 0.5, "b": 0.2, "c": 0.3})
    opt.tell_partial(r, 0.2, 0.5)  # a scalar partial: not a row of any score's GP
    assert opt.partial[0] == (p, 0.25, pytest.approx(0.2))
    led = opt._ledger
    assert score_rows(led, "a", True) == [(1, 1.0, 0.5), (0, 0.25, 0.1), (0, 0.5, 0.2), (1, 0.5, 0.3)]
    assert opt.surrogate_in_use == "composite"
    assert isinstance(opt.should_stop(p), bool)
    mean, sd = opt._surrogate.predict([p])  # the proposal model: the per-score GPs composed
    parts = opt._surrogate.scores.predict(list(TASKS), [p], list(TASKS))
    assert mean[0] == pytest.approx(sum(parts[n][0][0] for n in TASKS) / 3, rel=1e-9)
    assert sd[0] == pytest.approx(math.sqrt(sum(parts[n][1][0] ** 2 for n in TASKS)) / 3, rel=1e-9)
    # UCB over (mixture, fraction = 1) on the composition, the running trials hallucinated per score.
    (s,) = opt.ask(1)
    assert opt.origin(s) == "bo" and opt.surrogate_in_use == "composite"


def test_pending_points_are_hallucinated_per_score_at_its_mean() -> None:
    """GP-BUCB on the composition: each score's GP gets an observation at the pending point equal
    to its own posterior mean; the reference appends that row to each score's closed-form GP."""
    weights = {"a": 1.0, "b": 3.0, "c": 1.0}
    opt = scored_optimizer(n=16, seed=5, objective=weights)
    fitted = opt._surrogate.fitted()
    (group,) = opt._surrogate.scores.groups(TASKS)
    model = group.fitted.model
    ls = model.covar_module.lengthscale.detach().reshape(-1).numpy()
    noise = model.likelihood.noise.detach().reshape(-1).numpy()
    const = model.mean_module.constant.detach().reshape(-1).numpy()
    x = np.array([opt.space.encode(p) for p, _ in opt.history])
    pending = [dict(zip(TASKS, w.tolist())) for w in mixtures(2, 7)]
    xh = np.array([opt.space.encode(p) for p in pending])
    probes = np.concatenate(
        [xh, np.array([opt.space.encode(dict(zip(TASKS, w.tolist()))) for w in mixtures(4, 8)])]
    )
    conditioned = fitted.model.condition_at_mean(torch.tensor(xh))
    with torch.no_grad():
        post = conditioned.posterior(torch.tensor(probes).unsqueeze(1))
        before = fitted.model.posterior(torch.tensor(probes).unsqueeze(1))
    c = {n: w / 5.0 for n, w in weights.items()}
    ref_mean, ref_var = 0.0, 0.0
    for j, n in enumerate(group.names):
        y = np.array([s[n] for _, s in opt.score_history])
        mu_h, _ = closed_form(x, y, xh, ls[j], noise[j], const[j])
        # The hallucinated rows in the standardised units of the original data (Standardize is
        # not refitted on them), expressed here by appending them in score units.
        m, sd = y.mean(), y.std(ddof=1)
        xs, ys = np.concatenate([x, xh]), np.concatenate([(y - m) / sd, (mu_h - m) / sd])
        k = matern52(xs, xs, ls[j]) + noise[j] * np.eye(len(xs))
        ks = matern52(probes, xs, ls[j])
        mean = const[j] + ks @ np.linalg.solve(k, ys - const[j])
        var = 1.0 - np.einsum("ij,ji->i", ks, np.linalg.solve(k, ks.T))
        ref_mean = ref_mean + c[n] * (m + sd * mean)
        ref_var = ref_var + c[n] ** 2 * sd**2 * var
    np.testing.assert_allclose(post.mean.reshape(-1).numpy(), ref_mean, rtol=1e-6)
    np.testing.assert_allclose(post.variance.reshape(-1).numpy(), ref_var, rtol=1e-5, atol=1e-12)
    # The mean is unchanged everywhere; the sd collapses at the pending points only.
    np.testing.assert_allclose(post.mean.reshape(-1).numpy(), before.mean.reshape(-1).numpy(), rtol=1e-6)
    shrink = (post.variance / before.variance).reshape(-1).numpy()
    assert (shrink[:2] < 0.9).all() and (shrink <= 1 + 1e-9).all()
