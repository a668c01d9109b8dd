"""Multi-fidelity optimizer: partial results (intermediate reports, trials stopped early) count.

Closed-form objectives ``f(w, s)`` (``s`` the fraction of the step budget) whose maximiser at full
fidelity is known, so each test checks the optimizer against that, not against its own output.
The end-to-end sweep with ASHA (real Ray, real MLflow sqlite) is the slow test at the bottom.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mixopt import MixtureOptimizer
from mixopt.config import OptimizerConfig
from mixopt.sweep.warm import optimizer_for

TASKS = ["a", "b", "c"]
W_STAR = np.array([0.7, 0.2, 0.1])


def h(p: dict) -> float:
    """Full-fidelity objective: a paraboloid on the simplex with its maximum 1 at W_STAR."""
    w = np.array([p[t] for t in TASKS])
    return float(1.0 - 4.0 * np.sum((w - W_STAR) ** 2))


def curve(s: float) -> float:
    """The learning curve every mixture shares: low early in training, 1 at the full budget."""
    return 1.0 - math.exp(-4.0 * s) * (1 - math.exp(-4.0)) - math.exp(-4.0)


def ring(radius: float, n: int) -> list[dict]:
    """``n`` mixtures on a circle of ``radius`` around W_STAR in the simplex's plane."""
    u = np.array([1.0, -1.0, 0.0]) / math.sqrt(2)
    v = np.array([1.0, 1.0, -2.0]) / math.sqrt(6)
    out = []
    for k in range(n):
        a = 2 * math.pi * k / n
        w = W_STAR + radius * (math.cos(a) * u + math.sin(a) * v)
        assert w.min() > 0
        out.append(dict(zip(TASKS, (w / w.sum()).tolist())))
    return out


FULL = [
    {"a": 0.1, "b": 0.1, "c": 0.8},
    {"a": 0.2, "b": 0.7, "c": 0.1},
    {"a": 0.34, "b": 0.33, "c": 0.33},
]


def dist(p: dict) -> float:
    return float(np.linalg.norm(np.array([p[t] for t in TASKS]) - W_STAR))


def told(multi_fidelity: bool, with_partial: bool = True, fidelity_scale: bool = False) -> MixtureOptimizer:
    """Three full-fidelity values far from W_STAR, then eight trials on a ring around it that
    reported only at 30% of their budget: four stopped early, four still running."""
    seeds = FULL + ring(0.12, 8)
    opt = MixtureOptimizer(
        TASKS,
        n_seeds=len(seeds),
        seed_mixtures=seeds,
        beta=0.0,
        multi_fidelity=multi_fidelity,
        fidelity_scale=fidelity_scale,
    )
    asked = opt.ask(len(seeds))
    for p in asked[:3]:
        opt.tell(p, h(p))
    for k, p in enumerate(asked[3:]):
        if not with_partial:
            continue
        value = curve(0.3) * h(p)
        if k % 2:
            opt.tell(p, value, fraction=0.3)  # stopped early (ASHA)
        else:
            opt.tell_partial(p, value, 0.3)  # still running
    return opt


@pytest.mark.parametrize("scale", [False, True], ids=["kernel", "fidelity_scale"])
def test_partial_results_move_the_next_proposal_to_the_optimum(scale: bool) -> None:
    """With beta = 0 the proposal is the arg-max of the full-fidelity posterior mean. Only the
    low-fidelity results point at W_STAR (the full-fidelity ones are all far from it): the
    multi-fidelity GP proposes inside the ring, closer to W_STAR than any trial so far (the ring's
    radius is 0.12); the single-fidelity GP cannot. With the fidelity scale too: partial values at
    one fraction cannot identify its exponent, and its prior must keep them informative."""
    mf = told(multi_fidelity=True, fidelity_scale=scale).ask(1)[0]
    sf = told(multi_fidelity=False).ask(1)[0]
    assert dist(mf) < 0.12, mf
    assert dist(sf) > 0.2, sf
    # Off (the default) means off: the partial results change nothing.
    assert sf == told(multi_fidelity=False, with_partial=False).ask(1)[0]
    rec = told(multi_fidelity=True, fidelity_scale=scale).recommend()
    assert rec is not None and rec.source == "posterior_mean" and dist(rec.proposal) < 0.12


