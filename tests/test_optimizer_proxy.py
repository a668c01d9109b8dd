"""Proxy observations as a second information source (``tell_proxy``; mixopt/optimizer/sources.py).

References independent of the code: the ICM posterior written out in numpy from the fitted
hyperparameters (Matern-5/2 times a 2 x 2 source covariance, a mean and a noise per source), and
closed-form score laws whose maximiser is known, against which a proxy that is the law plus a
constant must make the trained-source posterior better than the trained trials alone.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mixopt.optimizer import MixtureOptimizer

TASKS = ("a", "b", "c")


def laws(w: np.ndarray) -> dict[str, float]:
    """Per-task scores of a mixture: saturating in the own weight, with one interaction."""
    a, b, c = (float(x) for x in w)
    return {
        "a": 0.6 * math.sqrt(a) + 0.1 * b,
        "b": 0.5 * b - 0.35 * b * b + 0.05,
        "c": 0.3 * math.sqrt(c) * (1 - a),
    }


def objective(w: np.ndarray) -> float:
    return float(np.mean(list(laws(w).values())))


def grid(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(3), n)


BEST = max(objective(w) for w in grid(20000, 99))


def mixture(opt: MixtureOptimizer, w: np.ndarray) -> dict[str, float]:
    return opt.space.check_proposal(dict(zip(TASKS, (float(x) for x in w))), "test")


def build(proxy: bool, seed: int = 0, n_trained: int = 5, bias: float = -0.06) -> MixtureOptimizer:
    """``n_trained`` trained trials with seed noise (sd 0.01 per score); with ``proxy`` 24 proxy
    scores at other mixtures equal to the laws plus ``bias``."""
    opt = MixtureOptimizer(TASKS, n_seeds=n_trained, random_state=seed)
    rng = np.random.default_rng(seed + 100)
    for p in opt.ask(n_trained):
        w = np.array([p[t] for t in TASKS])
        opt.tell(p, scores={k: v + rng.normal(0, 0.01) for k, v in laws(w).items()})
    if proxy:
        for w in grid(24, seed + 200):
            opt.tell_proxy(mixture(opt, w), scores={k: v + bias for k, v in laws(w).items()})
    return opt


def test_the_trained_source_posterior_is_the_closed_form_icm_posterior() -> None:
    """predict() equals the numpy ICM posterior at the fitted hyperparameters."""
    opt = build(proxy=True)
    model = opt._surrogate.fitted().model
    x_train = model.train_inputs[0].detach().numpy()
    y = model.train_targets.detach().numpy()  # standardised
    src = x_train[:, -1].astype(int)
    ls = float(model.covar_module.kernels[0].lengthscale.detach())
    b = model.covar_module.kernels[1].covar_matrix.to_dense().detach().numpy()
    means = np.array([float(m.constant.detach()) for m in model.mean_module.base_means])
    noise = model.likelihood.noise.detach().numpy().reshape(-1)
    y_mean = float(model.outcome_transform.means.reshape(-1)[0])
    y_std = float(model.outcome_transform.stdvs.reshape(-1)[0])

    def matern(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
        r = np.sqrt(((x1[:, None, :] - x2[None, :, :]) ** 2).sum(-1)) / ls
        return (1 + math.sqrt(5) * r + 5.0 / 3.0 * r * r) * np.exp(-math.sqrt(5) * r)

    xs = x_train[:, :3]
    k = matern(xs, xs) * b[src][:, src] + np.diag(noise[src])
    test = grid(6, 7)
    ks = matern(test, xs) * b[1][src][None, :]
    mu = means[1] + ks @ np.linalg.solve(k, y - means[src])
    var = b[1, 1] - np.einsum("ij,ji->i", ks, np.linalg.solve(k, ks.T))
    got_mean, got_sd = opt._surrogate.predict([mixture(opt, w) for w in test])  # the two-source GP
    np.testing.assert_allclose(got_mean, y_mean + y_std * mu, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(got_sd, y_std * np.sqrt(var), rtol=1e-5, atol=1e-8)


def test_a_shifted_proxy_improves_the_trained_posterior() -> None:
    """Proxy = the laws plus a constant (-0.06), 5 noisy trained trials, 4 seeds: the trained-source
    posterior mean is closer to the laws (root-mean-square error over random mixtures, mean over
    the seeds, below 0.6x the trained-only GP's), the recommendation's true regret is lower (median
    over seeds), and the proxy's bias does not leak into the trained-source mean."""
    test = grid(300, 5)
    truth = np.array([objective(w) for w in test])
    errs: dict[bool, list[float]] = {False: [], True: []}
    regrets: dict[bool, list[float]] = {False: [], True: []}
    for seed in range(4):
        for proxy in (False, True):
            opt = build(proxy, seed=seed)
            mean, _ = opt._surrogate.predict([mixture(opt, w) for w in test])  # the two-source GP
            errs[proxy].append(float(np.sqrt(np.mean((mean - truth) ** 2))))
            rec = opt.recommend()
            assert rec is not None
            regrets[proxy].append(BEST - objective(np.array([rec.proposal[t] for t in TASKS])))
            if proxy:
                assert abs(float(np.mean(mean - truth))) < 0.02  # the -0.06 bias stays with the proxy
    assert np.mean(errs[True]) < 0.6 * np.mean(errs[False]), errs
    assert np.median(regrets[True]) < np.median(regrets[False]), regrets


def test_proxy_observations_are_not_trials_and_survive_a_state_round_trip() -> None:
    opt = build(proxy=True)
    assert len(opt.history) == 5 and not opt.pending and len(opt.proxy_history) == 24
    assert opt.best()[1] == max(v for _, v in opt.history)  # a proxy is never the best trial
    restored = MixtureOptimizer.from_state_dict(json.loads(json.dumps(opt.state_dict())))
    assert restored.proxy_history == opt.proxy_history
    test = [mixture(opt, w) for w in grid(4, 3)]
    np.testing.assert_array_equal(restored.predict(test)[0], opt.predict(test)[0])
    assert restored.ask(2) == opt.ask(2)


def test_a_rejected_proxy_tell_writes_nothing() -> None:
    opt = build(proxy=False)
    p = mixture(opt, np.array([0.2, 0.3, 0.5]))
    before = json.dumps(opt.state_dict())
    with pytest.raises(ValueError, match="missing|weighted"):
        opt.tell_proxy(p, scores={"a": 0.1})
    with pytest.raises(ValueError, match="value= or scores="):
        opt.tell_proxy(p)
    with pytest.raises(ValueError, match="tell_proxy"):
        opt.tell_proxy({"a": 0.9, "b": 0.9, "c": 0.0}, 0.1)
    assert json.dumps(opt.state_dict()) == before
    mf = MixtureOptimizer(TASKS, multi_fidelity=True)
    with pytest.raises(ValueError, match="multi_fidelity"):
        mf.tell_proxy(p, 0.1)


def test_a_state_without_proxy_data_reads() -> None:
    opt = build(proxy=False)
    state = opt.state_dict()
    del state["proxy"]
    assert MixtureOptimizer.from_state_dict(state).proxy_history == []
