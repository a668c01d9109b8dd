from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mixopt.optimizer.acquisition as acquisition_module
import mixopt.optimizer.model as model_module
from mixopt import MixtureOptimizer
from mixopt.config import (
    Experiment,
    FloatParam,
    LogFloatParam,
    OptimizerConfig,
    SearchConfig,
    TaskConfig,
    TrainerConfig,
    WeightBounds,
)
from mixopt.sweep.warm import optimizer_for


def random_bounds(rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Feasible random bounds: some tasks free, some with a min, a max or both."""
    kind = rng.integers(0, 4, size=k)  # 0 free, 1 min, 2 max, 3 both
    m = rng.uniform(0.0, 1.0, size=k) * (kind % 2 == 1)
    lo = m / m.sum() * rng.uniform(0.0, 0.9) if m.sum() > 0 else np.zeros(k)
    hi = np.where(kind >= 2, lo + (1.0 - lo) * rng.uniform(0.0, 1.0, size=k), 1.0)
    if hi.sum() < 1.0:
        room = 1.0 - hi
        hi = hi + room * min(1.0, (1.0 - hi.sum()) / room.sum() + 1e-3)
    return lo, hi


TASKS = ["retrieval_0", "sts_1", "classification_2", "retrieval_3"]


def weights(p: dict, tasks: list[str]) -> np.ndarray:
    return np.array([p[t] for t in tasks])


def bowl(tasks: list[str], seed: int = 0):
    """A smooth objective on the simplex: a tilted quadratic bowl with an interior maximum 0."""
    rng = np.random.default_rng(seed)
    k = len(tasks)
    q, _ = np.linalg.qr(rng.normal(size=(k, k)))
    a = (q * np.exp(rng.uniform(0, math.log(10), size=k))) @ q.T
    c = rng.dirichlet(np.full(k, 3.0))

    def f(p: dict) -> float:
        d = weights(p, tasks) - c
        return -float(d @ a @ d)

    return f


def tv(p: dict, q: dict, tasks: list[str]) -> float:
    return 0.5 * sum(abs(p[t] - q[t]) for t in tasks)


def assert_valid(
    p: dict, tasks: list[str], lo: np.ndarray | None = None, hi: np.ndarray | None = None
) -> None:
    w = weights(p, tasks)
    assert all(isinstance(p[t], float) for t in tasks)
    assert abs(math.fsum(w) - 1.0) <= 1e-9
    assert np.all(w >= 0.0)
    if lo is not None and hi is not None:
        assert np.all(w >= lo) and np.all(w <= hi), (w, lo, hi)


def run(opt: MixtureOptimizer, f, n: int, batch: int = 1) -> list[dict]:
    asked = []
    while len(asked) < n:
        ps = opt.ask(batch)
        for p in ps:
            opt.tell(p, f(p))
        asked += ps
    return asked


# ---------------------------------------------------------------- constraints


def bounded_optimizer(k: int, seed: int, n_seeds: int) -> tuple[MixtureOptimizer, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lo, hi = random_bounds(rng, k)
    tasks = [f"t{i}" for i in range(k)]
    bounds = {t: (float(lo[i]), float(hi[i])) for i, t in enumerate(tasks) if lo[i] > 0 or hi[i] < 1}
    alpha = float(10 ** rng.uniform(-1, 1))
    opt = MixtureOptimizer(tasks, n_seeds=n_seeds, bounds=bounds, dirichlet_alpha=alpha, random_state=seed)
    return opt, lo, hi


@settings(max_examples=40, deadline=None)
@given(k=st.integers(2, 40), seed=st.integers(0, 2**32 - 1))
def test_every_seed_is_a_mixture_within_bounds(k: int, seed: int) -> None:
    opt, lo, hi = bounded_optimizer(k, seed, n_seeds=6)
    for p in opt.ask(6):
        assert_valid(p, list(opt.tasks), lo, hi)
        assert opt.origin(p) == "seed"


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(2, 40), seed=st.integers(0, 2**32 - 1))
def test_every_ucb_proposal_is_a_mixture_within_bounds(k: int, seed: int) -> None:
    opt, lo, hi = bounded_optimizer(k, seed, n_seeds=3)
    tasks = list(opt.tasks)
    f = bowl(tasks, seed)
    for p in run(opt, f, 3) + opt.ask(2):  # 3 seeds, then 2 GP-UCB proposals (a batch)
        assert_valid(p, tasks, lo, hi)
    assert [opt.origin(p) for p in opt.pending] == ["bo", "bo"]


def test_bounds_from_config_objects_and_pinned_weights() -> None:
    bounds = {"retrieval_0": WeightBounds(min=0.2, max=0.2), "sts_1": WeightBounds(min=0.1, max=0.3)}
    opt = MixtureOptimizer(TASKS, n_seeds=3, bounds=bounds, random_state=1)
    for p in run(opt, bowl(TASKS), 8, batch=2):
        assert p["retrieval_0"] == 0.2
        assert 0.1 <= p["sts_1"] <= 0.3
        assert_valid(p, TASKS)


# ---------------------------------------------------------------- seeds and determinism


def test_user_seeds_then_dirichlet_seeds_then_bo() -> None:
    seeds = [
        {"retrieval_0": 0.7, "sts_1": 0.3},
        {"retrieval_0": 0.25, "sts_1": 0.25, "classification_2": 0.25, "retrieval_3": 0.25},
    ]
    opt = MixtureOptimizer(TASKS, n_seeds=4, seed_mixtures=seeds, random_state=3)
    first = opt.ask(3)
    assert first[0] == {"retrieval_0": 0.7, "sts_1": 0.3, "classification_2": 0.0, "retrieval_3": 0.0}
    assert first[1] == seeds[1]
    for p in first:
        opt.tell(p, bowl(TASKS)(p))
    rest = run(opt, bowl(TASKS), 4)
    assert [opt.origin(p) for p in first + rest] == ["seed"] * 4 + ["bo"] * 3


def test_per_task_dirichlet_alpha_shapes_the_seeds() -> None:
    # Closed form: under Dirichlet(5, 1, 1, 1), E[w_0] = 5 / 8 and E[w_k] = 1 / 8 for the others.
    opt = MixtureOptimizer(TASKS, n_seeds=400, dirichlet_alpha={"retrieval_0": 5.0}, random_state=0)
    w = np.array([weights(p, TASKS) for p in opt.ask(400)])
    np.testing.assert_allclose(w.mean(0), [5 / 8, 1 / 8, 1 / 8, 1 / 8], atol=0.02)


def test_more_user_seeds_than_n_seeds_are_all_proposed() -> None:
    seeds = [{"retrieval_0": 1.0}, {"sts_1": 1.0}, {"classification_2": 1.0}]
    opt = MixtureOptimizer(TASKS, n_seeds=1, seed_mixtures=seeds)
    assert [max(p, key=p.get) for p in opt.ask(3)] == ["retrieval_0", "sts_1", "classification_2"]


def test_same_random_state_same_proposals_and_different_state_differs() -> None:
    f = bowl(TASKS, 1)
    a = run(MixtureOptimizer(TASKS, n_seeds=4, random_state=7), f, 7)
    b = run(MixtureOptimizer(TASKS, n_seeds=4, random_state=7), f, 7)
    c = run(MixtureOptimizer(TASKS, n_seeds=4, random_state=8), f, 7)
    assert a == b
    assert a[0] != c[0]


def test_batch_ask_equals_sequential_asks() -> None:
    f = bowl(TASKS, 2)
    one, two = (MixtureOptimizer(TASKS, n_seeds=3, random_state=5) for _ in range(2))
    run(one, f, 3)
    run(two, f, 3)
    assert one.ask(3) == two.ask(1) + two.ask(2)


# ---------------------------------------------------------------- pending, async, failures


def test_pending_proposals_are_distinct_across_asks_and_tells() -> None:
    f = bowl(TASKS, 3)
    opt = MixtureOptimizer(TASKS, n_seeds=4, random_state=0)
    run(opt, f, 4)
    batch = opt.ask(4)
    opt.tell(batch[1], f(batch[1]))
    batch2 = opt.ask(3)  # a worker finished; others still running
    pending = opt.pending
    assert len(pending) == 6 and batch2[0] in pending
    told = [p for p, _ in opt.history]
    for i, p in enumerate(pending):
        for q in pending[i + 1 :] + told:
            if q is not p:
                assert tv(p, q, TASKS) >= 0.01, (p, q)


def test_cancel_and_tell_bookkeeping() -> None:
    opt = MixtureOptimizer(TASKS, n_seeds=3, random_state=0)
    a, b, c = opt.ask(3)
    opt.cancel(b)
    assert opt.pending == [a, c]
    opt.tell(json.loads(json.dumps(c)), 0.5)  # survives a JSON round trip
    opt.tell(c, 0.7)  # a repeat observation
    opt.tell(a, None)
    assert opt.history == [(c, 0.5), (c, 0.7), (a, None)]
    assert opt.best() == (c, 0.7)
    assert opt.pending == []
    with pytest.raises(ValueError, match="not pending"):
        opt.cancel(a)


def test_best_is_none_until_a_success() -> None:
    opt = MixtureOptimizer(TASKS)
    (p,) = opt.ask(1)
    assert opt.best() is None
    opt.tell(p, None)
    assert opt.best() is None


def test_failed_trials_are_not_modelled_and_not_proposed_again() -> None:
    f = bowl(TASKS, 4)
    opt = MixtureOptimizer(TASKS, n_seeds=5, random_state=2)
    run(opt, f, 5)
    (p,) = opt.ask(1)
    before = opt.predict([p])
    opt.tell(p, None)
    after = opt.predict([p])
    # The failure changes nothing in the GP's fit (no number is imputed)...
    np.testing.assert_allclose(after[0], before[0], rtol=1e-9)
    np.testing.assert_allclose(after[1], before[1], rtol=1e-9)
    # ... but the failed mixture is never proposed again, even though it was the UCB maximiser.
    for q in run(opt, f, 6, batch=2):
        assert tv(p, q, TASKS) >= 0.01


# ---------------------------------------------------------------- errors


def test_errors_speak_to_the_user() -> None:
    opt = MixtureOptimizer(TASKS, random_state=0)
    (p,) = opt.ask(1)
    for bad in (float("nan"), float("inf"), -math.inf):
        with pytest.raises(ValueError, match="not finite"):
            opt.tell(p, bad)
    with pytest.raises(ValueError, match="float to maximise"):
        opt.tell(p, "0.5")
    never = dict(p, retrieval_0=p["retrieval_0"] + 1e-3)
    with pytest.raises(ValueError, match="never asked"):
        opt.tell(never, 0.1)
    with pytest.raises(ValueError, match="never asked"):
        opt.origin(never)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        opt.ask(0)
    with pytest.raises(RuntimeError, match="at least 2 successful observations"):
        opt.predict([p])
    with pytest.raises(ValueError, match="sum to 1"):
        MixtureOptimizer(TASKS, seed_mixtures=[{"retrieval_0": 0.5}])
    with pytest.raises(ValueError, match="unknown key"):
        MixtureOptimizer(TASKS, seed_mixtures=[{"nope": 1.0}])
    with pytest.raises(ValueError, match="same trial"):
        MixtureOptimizer(TASKS, seed_mixtures=[{"sts_1": 1.0}, {"sts_1": 1.0}])
    with pytest.raises(ValueError, match="dirichlet_alpha"):
        MixtureOptimizer(TASKS, dirichlet_alpha={"nope": 2.0})
    with pytest.raises(ValueError, match="only one mixture"):
        MixtureOptimizer(["a", "b"], bounds={"a": (0.5, 0.5)})


# ---------------------------------------------------------------- state


def test_state_round_trip_continues_exactly() -> None:
    f = bowl(TASKS, 5)
    hp = {
        "lr": {"type": "log_float", "low": 1e-5, "high": 1e-3},
        "pool": {"type": "categorical", "choices": ["mean", "cls"]},
    }

    def g(p: dict) -> float:
        return f(p) - 0.1 * (math.log10(p["lr"]) + 4) ** 2 + (0.05 if p["pool"] == "cls" else 0.0)

    # budget=11: the clone's asks below include the two exploitation steps (asks 10 and 11).
    opt = MixtureOptimizer(
        TASKS, n_seeds=4, random_state=11, hyperparameters=hp, dirichlet_alpha={"sts_1": 0.5}, budget=11
    )
    run(opt, g, 6, batch=2)
    a, b = opt.ask(2)
    opt.tell(a, None)  # a failure and a still-pending proposal are part of the state
    state = json.loads(json.dumps(opt.state_dict()))
    clone = MixtureOptimizer.from_state_dict(state)
    assert clone.pending == opt.pending == [b]
    assert clone.history == opt.history
    assert clone.origin(b) == opt.origin(b)
    nxt = opt.ask(2)
    assert clone.ask(2) == nxt
    assert [opt.origin(p) for p in nxt] == ["bo", "exploit"]
    for p in nxt:
        opt.tell(p, g(p))
        clone.tell(json.loads(json.dumps(p)), g(p))
    last = opt.ask(1)
    assert clone.ask(1) == last and opt.origin(last[0]) == clone.origin(last[0]) == "exploit"


def test_from_state_dict_rejects_foreign_state() -> None:
    with pytest.raises(ValueError, match="not a MixtureOptimizer state"):
        MixtureOptimizer.from_state_dict({"tasks": TASKS})


def test_from_experiment_reads_search_and_optimizer() -> None:
    exp = Experiment(
        name="x",
        tasks=[TaskConfig(name=t, kind="retrieval", path=f"/data/{t}") for t in TASKS],
        search=SearchConfig(
            bounds={"sts_1": WeightBounds(min=0.1, max=0.5)},
            seed_mixtures=[{"sts_1": 0.5, "retrieval_0": 0.5}],
            hyperparameters={"lr": LogFloatParam(type="log_float", low=1e-5, high=1e-3, default=1e-4)},
        ),
        optimizer=OptimizerConfig(n_seeds=3, beta=1.5, random_state=9, dirichlet_alpha=0.7),
        trainer=TrainerConfig(target="trainers.analytic:train"),
    )
    opt = optimizer_for(exp)
    assert (opt.n_seeds, opt.beta, opt.random_state, opt.dirichlet_alpha) == (3, 1.5, 9, 0.7)
    assert (opt.budget, opt.exploit_last) == (30, 2)  # max_trials and the default
    first, *rest = opt.ask(3)
    assert first == {
        "retrieval_0": 0.5,
        "sts_1": 0.5,
        "classification_2": 0.0,
        "retrieval_3": 0.0,
        "lr": 1e-4,
    }
    for p in rest:
        assert 0.1 <= p["sts_1"] <= 0.5 and 1e-5 <= p["lr"] <= 1e-3


# ---------------------------------------------------------------- the GP and UCB


def matern52_posterior(x, y, xs, lengthscale, noise, const):
    """Naive GP posterior (standardised y, Matern-5/2 ARD, unit outputscale), unstandardised."""
    mu_y, sd_y = y.mean(), y.std(ddof=1)
    ys = (y - mu_y) / sd_y

    def k(a, b):
        r = np.sqrt((((a[:, None, :] - b[None, :, :]) / lengthscale) ** 2).sum(-1))
        return (1 + math.sqrt(5) * r + 5 * r**2 / 3) * np.exp(-math.sqrt(5) * r)

    kxx = k(x, x) + noise * np.eye(len(x))
    ks = k(xs, x)
    mean = const + ks @ np.linalg.solve(kxx, ys - const)
    var = 1.0 - np.einsum("ij,ji->i", ks, np.linalg.solve(kxx, ks.T))
    return mu_y + sd_y * mean, sd_y * np.sqrt(var)


def test_the_proposal_gp_is_the_gp_posterior_in_objective_units() -> None:
    # The proposal GP, hyperparameters at their MAP (predict() reports the integrated posterior:
    # tests/test_calibrated.py).
    f = bowl(TASKS, 6)
    opt = MixtureOptimizer(TASKS, n_seeds=8, random_state=4)
    told = run(opt, lambda p: 100.0 + 10.0 * f(p), 8)
    probe = opt.ask(3)
    mean, sd = opt._surrogate.predict(probe)
    gp = opt._surrogate.fitted().model
    x = np.array([opt.space.encode(p) for p in told])
    y = np.array([v for _, v in opt.history])
    ref_mean, ref_sd = matern52_posterior(
        x,
        y,
        np.array([opt.space.encode(p) for p in probe]),
        gp.covar_module.lengthscale.detach().numpy().ravel(),
        gp.likelihood.noise.item(),
        gp.mean_module.constant.item(),
    )
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-6)
    np.testing.assert_allclose(sd, ref_sd, rtol=1e-5)


def test_proposal_maximises_mu_plus_beta_sigma() -> None:
    # UCB as the paper writes it: the proposal must beat every sampled mixture on mu + beta * sigma
    # computed from the proposal GP; with botorch's sqrt convention misapplied it would not, in general.
    tasks = TASKS[:3]
    f = bowl(tasks, 7)
    for beta in (0.5, 3.0):
        opt = MixtureOptimizer(tasks, n_seeds=6, beta=beta, random_state=1)
        run(opt, f, 6)
        (p,) = opt.ask(1)
        rng = np.random.default_rng(0)
        told = [q for q, _ in opt.history]
        samples = [dict(zip(tasks, map(float, w))) for w in rng.dirichlet(np.ones(3), 400)]
        samples = [s for s in samples if min(tv(s, q, tasks) for q in told) >= 0.01]
        mu, sd = opt._surrogate.predict([p] + samples)
        ucb = mu + beta * sd
        assert ucb[0] >= ucb[1:].max() - 1e-6 * (abs(ucb).max()), (beta, ucb[0], ucb[1:].max())


def test_the_budgets_last_proposals_maximise_the_posterior_mean() -> None:
    # Exploitation steps: the last exploit_last asks of a budget maximise mu (beta = 0) among the
    # mixtures not taken; checked against the proposal GP's mu on sampled mixtures, as UCB above.
    tasks = TASKS[:3]
    f = bowl(tasks, 7)
    rng = np.random.default_rng(0)
    draws = [dict(zip(tasks, map(float, w))) for w in rng.dirichlet(np.ones(3), 400)]
    means = {}
    for budget in (10, None):
        opt = MixtureOptimizer(tasks, n_seeds=6, random_state=1, budget=budget)
        run(opt, f, 8)
        (p,) = opt.ask(1)
        assert opt.origin(p) == ("exploit" if budget else "bo")
        told = [q for q, _ in opt.history]
        samples = [s for s in draws if min(tv(s, q, tasks) for q in told) >= 0.01]
        mu, _ = opt._surrogate.predict([p] + samples)
        means[budget] = mu[0]
        if budget:
            assert mu[0] >= mu[1:].max() - 1e-6 * abs(mu).max(), (mu[0], mu[1:].max())
    # UCB (no budget) traded mean for exploration here: the exploitation step is another point.
    assert means[None] < means[10] - 1e-3 * abs(means[10])


def test_exploitation_steps_count_issued_trials_one_at_a_time() -> None:
    f = bowl(TASKS, 3)
    # Concurrent workers: of the budget's last two asks, made together, only the first exploits
    # (a second would land next to the first, whose posterior mean does not move while pending).
    opt = MixtureOptimizer(TASKS, n_seeds=4, random_state=0, budget=8)
    run(opt, f, 6)
    assert [opt.origin(p) for p in opt.ask(2)] == ["exploit", "bo"]
    # A cancelled ask is not a trial: the next ask is the exploitation step again.
    opt = MixtureOptimizer(TASKS, n_seeds=4, random_state=0, budget=8)
    run(opt, f, 6)
    (p,) = opt.ask(1)
    opt.cancel(p)
    (q,) = opt.ask(1)
    assert opt.origin(q) == "exploit"
    # Reused (warm-start) observations are not trials of this sweep's budget.
    source = MixtureOptimizer(TASKS, n_seeds=4, random_state=5)
    run(source, f, 4)
    opt = MixtureOptimizer(TASKS, n_seeds=2, random_state=0, budget=4)
    opt.warm_start(source.state_dict())
    assert [opt.origin(p) for p in run(opt, f, 4)] == ["bo", "bo", "exploit", "exploit"]
    # Off: no budget (open-ended ask/tell), or exploit_last=0.
    for kwargs in ({}, {"budget": 8, "exploit_last": 0}):
        opt = MixtureOptimizer(TASKS, n_seeds=4, random_state=0, **kwargs)
        assert {opt.origin(p) for p in run(opt, f, 8)[4:]} == {"bo"}
    # The budget can be raised (a resumed sweep given more trials): the steps move to the new end.
    opt = MixtureOptimizer(TASKS, n_seeds=4, random_state=0, budget=6)
    run(opt, f, 4)
    opt.budget = 8
    assert [opt.origin(p) for p in run(opt, f, 4)] == ["bo", "bo", "exploit", "exploit"]
    for bad in (0, 2.5, True, "8"):
        with pytest.raises(ValueError, match="budget must be an integer >= 1"):
            MixtureOptimizer(TASKS, budget=bad)
    with pytest.raises(ValueError, match="exploit_last must be an integer >= 0"):
        MixtureOptimizer(TASKS, budget=8, exploit_last=-1)


def test_hyperparameters_are_modelled_jointly() -> None:
    tasks = TASKS[:3]
    f = bowl(tasks, 8)
    hp = {"lr": FloatParam(type="float", low=0.0, high=1.0), "bs": {"type": "int", "low": 1, "high": 64}}

    def g(p: dict) -> float:
        return f(p) - 2.0 * (p["lr"] - 0.8) ** 2

    opt = MixtureOptimizer(tasks, n_seeds=8, hyperparameters=hp, random_state=0)
    for p in run(opt, g, 12, batch=2):
        assert isinstance(p["bs"], int) and 1 <= p["bs"] <= 64
        assert 0.0 <= p["lr"] <= 1.0
    mix = opt.best()[0]
    mean, _ = opt.predict([dict(mix, lr=0.8), dict(mix, lr=0.05)])
    assert mean[0] > mean[1]  # the GP learnt the lr effect from the same observations as the weights


# ---------------------------------------------------------------- fallbacks


def test_fit_failure_retries_with_more_jitter(monkeypatch, caplog) -> None:
    real = model_module.fit_mll
    calls = []

    def flaky(mll):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("not positive definite (injected)")
        real(mll)

    opt = MixtureOptimizer(TASKS, n_seeds=3, random_state=0)
    run(opt, bowl(TASKS), 3)
    monkeypatch.setattr(model_module, "fit_mll", flaky)
    with caplog.at_level(logging.WARNING, logger="mixopt.optimizer"):
        (p,) = opt.ask(1)
    assert opt.origin(p) == "bo"
    assert "noise floor" in caplog.text and "injected" in caplog.text
    assert_valid(p, TASKS)


def test_fit_failure_everywhere_falls_back_to_dirichlet(monkeypatch, caplog) -> None:
    def broken(mll):
        raise RuntimeError("singular (injected)")

    opt = MixtureOptimizer(TASKS, n_seeds=3, random_state=0)
    run(opt, bowl(TASKS), 3)
    monkeypatch.setattr(model_module, "fit_mll", broken)
    with caplog.at_level(logging.WARNING, logger="mixopt.optimizer"):
        ps = opt.ask(3)
    assert [opt.origin(p) for p in ps] == ["random"] * 3
    assert "failed with every setting" in caplog.text
    for p in ps:
        assert_valid(p, TASKS)
    with pytest.raises(RuntimeError, match="could not be fitted"):
        opt._surrogate.predict(ps)
    # The reported posterior does not rest on the failed fit: it still answers.
    mean, sd = opt.predict(ps)
    assert np.isfinite(mean).all() and (sd > 0).all()


def test_acquisition_failure_uses_the_best_start(monkeypatch, caplog) -> None:
    def broken(*args):
        raise ValueError("SLSQP exploded (injected)")

    opt = MixtureOptimizer(TASKS, n_seeds=3, random_state=0)
    run(opt, bowl(TASKS), 3)
    monkeypatch.setattr(acquisition_module, "optimise", broken)
    with caplog.at_level(logging.WARNING, logger="mixopt.optimizer"):
        ps = opt.ask(2)
    assert [opt.origin(p) for p in ps] == ["bo", "bo"]
    assert "acquisition optimisation failed" in caplog.text
    assert tv(ps[0], ps[1], TASKS) >= 0.01


def test_too_few_observations_and_all_equal_values(caplog) -> None:
    opt = MixtureOptimizer(TASKS, n_seeds=0, random_state=0)
    with caplog.at_level(logging.INFO, logger="mixopt.optimizer"):
        ps = opt.ask(2)
    assert [opt.origin(p) for p in ps] == ["random", "random"]
    assert "needs 2" in caplog.text
    for p in ps:
        opt.tell(p, 1.0)
    ps = run(opt, lambda p: 1.0, 4, batch=2)  # every value equal: a flat GP, UCB explores
    assert {opt.origin(p) for p in ps} == {"bo"}
    mean, _ = opt.predict(ps)
    np.testing.assert_allclose(mean, 1.0, atol=1e-6)


# ---------------------------------------------------------------- sample efficiency


def _beats_random(seed: int, k: int = 6, budget: int = 30) -> tuple[float, float]:
    """Best of ``budget`` optimizer trials and the median best of 31 random Dirichlet runs of that size."""
    tasks = [f"t{i}" for i in range(k)]
    f = bowl(tasks, 100 + seed)
    opt = MixtureOptimizer(tasks, n_seeds=10, random_state=seed)
    run(opt, f, budget)
    rng = np.random.default_rng(seed)
    random_best = [max(f(dict(zip(tasks, w))) for w in rng.dirichlet(np.ones(k), budget)) for _ in range(31)]
    return opt.best()[1], float(np.median(random_best))


def test_beats_random_search_on_a_smooth_objective() -> None:
    # 5 fixed seeds, K=6 tasks, 30 trials each (10 Dirichlet seeds + 20 GP-UCB); ~20 s on 2 cores.
    # The bowl's maximum is 0 (its centre is inside the simplex), so regret = -value; a win is
    # at most half the regret of random search's median, not merely a better value.
    results = [_beats_random(s) for s in range(5)]
    wins = sum(-ours <= 0.5 * -theirs for ours, theirs in results)
    assert wins >= 4, results


def test_a_cancelled_user_seed_is_proposed_again_first() -> None:
    seed = {"a": 0.5, "b": 0.3, "c": 0.2}
    opt = MixtureOptimizer(["a", "b", "c"], n_seeds=3, seed_mixtures=[seed], random_state=0)
    first, second = opt.ask(2)
    assert first == seed
    opt.cancel(first)  # e.g. the sweep's driver died before the trial's run existed
    (again,) = opt.ask(1)
    assert again == seed and opt.origin(again) == "seed"
    assert opt.pending == [second, seed]


def test_boundary_starts_lie_on_the_polytope_and_vertices_are_vertices() -> None:
    tasks = [f"t{i}" for i in range(6)]
    caps = {t: (0.0, c) for t, c in zip(tasks, (0.6, 0.3, 0.25, 0.2, 0.15, 0.1))}
    opt = MixtureOptimizer(tasks, n_seeds=3, bounds=caps, random_state=2)
    f = bowl(tasks, 3)
    run(opt, f, 3)
    space = opt.space
    s, hi = space.weight_scale, np.array([caps[t][1] for t in tasks])
    rng = np.random.default_rng(0)
    centres = [space.encode(p) for p, _ in opt.history]
    sparse, vert, *edges = acquisition_module.boundary_starts(space, rng, centres)
    assert len(sparse) == acquisition_module.N_SPARSE and len(vert) == acquisition_module.N_VERTEX
    for block in (sparse, vert, *edges):
        w = block[:, :6] / s
        np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)
        assert (w >= -1e-15).all() and (w <= hi + 1e-12).all()
    # Vertices of {sum w = 1, 0 <= w <= hi}: at most one weight strictly inside its bounds.
    w = vert[:, :6] / s
    inside = (w > 1e-12) & (w < hi - 1e-12)
    assert (inside.sum(1) <= 1).all()

    # Sparse draws (alpha = 0.1) lie near faces: most weights within 1e-3 of 0 or of their cap,
    # where Dirichlet(1) draws (the global starts) have most weights inside.
    def n_inside(x: np.ndarray) -> float:
        w = x[:, :6] / s
        return float(np.median(((w > 1e-3) & (w < hi - 1e-3)).sum(1)))

    assert n_inside(sparse) <= 2 < n_inside(space.random_features(rng, np.ones(6), 128))


def test_local_starts_around_a_sparse_incumbent_keep_its_support() -> None:
    # The best observation uses 2 of 8 tasks (t0 sits at its minimum 0.05, off the support).
    # Half of the perturbations around it must stay on those 2 tasks plus at most one more
    # (exact zeros / minimums elsewhere); a Dirichlet(1) direction puts weight on all 8.
    tasks = [f"t{i}" for i in range(8)]
    bounds = {"t0": (0.05, 1.0), "t1": (0.0, 0.7)}
    best = {"t0": 0.05, "t1": 0.7, "t2": 0.25, **{t: 0.0 for t in tasks[3:]}}
    others = [dict(zip(tasks, w)) for w in np.random.default_rng(1).dirichlet(np.ones(8), 3)]
    others = [{t: 0.05 + 0.95 * w if t == "t0" else 0.95 * w for t, w in p.items()} for p in others]
    opt = MixtureOptimizer(tasks, n_seeds=4, bounds=bounds, seed_mixtures=[best, *others], random_state=0)
    for p in opt.ask(4):
        opt.tell(p, 10.0 if p == pytest.approx(best) else 1.0)
    space = opt.space
    s = space.weight_scale
    told = [(p, v) for p, v in opt.history if v is not None]
    starts = acquisition_module.start_points(space, np.ones(8), told, np.random.default_rng(0))
    n = acquisition_module.N_LOCAL_PER_CENTRE
    w = starts[:, :8] / s
    lower, upper = space.lower, space.upper
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)
    assert (w >= lower - 1e-12).all() and (w <= upper + 1e-12).all()
    # The first local block is around the best observation (global starts come first).
    block = w[acquisition_module.N_GLOBAL : acquisition_module.N_GLOBAL + n]
    used = (block > lower + 1e-12).sum(1)
    assert (used <= 3).sum() >= n // 2, used
    on_support = block[used <= 3]
    assert ((on_support[:, [1, 2]] > 0).all(1)).all()  # the incumbent's own tasks keep weight
    # The other half are ordinary Dirichlet(1) directions: weight on every task.
    assert (used == 8).sum() >= n // 2 - 2, used


def test_warm_start_carries_observations_onto_a_new_task_set() -> None:
    old = MixtureOptimizer(["a", "b", "c"], n_seeds=4, random_state=0)
    # Per-task scores: the new sweep recomposes its objective (the mean of a and b) from them.
    told = [
        # c removed (0.2 <= 0.25): a, b / 0.8
        ({"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 0.5, "b": 1.5, "c": 9.0}),
        ({"a": 0.1, "b": 0.1, "c": 0.8}, {"a": 2.0, "b": 2.0, "c": 2.0}),  # mostly c: dropped
        ({"a": 0.9, "b": 0.1, "c": 0.0}, None),  # failed: not reused
        ({"a": 0.2, "b": 0.8, "c": 0.0}, {"a": 2.0, "b": 4.0, "c": 0.0}),  # nothing removed
    ]
    for p, _ in told:
        old.seed_mixtures.append(p)
    opt_src = MixtureOptimizer(["a", "b", "c"], n_seeds=4, seed_mixtures=[p for p, _ in told])
    for (p, v), q in zip(told, opt_src.ask(4)):
        assert q == pytest.approx(p)
        opt_src.tell(q, scores=v)
    state = json.loads(json.dumps(opt_src.state_dict()))
    new = MixtureOptimizer(["a", "b", "d"], n_seeds=2, random_state=0, objective={"a": 1, "b": 1})
    assert new.warm_start(state, name="exp/run1") == (2, 1)
    expected = [({"a": 0.625, "b": 0.375, "d": 0.0}, 1.0), ({"a": 0.2, "b": 0.8, "d": 0.0}, 3.0)]
    assert len(new.history) == 2
    for (p, v), (q, u) in zip(new.history, expected):
        assert p == pytest.approx(q, abs=1e-12) and v == u
        assert new.origin(p) == "warm"
    # Two reused points fill the two-seed phase: the first ask is already a GP proposal, new.
    (p,) = new.ask(1)
    assert new.origin(p) == "bo"
    assert all(new.space.distance(p, q) >= 0.01 for q, _ in new.history)
    # The state keeps the reused points, their origin and the source.
    clone = MixtureOptimizer.from_state_dict(json.loads(json.dumps(new.state_dict())))
    assert clone.history == new.history and clone.warm_source == {
        "name": "exp/run1",
        "reused": 2,
        "dropped": 1,
        "trials": 2,
        "scores_reused": ["a", "b"],
        "scores_new": [],
    }
    assert clone.origin(clone.history[0][0]) == "warm"
    new.tell(p, scores={"a": 2.5, "b": 2.5})
    clone.tell(p, scores={"a": 2.5, "b": 2.5})
    assert clone.ask(1) == new.ask(1)
    with pytest.raises(ValueError, match="before the first ask"):
        new.warm_start(state)


def test_warm_start_from_pairs_and_bad_sources() -> None:
    opt = MixtureOptimizer(["a", "b"], n_seeds=1)
    with pytest.raises(ValueError, match="not a MixtureOptimizer state"):
        opt.warm_start({"tasks": ["a"]})
    with pytest.raises(ValueError, match="max_removed"):
        opt.warm_start([], max_removed=1.0)
    assert opt.warm_start([({"a": 0.3, "b": 0.7}, 0.5)]) == (1, 0)
    assert opt.best() == ({"a": 0.3, "b": 0.7}, 0.5)


# ---------------------------------------------------------------------- recommend()

REC_TASKS = ["a", "b", "c", "d"]
# A narrow box around the optimum keeps the bowl's range small, which a stationary GP models well.
REC_BOUNDS = {"a": (0.25, 0.5), "b": (0.15, 0.4), "c": (0.1, 0.35), "d": (0.15, 0.3)}
REC_CENTRE = np.array([0.4, 0.3, 0.25, 0.05])
# Closed form: the isotropic bowl's maximiser on {sum w = 1, w_d >= 0.15} is the Euclidean
# projection of the centre (which lies on the simplex): w_d = 0.15 and the 0.1 moved onto d is
# taken equally from the three others (they stay inside their bounds).
REC_ARGMAX = np.array([0.4 - 0.1 / 3, 0.3 - 0.1 / 3, 0.25 - 0.1 / 3, 0.15])


def _noisy_bowl_optimizer(n: int, noise: float, random_state: int) -> MixtureOptimizer:
    opt = MixtureOptimizer(REC_TASKS, n_seeds=n, random_state=random_state, bounds=REC_BOUNDS)
    rng = np.random.default_rng(random_state)
    for p in opt.ask(n):
        d = weights(p, REC_TASKS) - REC_CENTRE
        opt.tell(p, 1.0 - 20.0 * float(d @ d) + rng.normal(0.0, noise))
    return opt


def test_recommend_finds_the_known_maximiser_where_best_does_not() -> None:
    opt = _noisy_bowl_optimizer(n=150, noise=0.001, random_state=2)
    rec = opt.recommend()
    assert rec is not None and rec.source == "posterior_mean"
    w = weights(rec.proposal, REC_TASKS)
    assert abs(w.sum() - 1.0) < 1e-9
    assert all(REC_BOUNDS[t][0] <= rec.proposal[t] <= REC_BOUNDS[t][1] for t in REC_TASKS)
    assert np.abs(w - REC_ARGMAX).max() < 1e-3
    assert rec.proposal["d"] == pytest.approx(0.15, abs=1e-9)  # the active bound, exactly
    best, _ = opt.best()
    assert np.abs(weights(best, REC_TASKS) - REC_ARGMAX).max() > 1e-2  # the luckiest trial is elsewhere
    # Predicted mean and sd agree with the true value 1 - 20 * 0.01333 at the maximiser.
    true_max = 1.0 - 20.0 * float((REC_ARGMAX - REC_CENTRE) @ (REC_ARGMAX - REC_CENTRE))
    assert rec.sd is not None and 0 < rec.sd < 0.05
    assert abs(rec.mean - true_max) < 3 * rec.sd
    mean, sd = opt.predict([rec.proposal])
    assert (rec.mean, rec.sd) == (pytest.approx(mean[0]), pytest.approx(sd[0]))


def test_noise_sd_estimates_the_observation_noise() -> None:
    for noise in (0.01, 0.02):
        opt = _noisy_bowl_optimizer(n=150, noise=noise, random_state=0)
        estimate = opt.noise_sd()
        assert estimate is not None and 0.7 * noise < estimate < 1.3 * noise, (noise, estimate)


def test_a_known_noise_sd_holds_on_few_trials_and_yields_to_many() -> None:
    """``noise_sd`` centres the noise prior: 8 noisy trials keep it, 150 trials move it."""

    def run(n: int, true_noise: float, amplitude: float, noise_sd: float, rs: int) -> MixtureOptimizer:
        opt = MixtureOptimizer(REC_TASKS, n_seeds=n, random_state=rs, bounds=REC_BOUNDS, noise_sd=noise_sd)
        rng = np.random.default_rng(100 + rs)
        for p in opt.ask(n):
            d = weights(p, REC_TASKS) - REC_CENTRE
            opt.tell(p, 1.0 - amplitude * float(d @ d) + rng.normal(0.0, true_noise))
        return opt

    for rs in range(3):  # a weak signal under seed-like noise, as in a short trial
        estimate = run(8, 0.02, 2.0, 0.02, rs).noise_sd()
        assert estimate is not None and 0.7 * 0.02 < estimate < 1.3 * 0.02, (rs, estimate)
    # A prior twice too large gives way to 150 observations of noise 0.01.
    estimate = run(150, 0.01, 20.0, 0.02, 0).noise_sd()
    assert estimate is not None and 0.7 * 0.01 < estimate < 1.3 * 0.01, estimate
    restored = MixtureOptimizer.from_state_dict(
        json.loads(json.dumps(run(8, 0.02, 2.0, 0.02, 0).state_dict()))
    )
    assert restored.prior_noise_sd == 0.02
    for bad in (0, -0.1, float("nan"), True):
        with pytest.raises(ValueError, match="noise_sd"):
            MixtureOptimizer(REC_TASKS, noise_sd=bad)


def test_recommend_survives_the_state_round_trip() -> None:
    opt = _noisy_bowl_optimizer(n=40, noise=0.01, random_state=1)
    opt.ask(2)  # pending proposals are not observations: they must not change the answer
    rec = opt.recommend()
    restored = MixtureOptimizer.from_state_dict(json.loads(json.dumps(opt.state_dict())))
    again = restored.recommend()
    assert again == rec
    assert restored.noise_sd() == opt.noise_sd()
    # Asking afterwards is unaffected by having recommended (same proposals as the original).
    assert restored.ask(1) == opt.ask(1)


def test_recommend_falls_back_to_best_observed() -> None:
    opt = MixtureOptimizer(TASKS, n_seeds=3, random_state=0)
    assert opt.recommend() is None and opt.noise_sd() is None
    p = opt.ask(3)
    opt.tell(p[0], None)
    opt.tell(p[1], 0.4)
    rec = opt.recommend()
    assert rec is not None and rec.source == "best_observed"
    assert (rec.proposal, rec.mean, rec.sd) == (p[1], 0.4, None)
    assert opt.noise_sd() is None


def test_recommend_picks_the_better_categorical_and_a_rounded_int() -> None:
    hps = {
        "pool": {"type": "categorical", "choices": ["mean", "cls"]},
        "layers": {"type": "int", "low": 1, "high": 9},
    }
    opt = MixtureOptimizer(["a", "b", "c"], n_seeds=60, random_state=0, hyperparameters=hps)
    rng = np.random.default_rng(0)
    centre = np.array([0.5, 0.3, 0.2])
    for p in opt.ask(60):
        d = weights(p, ["a", "b", "c"]) - centre
        value = 1.0 - 2.0 * float(d @ d) - 0.02 * (p["layers"] - 6) ** 2 + 0.3 * (p["pool"] == "cls")
        opt.tell(p, value + rng.normal(0.0, 0.01))
    rec = opt.recommend()
    assert rec is not None
    assert rec.proposal["pool"] == "cls" and rec.proposal["layers"] == 6
    assert np.abs(weights(rec.proposal, ["a", "b", "c"]) - centre).max() < 0.05


def test_streams_are_an_argument_not_part_of_the_state() -> None:
    """Streams keyed by the optimizer's random_state are its default (same proposals); the state holds
    none, and a state that still holds an acquisition stream's key loads as the default streams."""
    from mixopt.optimizer.seeding import RandomStreams

    f = bowl(TASKS, 5)
    given = MixtureOptimizer(TASKS, n_seeds=4, random_state=3, streams=RandomStreams(3))
    default = MixtureOptimizer(TASKS, n_seeds=4, random_state=3)
    assert run(given, f, 6) == run(default, f, 6)
    state = json.loads(json.dumps(given.state_dict()))
    assert "acquisition_stream" not in state["config"] and "streams" not in state["config"]
    state["config"]["acquisition_stream"] = 1
    assert MixtureOptimizer.from_state_dict(state).ask(2) == default.ask(2)
    with pytest.raises(ValueError, match="streams are keyed by random_state 4, the optimizer's is 3"):
        MixtureOptimizer(TASKS, random_state=3, streams=RandomStreams(4))