def test_proposals_and_recommend_are_at_full_fidelity() -> None:
    """Learning curves that cross: task ``a`` is learnt fast, ``b`` slowly, so early in training
    ``a``-heavy mixtures look best and at the full budget ``b``-heavy ones are (f below). Many
    low-fidelity results favour ``a``; the answers at s = 1 must favour ``b``."""

    def f(p: dict, s: float) -> float:
        return p["a"] * (1 - math.exp(-20 * s)) * 0.6 + p["b"] * s**2

    seeds = [
        {"a": 0.8, "b": 0.1, "c": 0.1},
        {"a": 0.1, "b": 0.8, "c": 0.1},
        {"a": 0.45, "b": 0.45, "c": 0.1},
        {"a": 0.1, "b": 0.1, "c": 0.8},
        {"a": 0.6, "b": 0.3, "c": 0.1},
        {"a": 0.3, "b": 0.6, "c": 0.1},
        {"a": 0.9, "b": 0.05, "c": 0.05},
        {"a": 0.05, "b": 0.9, "c": 0.05},
    ]
    opt = MixtureOptimizer(TASKS, n_seeds=len(seeds), seed_mixtures=seeds, beta=0.0, multi_fidelity=True)
    asked = opt.ask(len(seeds))
    for p in asked[:4]:
        opt.tell_partial(p, f(p, 0.2), 0.2)
        opt.tell(p, f(p, 1.0))
    for p in asked[4:]:
        opt.tell(p, f(p, 0.2), fraction=0.2)
    assert f(seeds[0], 0.2) > f(seeds[1], 0.2) and f(seeds[1], 1.0) > f(seeds[0], 1.0)
    rec = opt.recommend()
    assert rec is not None and rec.proposal["b"] > rec.proposal["a"], rec
    # predict() is at s = 1: a mixture observed at both fidelities is predicted near its final value.
    mean, _ = opt.predict([seeds[1]])
    assert abs(mean[0] - f(seeds[1], 1.0)) < 0.1 < abs(mean[0] - f(seeds[1], 0.2))
    # best() is over full-fidelity values only (the stopped a-heavy trials are not results).
    best = opt.best()
    assert best is not None and best[1] == pytest.approx(max(f(p, 1.0) for p in seeds[:4]))
    nxt = opt.ask(1)[0]
    assert nxt["b"] > nxt["a"], nxt


def _matern52(a: np.ndarray, b: np.ndarray, lengthscale: float) -> np.ndarray:
    """Matern-5/2 correlation between the rows of ``a`` and ``b`` (the textbook formula)."""
    r = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)) / lengthscale
    return (1 + math.sqrt(5) * r + 5 * r**2 / 3) * np.exp(-math.sqrt(5) * r)


