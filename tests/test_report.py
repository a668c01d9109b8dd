"""``mixopt report`` (issue 33): the figures' numbers against closed forms and naive loops, and the
page built from a real MLflow sqlite store (finished, mid-sweep, warm-started, an old sweep)."""

from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm
from typer.testing import CliRunner

from mixopt.optimizer import MixtureOptimizer
from mixopt.report import analysis, write_report
from mixopt.report.data import load_sweep
from mixopt.report.html import SECTIONS
from mixopt.tracking import STATE_PATH, SweepTracker

pytest.importorskip("plotly")

TASKS = ["a", "b", "c"]
# A known per-task law: score_j(w) = A[j] . w (row j: what training on each task does for task j).
# Task a helps itself and b, hurts c; b helps only itself; c helps c and a a little.
A = np.array(
    [
        [0.9, 0.1, 0.3],  # score a
        [0.6, 0.8, 0.0],  # score b
        [-0.4, 0.0, 0.7],  # score c
    ]
)


# --------------------------------------------------------------------------- Pareto front


def naive_front(s: np.ndarray) -> list[int]:
    out = []
    for a in range(len(s)):
        if np.isnan(s[a]).any():
            continue
        dominated = False
        for b in range(len(s)):
            if b == a or np.isnan(s[b]).any():
                continue
            if all(s[b][k] >= s[a][k] for k in range(s.shape[1])) and any(
                s[b][k] > s[a][k] for k in range(s.shape[1])
            ):
                dominated = True
                break
        if not dominated:
            out.append(a)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_matches_a_naive_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Rounded values: ties and duplicate rows, which a strict-inequality slip would mishandle.
    s = np.round(rng.normal(size=(60, 3)), 1)
    s[rng.integers(60, size=3), rng.integers(3, size=3)] = np.nan
    s[7] = s[8]
    assert analysis.pareto_front(s).tolist() == naive_front(s)


def test_pareto_front_of_two_scores_in_conflict() -> None:
    s = np.array([[1, 0], [0, 1], [0.5, 0.5], [0.4, 0.4], [1, 0]])
    assert analysis.pareto_front(s).tolist() == [0, 1, 2, 4]


# --------------------------------------------------------------------------- moving weight


def test_feasible_step_is_the_largest_step_inside_the_bounds() -> None:
    rng = np.random.default_rng(0)
    lower = np.array([0.05, 0.0, 0.1, 0.0])
    upper = np.array([0.6, 0.5, 1.0, 0.45])
    grid = np.linspace(0, 0.3, 30001)[:, None]
    for _ in range(20):
        r = lower + (1 - lower.sum()) * rng.dirichlet(np.ones(4))
        if (r > upper).any():
            continue
        for i in range(4):
            moved = (1 - grid) * r + grid * np.eye(4)[i]  # every step of the grid at once
            ok = ((moved >= lower - 1e-12) & (moved <= upper + 1e-12)).all(axis=1)
            assert analysis.feasible_step(r, i, 0.3, lower, upper) == pytest.approx(grid[ok].max(), abs=2e-5)


# --------------------------------------------------------------------------- interference


class LinearLaw:
    """A closed-form 'model': score j is exactly ``A[j] . w``, with independent noise of sd
    ``sigma`` at every point (covariance ``sigma^2 I``)."""

    def __init__(self, law: np.ndarray, scores: list[str], sigma: float = 0.0) -> None:
        self.law, self.score_names, self.sigma = law, tuple(scores), sigma
        self.objective_weights = {s: 1.0 / len(scores) for s in scores}

    def predict_joint(self, points, score):
        w = np.array([[p[t] for t in TASKS] for p in points])
        return w @ self.law[self.score_names.index(score)], self.sigma**2 * np.eye(len(points))

    def predict(self, points):
        mu, cov = analysis.composed_joint(self.predict_joint, self.objective_weights)(points)
        return mu, np.sqrt(np.diag(cov))