@pytest.mark.parametrize("scale", [False, True], ids=["kernel", "fidelity_scale"])
def test_the_multi_fidelity_kernel_is_the_closed_form(scale: bool) -> None:
    """The multi-fidelity GP's prior covariance is, entry by entry, the formula its docstring gives:
    ``c1 * k_x(w, w') * [s^p s'^p] * k_s(s, s') + c2 * k_t(s, s')`` with Matern-5/2 factors (the
    bracket only with ``fidelity_scale``), evaluated here with numpy from the model's
    hyperparameters (set to distinct values: p 0.8, lengthscales 1.9, 0.7, 0.3, scales 0.6, 1.7)."""
    import torch
    from gpytorch.kernels import MaternKernel

    from mixopt.optimizer.model import FidelityScale, make_mf_gp

    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(3), size=7)
    s = rng.choice([0.2, 0.5, 1.0], size=7)
    x = torch.tensor(np.column_stack([w, s]), dtype=torch.float64)
    y = torch.tensor([[curve(si) * float(1 - 4 * np.sum((wi - W_STAR) ** 2))] for wi, si in zip(w, s)])
    model = make_mf_gp(x, y.double(), 1e-6, 3, fidelity_scale=scale)
    scales = [m for m in model.modules() if isinstance(m, FidelityScale)]
    assert len(scales) == int(scale)
    for m in scales:
        m._set_power(0.8)
    p = 0.8 if scale else 0.0
    mixture, trend = model.covar_module.kernels
    materns = [m for m in mixture.base_kernel.modules() if isinstance(m, MaternKernel)]
    k_x = next(k for k in materns if len(k.active_dims) == 3)
    k_s = next(k for k in materns if k.active_dims.tolist() == [3])
    # distinct values, so that a swapped factor or output scale cannot match by accident
    k_x.lengthscale, k_s.lengthscale, trend.base_kernel.lengthscale = 1.9, 0.7, 0.3
    mixture.outputscale, trend.outputscale = 0.6, 1.7
    with torch.no_grad():
        c1, c2 = float(mixture.outputscale), float(trend.outputscale)
        l_x, l_s, l_t = (float(k.lengthscale) for k in (k_x, k_s, trend.base_kernel))
        got = model.covar_module(x).to_dense().numpy()
    ref = c1 * _matern52(w, w, l_x) * np.outer(s**p, s**p) * _matern52(s[:, None], s[:, None], l_s)
    ref = ref + c2 * _matern52(s[:, None], s[:, None], l_t)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("q", [0.3, 1.2])
def test_the_fitted_scale_follows_how_the_mixture_effect_grows(q: float) -> None:
    """Curves ``curve(s) + s^q * h(w)``: the gaps between mixtures grow like ``s^q``. Fitted on 16
    mixtures' curves at four fractions, the kernel's power p lands nearer q than the other case's
    exponent (0.3 against 1.2), within a factor 1.25 of q, despite the prior's median of 0.5."""
    import torch
    from gpytorch.mlls import ExactMarginalLogLikelihood

    from mixopt.optimizer.model import FidelityScale, fit_mll, make_mf_gp

    rng = np.random.default_rng(1)
    w = rng.dirichlet(np.ones(3), size=16)
    rows = [(wi, si) for wi in w for si in (0.25, 0.5, 0.75, 1.0)]
    x = torch.tensor(np.array([np.append(wi, si) for wi, si in rows]), dtype=torch.float64)
    y = torch.tensor(
        [[curve(si) + si**q * float(1 - 4 * np.sum((wi - W_STAR) ** 2))] for wi, si in rows],
        dtype=torch.float64,
    )
    model = make_mf_gp(x, y, 1e-6, 3, fidelity_scale=True)
    fit_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    p = float(next(m for m in model.modules() if isinstance(m, FidelityScale)).power.detach())
    other = 1.2 if q == 0.3 else 0.3
    assert abs(math.log(p / q)) < abs(math.log(p / other)), p
    assert q / 1.25 < p < q * 1.25, p


def test_fidelity_scale_is_true_or_false() -> None:
    """``fidelity_scale`` is a plain bool: the fitted scale is in the GP exactly when it is True,
    and any other value, the removed ``"auto"`` included, is refused with what to give instead."""
    from mixopt.optimizer.model import FidelityScale

    for scale in (False, True):
        fitted = told(multi_fidelity=True, fidelity_scale=scale)._surrogate.fitted()
        assert fitted is not None
        assert any(isinstance(m, FidelityScale) for m in fitted.model.modules()) is scale
    with pytest.raises(ValueError, match="true or false"):
        MixtureOptimizer(TASKS, multi_fidelity=True, fidelity_scale="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="true or false, got 'auto'"):
        MixtureOptimizer(TASKS, multi_fidelity=True, fidelity_scale="auto")  # type: ignore[arg-type]


def test_a_state_saved_with_auto_loads_with_the_scale_off() -> None:
    """States written while ``fidelity_scale: "auto"`` existed (the multi-fidelity default) load
    with the scale off (the migration in mixopt.optimizer.ledger) and continue as a new optimizer
    with ``fidelity_scale=False`` told the same results."""
    opt = told(multi_fidelity=True)
    old = json.loads(json.dumps(opt.state_dict()))
    old["config"]["fidelity_scale"] = "auto"
    back = MixtureOptimizer.from_state_dict(old)
    assert back.fidelity_scale is False
    assert back.ask(2) == opt.ask(2)


def test_state_round_trip_keeps_partial_results() -> None:
    opt = told(multi_fidelity=True)
    state = json.loads(json.dumps(opt.state_dict()))
    assert state["config"]["multi_fidelity"] is True
    back = MixtureOptimizer.from_state_dict(state)
    assert back.multi_fidelity
    assert back.partial == opt.partial and len(back.partial) == 8
    assert back.stopped == opt.stopped and len(back.stopped) == 4
    assert back.pending == opt.pending and len(back.pending) == 4
    assert back.ask(2) == opt.ask(2)
    scaled = told(multi_fidelity=True, fidelity_scale=True)
    state = json.loads(json.dumps(scaled.state_dict()))
    assert state["config"]["fidelity_scale"] is True
    assert MixtureOptimizer.from_state_dict(state).fidelity_scale
    assert MixtureOptimizer.from_state_dict(state).ask(2) == scaled.ask(2)
    # A state written before this option existed (no "partial"/"stopped"/"multi_fidelity") loads.
    old = json.loads(json.dumps(MixtureOptimizer(TASKS, n_seeds=2).state_dict()))
    for key in ("partial", "stopped"):
        del old[key]
    del old["config"]["multi_fidelity"]
    del old["config"]["fidelity_scale"]
    assert not MixtureOptimizer.from_state_dict(old).multi_fidelity
    assert not MixtureOptimizer.from_state_dict(old).fidelity_scale


def test_a_final_value_supersedes_the_same_trials_partial_results() -> None:
    """A trial reports at half its budget (twice: the repeat replaces the first), at its last step
    (fraction 1), then its final value. The GP must equal one told only the half-budget report and
    the final value: the fraction-1 report is the same measurement as the final value (not counted
    twice) and the replaced report is gone."""
    seeds = ring(0.12, 5)
    probe = [dict(zip(TASKS, w)) for w in ([0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.8, 0.1, 0.1])]

    def run(extra: bool) -> MixtureOptimizer:
        opt = MixtureOptimizer(TASKS, n_seeds=5, seed_mixtures=seeds, multi_fidelity=True)
        asked = opt.ask(5)
        for p in asked:
            if extra:
                opt.tell_partial(p, 0.0, 0.5)
            opt.tell_partial(p, curve(0.5) * h(p), 0.5)
            if extra:
                opt.tell_partial(p, h(p) - 0.3, 1.0)
            opt.tell(p, h(p))
        return opt

    with_extra, plain = run(True), run(False)
    assert len(with_extra.partial) == 15 and len(plain.partial) == 5
    # The multi-fidelity proposal GP (predict() reports the integrated posterior of the final values).
    m1, s1 = with_extra._surrogate.predict(probe)
    m2, s2 = plain._surrogate.predict(probe)
    np.testing.assert_allclose(m1, m2, rtol=0, atol=1e-6)
    np.testing.assert_allclose(s1, s2, rtol=0, atol=1e-6)
    # The half-budget reports are modelled: a GP told only the final values differs.
    finals = MixtureOptimizer(TASKS, n_seeds=5, seed_mixtures=seeds, multi_fidelity=True)
    for p in finals.ask(5):
        finals.tell(p, h(p))
    assert np.abs(finals._surrogate.predict(probe)[1] - s2).max() > 1e-4


def test_should_stop_a_trial_whose_curve_predicts_a_bad_final_value() -> None:
    """Model-based early stopping against the closed form: every trial follows ``curve(s) * h(w)``.
    Finished trials (their curves at 30 % and 60 %, then their final values) teach the GP how early
    values relate to final ones. A running trial far from W_STAR (final value h = -3.3 against the
    best finished 0.94) must stop after its 30 % report; one near W_STAR (final value 0.99, above
    every finished trial) must not."""
    finished = FULL + ring(0.12, 6)
    good, bad = ring(0.05, 1)[0], {"a": 0.05, "b": 0.05, "c": 0.9}
    seeds = finished + [good, bad]
    opt = MixtureOptimizer(TASKS, n_seeds=len(seeds), seed_mixtures=seeds, multi_fidelity=True)
    asked = opt.ask(len(seeds))
    # Before any trial has finished there is no incumbent to compare with.
    opt.tell_partial(asked[-1], curve(0.3) * h(asked[-1]), 0.3)
    assert opt.should_stop(asked[-1]) is False
    for p in asked[: len(finished)]:
        opt.tell_partial(p, curve(0.3) * h(p), 0.3)
        opt.tell_partial(p, curve(0.6) * h(p), 0.6)
        opt.tell(p, h(p))
    assert h(bad) < -3 and h(good) > max(h(p) for p in finished)
    opt.tell_partial(asked[-2], curve(0.3) * h(asked[-2]), 0.3)
    assert opt.should_stop(asked[-1]) is True
    assert opt.should_stop(asked[-2]) is False
    # A trial with no partial result yet is never stopped on the prior alone.
    fresh = opt.ask(1)[0]
    assert opt.should_stop(fresh) is False
    with pytest.raises(ValueError, match="not pending"):
        opt.should_stop(asked[0])
    with pytest.raises(ValueError, match="multi_fidelity=True"):
        MixtureOptimizer(TASKS).should_stop(asked[0])


def test_partial_tell_errors_and_bookkeeping() -> None:
    opt = MixtureOptimizer(TASKS, n_seeds=4, multi_fidelity=True)
    p, q, r, _ = opt.ask(4)
    for bad in (0.0, 1.5, -0.1, math.nan, True, "0.5"):
        with pytest.raises(ValueError, match="fraction"):
            opt.tell_partial(p, 0.5, bad)
    with pytest.raises(ValueError, match="finite"):
        opt.tell_partial(p, math.nan, 0.5)
    with pytest.raises(ValueError, match="finite float"):
        opt.tell_partial(p, None, 0.5)  # type: ignore[arg-type]
    opt.tell(p, 0.8)
    with pytest.raises(ValueError, match="not pending"):
        opt.tell_partial(p, 0.5, 0.5)
    with pytest.raises(ValueError, match="not pending"):
        opt.tell(p, 0.5, fraction=0.5)
    # A stopped trial is taken (never proposed again), has no full-fidelity value, is not pending.
    opt.tell(q, 0.3, fraction=0.25)
    opt.tell(r, None, fraction=0.1)  # stopped before it reported anything
    assert opt.stopped == [q, r] and q not in opt.pending and opt.best() == (p, 0.8)
    assert [(x, f, v) for x, f, v in opt.partial] == [(q, 0.25, 0.3)]
    assert [x for x, _ in opt.history] == [p]
    # Stopped right after its last report (the usual order: tell_partial, then the stop): one record.
    (s,) = opt.ask(1)
    opt.tell_partial(s, 0.4, 0.5)
    opt.tell(s, 0.4, fraction=0.5)
    assert [(f, v) for x, f, v in opt.partial if x == s] == [(0.5, 0.4)]
    with pytest.raises(ValueError, match="multi_fidelity"):
        MixtureOptimizer(TASKS, multi_fidelity="yes")  # type: ignore[arg-type]


def test_the_config_option_reaches_the_optimizer() -> None:
    from mixopt.config import (
        EarlyStopping,
        Experiment,
        SweepConfig,
        TaskConfig,
        TrainerConfig,
    )

    assert OptimizerConfig().multi_fidelity is None  # unset: follows sweep.early_stopping.enabled

    def exp(stopping: bool = False, **kw) -> Experiment:
        return Experiment(
            name="mf",
            tasks=[TaskConfig(name=t, kind="retrieval", path=f"/data/{t}") for t in TASKS],
            optimizer=OptimizerConfig(**kw),
            trainer=TrainerConfig(target="trainers.analytic:train"),
            sweep=SweepConfig(early_stopping=EarlyStopping(enabled=stopping)),
        )

    # (optimizer.multi_fidelity, early stopping enabled) -> the optimizer's multi_fidelity
    table = {
        (None, False): False,
        (None, True): True,
        (True, False): True,
        (True, True): True,
        (False, False): False,
        (False, True): False,
    }
    for (setting, stopping), expected in table.items():
        e = exp(stopping, multi_fidelity=setting)
        assert e.multi_fidelity is expected, (setting, stopping)
        assert optimizer_for(e).multi_fidelity is expected, (setting, stopping)
    assert optimizer_for(exp(True, fidelity_scale=True)).fidelity_scale is True
    # unset: off, with the multi-fidelity GP or without it
    assert optimizer_for(exp(True)).fidelity_scale is False
    assert optimizer_for(exp(False)).fidelity_scale is False
    with pytest.raises(ValueError, match="needs multi_fidelity=True"):
        MixtureOptimizer(TASKS, fidelity_scale=True)


def test_resume_tells_a_stopped_trial_as_a_partial_result(tmp_path) -> None:
    """A trial ASHA stopped at step 10 of 40 whose tell was lost in a crash: resume's
    reconciliation (real sqlite MLflow) tells it as a partial result at 10/40 with multi-fidelity,
    as a full-fidelity value without (the single-fidelity sweep's behaviour)."""
    from mixopt.sweep.resume import reconcile
    from mixopt.tracking import SweepTracker

    for mf in (True, False):
        opt = MixtureOptimizer(TASKS, n_seeds=4, random_state=0, multi_fidelity=mf)
        p = opt.ask(2)
        tracker = SweepTracker(f"sqlite:///{tmp_path}/mlflow_{mf}.db", "resume_mf")
        parent = tracker.start_sweep("s", {}, {})
        runs = [tracker.start_trial(f"trial-{i:03d}", p[i], TASKS, "seed", 0) for i in range(2)]
        for step, v in ((5, 0.2), (10, 0.3)):
            tracker.log_metrics(runs[0], {"objective": v}, step)
        tracker.finish_trial(runs[0], "FINISHED", tags={"mixopt.stopped_early": "true"})
        tracker.log_metrics(runs[1], {"objective": 0.6}, 40)
        tracker.finish_trial(runs[1], "FINISHED")
        restored = MixtureOptimizer.from_state_dict(json.loads(json.dumps(opt.state_dict())))
        done, reruns, _ = reconcile(restored, tracker, parent, 40, tmp_path)
        assert done == 2 and not reruns and not restored.pending
        if mf:
            assert restored.stopped == [p[0]] and restored.partial == [(p[0], 0.25, 0.3)]
            assert restored.history == [(p[1], 0.6)]
        else:
            assert not restored.stopped and sorted(v for _, v in restored.history) == [0.3, 0.6]


def analytic_mf_sweep(tmp_path, data_dir, report_every: int, max_trials: int, **early_stopping):
    """A multi-fidelity sweep of the analytic trainer (40 steps, a report every ``report_every``,
    2 trials at a time, 4 seeds) with ``sweep.early_stopping`` enabled as given; its summary.
    ``optimizer.multi_fidelity`` is left unset: early stopping turns it on."""
    from test_sweep import write_experiment

    from mixopt.config import load_experiment
    from mixopt.sweep import run_sweep

    path = write_experiment(
        tmp_path,
        data_dir,
        trainer={
            "target": "trainers.analytic:train",
            "steps": 40,
            "report_every": report_every,
            "seconds_per_step": 0.05,
        },
        optimizer={"n_seeds": 4, "max_trials": max_trials, "max_concurrent": 2},
        sweep={"early_stopping": {"enabled": True, **early_stopping}},
    )
    return run_sweep(load_experiment(path), verbose=False)


@pytest.mark.slow
def test_sweep_with_asha_feeds_partial_results(tmp_path, data_dir, ray_local) -> None:
    """A real sweep (local Ray, sqlite MLflow, analytic trainer reporting every 5 of 40 steps,
    ASHA): the saved optimizer state holds the running trials' partial results, the trials ASHA
    stopped are partial results at the step they reached (not full-fidelity values), and the
    trials that ran to the end are told their final objective."""
    from test_sweep import trial_runs  # the sweep tests' helpers (tests/ is on sys.path)

    summary = analytic_mf_sweep(tmp_path, data_dir, 5, max_trials=8, grace_period=5, reduction_factor=2)
    assert summary.finished == 8
    client, parents, children = trial_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert parents[0].data.params["multi_fidelity"] == "True"  # unset: early stopping turned it on
    assert parents[0].data.params["fidelity_scale"] == "False"  # unset: off
    state = json.loads((summary.storage_dir / "optimizer_state.json").read_text())
    opt = MixtureOptimizer.from_state_dict(state)
    assert opt.multi_fidelity and not opt.pending
    assert state["config"]["fidelity_scale"] is False and opt.fidelity_scale is False
    stopped = [c for c in children if c.data.tags.get("mixopt.stopped_early") == "true"]
    assert stopped and len(stopped) < len(children)  # ASHA cut some trials short, not all
    n_stopped = 0
    for c in children:
        p = json.loads(c.data.tags["mixopt.proposal"])
        logged = {m.step: m.value for m in client.get_metric_history(c.info.run_id, "objective")}
        last_step = max(logged)
        # Every report before the final one is a partial result at step / 40, with the objective
        # MLflow logged at that step.
        mine = [(f, v) for q, f, v in opt.partial if q == p]
        assert mine and all(
            round(f * 40) in logged and v == pytest.approx(logged[round(f * 40)]) for f, v in mine
        )
        assert {round(f * 40) for f, _ in mine} >= {s for s in logged if s < 40}
        if c.info.run_id in {r.info.run_id for r in stopped} and last_step < 40:
            # Stopped by ASHA: a partial result at the fraction it reached, not a full-fidelity value.
            n_stopped += 1
            assert p in opt.stopped and p not in [q for q, _ in opt.history]
            assert max(mine) == pytest.approx((last_step / 40, c.data.metrics["objective"]))
        else:
            # Ran to the budget (a stop at the last rung, step 40, is the full budget too).
            assert p not in opt.stopped
            assert [v for q, v in opt.history if q == p] == [pytest.approx(c.data.metrics["objective"])]
    assert n_stopped == len(opt.stopped) > 0


@pytest.mark.slow
def test_sweep_with_gp_early_stopping(tmp_path, data_dir, ray_local) -> None:
    """``sweep.early_stopping.method: gp`` in a real sweep (local Ray, sqlite MLflow, analytic
    trainer reporting every 10 of 40 steps): trials the GP predicts cannot win are stopped, never
    before the grace period and never before a trial has finished; each report is told once (the
    scheduler and the searcher both see it); stopped trials are partial results, the others are
    told their final objective."""
    from test_sweep import trial_runs  # the sweep tests' helpers (tests/ is on sys.path)

    summary = analytic_mf_sweep(tmp_path, data_dir, 10, max_trials=10, method="gp", grace_period=10)
    assert summary.finished == 10
    client, _, children = trial_runs(f"sqlite:///{tmp_path}/mlflow.db")
    opt = MixtureOptimizer.from_state_dict(
        json.loads((summary.storage_dir / "optimizer_state.json").read_text())
    )
    assert not opt.pending
    stopped = [c for c in children if c.data.tags.get("mixopt.stopped_early") == "true"]
    assert stopped, "no trial was stopped: the analytic tasks' mixtures differ by far more than the noise"
    first_end = min(c.info.end_time for c in children if c not in stopped)
    for c in children:
        p = json.loads(c.data.tags["mixopt.proposal"])
        steps = sorted(m.step for m in client.get_metric_history(c.info.run_id, "objective"))
        mine = [round(f * 40) for q, f, _ in opt.partial if q == p]
        assert len(mine) == len(set(mine)), f"a report was told twice: {mine}"
        if c in stopped:
            assert p in opt.stopped and p not in [q for q, _ in opt.history]
            assert 10 <= steps[-1] < 40 and c.info.end_time >= first_end
        else:
            assert steps[-1] == 40 and [v for q, v in opt.history if q == p] == [
                pytest.approx(c.data.metrics["objective"])
            ]