def test_interference_of_a_linear_law_is_the_closed_form() -> None:
    r = np.array([0.5, 0.3, 0.2])
    sigma, step = 0.01, 0.1
    law = LinearLaw(A, TASKS, sigma)
    eff = analysis.interference(
        law.predict_joint, TASKS, TASKS, dict(zip(TASKS, r)), np.zeros(3), np.ones(3), step
    )
    # Moving d onto task i: D_ij = d (A[j, i] - A[j] . r); the difference of two independent
    # noisy values has sd sigma * sqrt(2).
    expected = np.array([[step * (A[j, i] - A[j] @ r) for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(eff.mean, expected, atol=1e-12)
    np.testing.assert_allclose(eff.sd, sigma * math.sqrt(2), rtol=1e-12)
    np.testing.assert_allclose(eff.p_positive, norm.cdf(expected / (sigma * math.sqrt(2))), atol=1e-12)
    # The sign pattern of the law, read off by hand from A and r = (0.5, 0.3, 0.2):
    # A.r = (0.54, 0.54, -0.06); rows: more a, more b, more c; columns: score a, b, c.
    assert (np.sign(eff.mean) == np.array([[1, 1, -1], [-1, 1, 1], [-1, -1, 1]])).all()


def test_interference_at_a_bound_moves_less_and_not_at_all_when_pinned() -> None:
    law = LinearLaw(A, TASKS)
    upper = np.array([0.5, 1.0, 1.0])
    eff = analysis.interference(
        law.predict_joint, TASKS, TASKS, {"a": 0.5, "b": 0.3, "c": 0.2}, np.zeros(3), upper, 0.1
    )
    assert eff.step[0] == 0 and (eff.mean[0] == 0).all() and (eff.p_positive[0] == 0.5).all()
    assert eff.step[1] == pytest.approx(0.1) and eff.step[2] == pytest.approx(0.1)


def test_composed_joint_weights_means_and_variances() -> None:
    law = LinearLaw(A, TASKS, sigma=0.1)
    pts = [{"a": 0.2, "b": 0.3, "c": 0.5}, {"a": 0.6, "b": 0.2, "c": 0.2}]
    c = {"a": 0.5, "b": 0.5, "c": 0.0}
    mu, cov = analysis.composed_joint(law.predict_joint, c)(pts)
    w = np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])
    np.testing.assert_allclose(mu, w @ (0.5 * A[0] + 0.5 * A[1]))
    np.testing.assert_allclose(cov, (0.25 + 0.25) * 0.01 * np.eye(2))


# --------------------------------------------------------------------------- Sobol indices


@pytest.mark.parametrize("lower", [np.zeros(4), np.array([0.1, 0.2, 0.0, 0.05])])
def test_first_order_indices_of_a_linear_objective_are_the_closed_form(lower: np.ndarray) -> None:
    # Lower bounds only shift and shrink the simplex (W = lo + (1 - sum lo) Y, Y uniform): the
    # indices of a linear f are those of the plain simplex.
    a = np.array([1.0, 0.2, -0.5, 0.3])
    design = analysis.conditional_design(np.random.default_rng(0), 30000, 4, lower, np.ones(4))
    got = analysis.first_order(design @ a)
    np.testing.assert_allclose(got, analysis.linear_sobol_closed_form(a), atol=0.02)


def test_first_order_of_a_task_that_does_nothing_is_zero_never_negative() -> None:
    # f depends on w_a alone (weights b and c interchangeable): their conditional means vary only
    # through what w_b takes from w_a, i.e. a small true index; a constant f gives 0 everywhere.
    rng = np.random.default_rng(3)
    design = analysis.conditional_design(rng, 64, 8, np.zeros(3), np.ones(3))
    noise = rng.normal(size=design.shape[:-1])
    s = analysis.first_order(noise)  # pure noise: no weight explains anything
    assert (s >= 0).all() and (s < 0.1).all()
    assert (analysis.first_order(np.ones(design.shape[:-1])) == 0).all()


def test_linear_closed_form_against_monte_carlo_conditional_variance() -> None:
    # Var(E[f | W_i]) estimated by binning W_i (a naive estimator, independent of the design's).
    a = np.array([0.7, -0.2, 0.4])
    w = np.random.default_rng(1).dirichlet(np.ones(3), size=400000)
    f = w @ a
    for i, s in enumerate(analysis.linear_sobol_closed_form(a)):
        bins = np.minimum((w[:, i] * 200).astype(int), 199)
        means = np.bincount(bins, weights=f, minlength=200) / np.maximum(np.bincount(bins, minlength=200), 1)
        assert np.var(means[bins]) / np.var(f) == pytest.approx(s, abs=0.01)


def test_conditional_design_respects_bounds_and_holds_each_weight() -> None:
    lower, upper = np.array([0.05, 0.0, 0.1]), np.array([0.5, 0.6, 1.0])
    d = analysis.conditional_design(np.random.default_rng(0), 50, 6, lower, upper)
    assert d.shape == (3, 50, 6, 3)
    assert np.allclose(d.sum(axis=-1), 1.0)
    assert (d >= lower - 1e-12).all() and (d <= upper + 1e-12).all()
    for i in range(3):
        assert np.ptp(d[i, :, :, i], axis=1).max() == 0  # W_i held within each group
        assert np.ptp(d[i, :, :, (i + 1) % 3], axis=1).min() > 0  # the others redrawn


def test_weight_importance_of_an_exact_model_has_no_spread() -> None:
    law = LinearLaw(A, TASKS)

    def sample(points, paths, seed):
        mu = np.array([[p[t] for t in TASKS] for p in points]) @ A[0]  # the objective: score a alone
        return np.tile(mu, (paths, 1))

    imp = analysis.weight_importance(sample, TASKS, np.zeros(3), np.ones(3), paths=4, points=24000)
    np.testing.assert_allclose(imp.mean, analysis.linear_sobol_closed_form(A[0]), atol=0.1)
    np.testing.assert_allclose(imp.high - imp.low, 0.0, atol=1e-12)
    assert law.objective_weights  # the law's composition is what the page draws elsewhere


def test_best_so_far_skips_failures() -> None:
    assert analysis.best_so_far([None, 0.2, None, 0.1, 0.5, float("nan")]) == [None, 0.2, 0.2, 0.2, 0.5, 0.5]


# --------------------------------------------------------------------------- the page from MLflow


def _tell(opt: MixtureOptimizer, proposal: dict, scores: dict[str, float]) -> None:
    """Per-score tell where the optimizer has it (issue 34), else the objective as a scalar."""
    if "scores" in inspect.signature(opt.tell).parameters:
        opt.tell(proposal, scores=scores)
    else:
        opt.tell(proposal, float(np.mean(list(scores.values()))))


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    """One sqlite store for the module (creating its tables is most of a small sweep's record time);
    each test records its sweep in an experiment of its own."""
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"


def record_sweep(
    uri: str,
    name: str,
    n: int,
    *,
    running: int = 0,
    warm: dict | None = None,
    verify: bool = True,
    law: np.ndarray = A,
    noise: float = 0.005,
):
    """A sweep recorded as the sweep records it (real optimizer, real sqlite MLflow store), the
    trials scored by ``law`` (default ``A``) plus Gaussian noise of sd ``noise``; the last
    ``running`` trials left RUNNING."""
    from mixopt.optimizer.recommendation import recommendation_record
    from mixopt.sweep.verify import VerifyPlan, log_recommendation, summarise

    tmp_path = Path(uri[len("sqlite:///") :]).parent / name
    tmp_path.mkdir()
    opt = MixtureOptimizer(TASKS, n_seeds=4, random_state=0)
    if warm is not None:
        opt.warm_start(warm, name="earlier/run")
    tracker = SweepTracker(uri, name)
    parent = tracker.start_sweep(name, params={"tasks": ",".join(TASKS)}, artifacts={})
    state_path = tmp_path / "optimizer_state.json"
    tracker.set_tags(parent, {STATE_PATH: str(state_path)})
    rng = np.random.default_rng(0)
    for k in range(n):
        (p,) = opt.ask()
        run = tracker.start_trial(f"trial-{k:03d}", p, TASKS, opt.origin(p), k)
        if k >= n - running:
            continue
        w = np.array([p[t] for t in TASKS])
        scores = {t: float(law[j] @ w + noise * rng.normal()) for j, t in enumerate(TASKS)}
        _tell(opt, p, scores)
        metrics = {"objective": float(np.mean(list(scores.values())))} | {
            f"score.{t}": v for t, v in scores.items()
        }
        tracker.log_metrics(run, metrics, 10)
        tracker.finish_trial(run, "FINISHED")
    state_path.write_text(json.dumps(opt.state_dict()))
    if running:
        return uri, opt, parent
    record = recommendation_record(opt)
    result = None
    if verify:
        base = {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
        plan = VerifyPlan(record, base, "uniform", False, (101, 102), ())
        result = summarise(plan, {})
        result.pairs = [(101, 0.52, 0.40), (102, 0.50, 0.41)]
        result.diff, result.ci_low, result.ci_high = 0.105, 0.01, 0.2
        result.line = "recommended beats baseline by +0.105 (95% CI +0.010..+0.200, 2 seeds paired)"
    log_recommendation(tracker, record, result, TASKS)
    tracker.end_sweep("FINISHED")
    return uri, opt, parent


def sections(page: str) -> dict[str, str]:
    out = {}
    for key, _ in SECTIONS:
        m = re.search(rf'<section id="{key}".*?</section>', page, flags=re.S)
        assert m is not None, key
        out[key] = m.group(0)
    return out


@pytest.fixture(scope="module")
def finished(uri):
    """One finished sweep of 8 trials with a verification, shared by the tests that only read it."""
    return record_sweep(uri, "finished", 8)


def test_report_of_a_finished_sweep_has_every_section(tmp_path: Path, finished) -> None:
    uri, opt, parent = finished
    out = tmp_path / "r" / "report.html"
    data = write_report(out, uri, "finished")
    assert data.run_id == parent and len(data.trials) == 8
    assert data.trials[0].scores.keys() == set(TASKS)
    page = out.read_text()
    # Self-contained: plotly.js inlined, nothing fetched, so the page opens offline.
    assert re.search(r"<(script|link)\b[^>]*\b(src|href)=", page) is None
    s = sections(page)
    assert "could not be drawn" not in page
    assert "recommended beats baseline by +0.105" in s["verification"] and "101, 102" in s["verification"]
    for k in range(8):
        assert f"trial-{k:03d}" in s["objective"]
    for key in ("objective", "parallel", "importance", "tradeoffs", "line"):
        assert "plotly-graph-div" in s[key], key
    if hasattr(opt, "predict_joint"):
        assert "plotly-graph-div" in s["interference"]
    else:  # an optimizer without per-score models: the section says so
        assert "not available" in s["interference"]


def test_report_mid_sweep_shows_what_is_there(tmp_path: Path, uri: str) -> None:
    record_sweep(uri, "mid", 5, running=2)
    write_report(tmp_path / "r.html", uri, "mid")
    page = (tmp_path / "r.html").read_text()
    s = sections(page)
    assert "still running" in s["verification"]
    assert "2 trial(s) still running" in s["objective"]
    assert "plotly-graph-div" in s["line"]  # 3 finished trials: the model's recommendation now


def test_report_of_a_warm_started_sweep_shows_the_reused_trials(tmp_path: Path, uri: str) -> None:
    earlier = MixtureOptimizer(TASKS, n_seeds=3, random_state=1)
    for p in earlier.ask(3):
        earlier.tell(p, float(np.mean(A @ np.array([p[t] for t in TASKS]))))
    record_sweep(uri, "warm", 2, warm=earlier.state_dict())
    write_report(tmp_path / "r.html", uri, "warm")
    page = (tmp_path / "r.html").read_text()
    s = sections(page)
    assert "warm-started from earlier/run" in page
    for k in range(3):
        assert f"warm-{k:03d}" in s["objective"]


def test_report_cli_refuses_an_unknown_experiment_and_writes_nothing(tmp_path: Path, uri: str) -> None:
    from mixopt.cli import app

    record_sweep(uri, "noverify", 3, verify=False)
    out = tmp_path / "nope.html"
    res = CliRunner().invoke(
        app, ["report", "--experiment", "missing", "--tracking-uri", uri, "--out", str(out)]
    )
    assert res.exit_code == 2 and not out.exists()
    assert res.output.strip().splitlines() == [f"no MLflow experiment 'missing' in {uri}"]
    res = CliRunner().invoke(app, ["report", "--run", "0" * 32, "--tracking-uri", uri, "--out", str(out)])
    assert res.exit_code == 2 and not out.exists() and len(res.output.strip().splitlines()) == 1
    assert f"no sweep run {'0' * 32}" in res.output
    res = CliRunner().invoke(
        app, ["report", "--experiment", "noverify", "--tracking-uri", uri, "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert out.exists() and "sweep run" in res.output
    assert "ran no verification stage" in sections(out.read_text())["verification"]


def test_old_optimizer_reports_without_per_score_sections(finished) -> None:
    """An optimizer told only scalar objectives (an old sweep's): no per-score models, so the
    interference map says so; the importance comes from the objective's own posterior."""
    from mixopt.report.html import render

    store_uri, _, parent = finished
    old = MixtureOptimizer(TASKS, n_seeds=4, random_state=0)
    for p in old.ask(6):
        old.tell(p, float(np.mean(A @ np.array([p[t] for t in TASKS]))))
    s = sections(render(load_sweep(store_uri, run_id=parent), old))
    assert "not available" in s["interference"] and "plotly-graph-div" not in s["interference"]
    assert "plotly-graph-div" in s["importance"] and "From 6 trials" in s["importance"]


def test_interference_from_the_fitted_per_score_models_recovers_the_law(finished) -> None:
    """The optimizer's per-score GPs, told the law ``A`` (plus noise 0.005) at 8 trials: the map's
    confident cells have the law's signs, and the clearly non-zero cells lean the right way."""
    _, opt, _ = finished
    centre = opt.recommend().proposal
    eff = analysis.interference(opt.predict_joint, TASKS, TASKS, centre, np.zeros(3), np.ones(3), 0.1)
    r = np.array([centre[t] for t in TASKS])
    truth = np.array([[0.1 * (A[j, i] - A[j] @ r) for j in range(3)] for i in range(3)])
    sure = (eff.p_positive > 0.95) | (eff.p_positive < 0.05)
    assert (np.sign(eff.mean[sure]) == np.sign(truth[sure])).all(), (eff.mean, truth)
    big = np.abs(truth) > 0.03
    lean = np.where(truth > 0, eff.p_positive > 0.8, eff.p_positive < 0.2)  # the right way, clearly
    assert lean[big].all(), (eff.p_positive, truth)


def _cells(section: str) -> list[str]:
    """The interference heatmap's cell texts, from the figure's JSON in the page."""
    m = re.search(r'"text":(\[\[.*?\]\])', section)
    assert m is not None
    return [c for row in json.loads(m.group(1)) for c in row]


def test_on_a_pure_noise_landscape_the_report_claims_nothing(tmp_path: Path, uri: str) -> None:
    """The mixture does nothing (every score is noise of sd 0.01 around a constant): neither the
    importance nor the interference map may claim an effect, and both say how many trials."""
    from mixopt.report.html import render

    _, opt, parent = record_sweep(uri, "noise", 16, law=np.zeros((3, 3)), noise=0.01)
    s = sections(render(load_sweep(uri, run_id=parent), opt))
    assert "not enough trials to tell" in s["importance"] and "from 16 trials" in s["importance"]
    assert "plotly-graph-div" not in s["importance"]
    if "plotly-graph-div" in s["interference"]:  # drawn for a score: then no cell may claim a sign
        assert all(c.startswith("no evidence") for c in _cells(s["interference"]))
    else:
        assert "not enough trials to tell" in s["interference"]
    assert "16 trials" in s["objective"]


def test_a_known_interference_pattern_with_noise_is_found(tmp_path: Path, uri: str) -> None:
    """The law ``A`` with noise 0.01 on 16 trials: the importance is drawn and every cell the map
    colours has the law's sign at the recommended mixture (closed form), and it colours most."""
    from mixopt.report.html import render

    _, opt, parent = record_sweep(uri, "pattern", 16, noise=0.01)
    s = sections(render(load_sweep(uri, run_id=parent), opt))
    assert "plotly-graph-div" in s["importance"] and "From 16 trials" in s["importance"]
    centre = opt.recommend().proposal
    r = np.array([centre[t] for t in TASKS])
    eff = analysis.interference(opt.predict_joint, TASKS, TASKS, centre, np.zeros(3), np.ones(3), 0.1)
    truth = np.array([[eff.step[i] * (A[j, i] - A[j] @ r) for j in range(3)] for i in range(3)])
    cells = np.array(_cells(s["interference"])).reshape(3, 3)
    claimed = np.array([[not c.startswith("no evidence") for c in row] for row in cells])
    assert claimed.sum() >= 5, cells
    assert (np.sign(eff.mean[claimed]) == np.sign(truth[claimed])).all(), (eff.mean, truth)
