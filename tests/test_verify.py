"""The verification stage's parts that need no Ray: the paired interval, the verdict, the plan."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from mixopt.config import experiment_from_dict
from mixopt.optimizer import MixtureOptimizer
from mixopt.optimizer.recommendation import RecommendationRecord, recommendation_record
from mixopt.sweep.verify import (
    PlannedTrial,
    VerifyPlan,
    load_or_make_plan,
    make_plan,
    paired_interval,
    print_recommendation,
    summarise,
)
from mixopt.sweep.warm import optimizer_for

TASKS = ["a", "b", "c"]


def experiment(**over):
    data = {
        "name": "v",
        "tasks": [{"name": t, "kind": "sts", "path": f"/data/{t}"} for t in TASKS],
        "trainer": {"target": "trainers.analytic:train", "seed": 10},
    }
    data.update(over)
    return experiment_from_dict(data)


def fitted_optimizer(exp) -> MixtureOptimizer:
    opt = optimizer_for(exp)
    rng = np.random.default_rng(0)
    for p in opt.ask(max(exp.optimizer.n_seeds, 6)):
        w = np.array([p[t] for t in TASKS])
        opt.tell(p, 1.0 - float(((w - [0.6, 0.3, 0.1]) ** 2).sum()) + rng.normal(0, 0.01))
    return opt


@pytest.mark.parametrize("n", [2, 3, 4, 9])
def test_paired_interval_matches_scipy_ttest_rel(n: int) -> None:
    rng = np.random.default_rng(n)
    rec, base = rng.normal(0.6, 0.05, n), rng.normal(0.55, 0.05, n)
    mean, lo, hi = paired_interval(list(rec - base))
    ci = stats.ttest_rel(rec, base).confidence_interval(0.95)
    assert mean == pytest.approx(float(np.mean(rec - base)))
    assert (lo, hi) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_paired_interval_by_hand() -> None:
    # d = (1, 2, 3): mean 2, s = 1, t_{0.975, 2} = 4.302652729911275 -> 2 +/- 4.3027 / sqrt(3)
    mean, lo, hi = paired_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert (mean, lo, hi) == (2.0, pytest.approx(2 - half), pytest.approx(2 + half))
    assert paired_interval([0.5]) == (0.5, None, None)


def _plan(seeds=(7, 8, 9, 10), same=False):
    trials = tuple(
        PlannedTrial(f"verify-{arm[0]}{j:02d}", arm, s, {})
        for j, s in enumerate(seeds)
        for arm in ("recommended", "baseline")
    )
    return VerifyPlan({}, {}, "uniform", same, tuple(seeds), trials)


def test_verdicts_say_plainly_what_the_interval_says() -> None:
    plan = _plan()
    better = {f"verify-r{j:02d}": ("FINISHED", 0.60 + 0.01 * j) for j in range(4)}
    better |= {f"verify-b{j:02d}": ("FINISHED", 0.55 + 0.011 * j) for j in range(4)}
    r = summarise(plan, better)
    assert r.n == 4 and not r.failed
    assert r.line.startswith("recommended beats baseline by +0.048 (95% CI +0.0")
    assert r.line.endswith(", 4 seeds paired)")
    noisy = {f"verify-r{j:02d}": ("FINISHED", [0.6, 0.5, 0.62, 0.55][j]) for j in range(4)}
    noisy |= {f"verify-b{j:02d}": ("FINISHED", [0.55, 0.56, 0.58, 0.57][j]) for j in range(4)}
    r = summarise(plan, noisy)
    assert r.ci_low < 0 < r.ci_high
    assert r.line.startswith("no significant difference: recommended - baseline = +0.003")
    assert "includes 0, 4 seeds paired)" in r.line
    worse = {k: (s, -v) for k, (s, v) in better.items()}
    assert "WORSE than baseline by -0.048" in summarise(plan, worse).line


def test_seed_sd_pools_the_two_arms_variances() -> None:
    import statistics

    plan = _plan()
    rec, base = [0.6, 0.5, 0.62, 0.55], [0.55, 0.56, 0.58, 0.57]
    out = {f"verify-r{j:02d}": ("FINISHED", rec[j]) for j in range(4)}
    out |= {f"verify-b{j:02d}": ("FINISHED", base[j]) for j in range(4)}
    expected = ((statistics.variance(rec) + statistics.variance(base)) / 2) ** 0.5
    assert summarise(plan, out).seed_sd == pytest.approx(expected, rel=1e-12)
    one = summarise(plan, {"verify-r00": ("FINISHED", 0.6), "verify-b00": ("FINISHED", 0.5)})
    assert one.seed_sd is None


def test_the_sweep_suggests_noise_sd_when_the_measured_noise_is_outside_the_models_range(capsys) -> None:
    plan = _plan()
    rec, base = [0.70, 0.74, 0.72, 0.76], [0.66, 0.69, 0.70, 0.73]
    out = {f"verify-r{j:02d}": ("FINISHED", rec[j]) for j in range(4)}
    out |= {f"verify-b{j:02d}": ("FINISHED", base[j]) for j in range(4)}
    result = summarise(plan, out)
    record = RecommendationRecord.from_json(
        {
            "proposal": {"a": 0.5, "b": 0.3, "c": 0.2},
            "source": "posterior_mean",
            "mean_pred": 0.74,
            "sd_pred": 0.004,
            "trials": 24,
        }
    )
    print_recommendation(
        dataclasses.replace(record, noise_sd=0.002, noise_sd_range=(0.001, 0.004)), result, TASKS
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"[mixopt] {result.line}"  # the verdict stays the last line
    (seed_line,) = [line for line in lines if "seed-to-seed sd of the objective" in line]
    assert f"(verification, pooled): {result.seed_sd:.4f}" in seed_line
    assert f"set optimizer.noise_sd: {result.seed_sd:.3g}" in seed_line
    # A model whose 95 % range holds the measured noise:
    sd = result.seed_sd
    print_recommendation(
        dataclasses.replace(record, noise_sd=sd, noise_sd_range=(sd / 2, 2 * sd)), result, TASKS
    )
    assert "set optimizer.noise_sd" not in capsys.readouterr().out


def test_the_recommended_arms_mean_is_set_beside_the_prediction(capsys) -> None:
    """The line before the verdict: the recommended arm's mean over its seeds with its t interval,
    the prediction, and how many sd of the difference apart they are (hand-computed here)."""
    import statistics

    plan = _plan()
    rec, base = [0.70, 0.74, 0.72, 0.76], [0.66, 0.69, 0.70, 0.73]
    out = {f"verify-r{j:02d}": ("FINISHED", rec[j]) for j in range(4)}
    out |= {f"verify-b{j:02d}": ("FINISHED", base[j]) for j in range(4)}
    result = summarise(plan, out)
    record = RecommendationRecord(
        {"a": 0.5, "b": 0.3, "c": 0.2},
        0.79,
        0.01,
        "posterior_mean",
        0.02,
        None,
        trials=24,
        noise_sd_range=(0.01, 0.04),
    )
    print_recommendation(record, result, TASKS)
    lines = capsys.readouterr().out.strip().splitlines()
    mean, se = statistics.mean(rec), statistics.stdev(rec) / 2
    z = (mean - 0.79) / math.hypot(0.01, se)
    line = lines[-2]
    assert f"on the 4 verification seeds: {mean:.4f} ± {stats.t.ppf(0.975, 3) * se:.4f} (95%)" in line
    assert f"predicted 0.7900 ± 0.0100: {mean - 0.79:+.4f}" in line
    assert f"({z:+.1f} sd)" in line and ("OUTSIDE" if abs(z) > 1.96 else "within") in line


def test_few_trials_say_so_and_how_many_seeds_would_halve_the_interval(capsys) -> None:
    from mixopt.sweep.last_lines import FEW_TRIALS, seeds_to_halve

    record = RecommendationRecord(
        {"a": 0.5, "b": 0.3, "c": 0.2},
        0.75,
        0.012,
        "posterior_mean",
        0.02,
        None,
        trials=6,
        noise_sd_range=(0.005, 0.06),
    )
    print_recommendation(record, None, TASKS)
    first, second = capsys.readouterr().out.strip().splitlines()
    assert "predicted 0.7500 ± 0.0120, 95% 0.7265..0.7735, from 6 trials" in first
    assert "trial noise sd 0.0200 (95% 0.0050..0.0600)" in first
    r = seeds_to_halve(0.012, 0.02)
    assert second.startswith("[mixopt] the prediction rests on 6 trials") and f"{r} seeds" in second
    # r trials of noise sd 0.02 at the mixture halve its posterior sd; one fewer does not (conjugate
    # normal update: precision 1/p^2 + r/s^2).
    assert (1 / 0.012**2 + r / 0.02**2) ** -0.5 <= 0.006 + 1e-12 < (1 / 0.012**2 + (r - 1) / 0.02**2) ** -0.5
    print_recommendation(dataclasses.replace(record, trials=FEW_TRIALS), None, TASKS)
    assert len(capsys.readouterr().out.strip().splitlines()) == 1


def test_failed_trials_drop_their_pair_and_are_counted() -> None:
    plan = _plan()
    out = {f"verify-r{j:02d}": ("FINISHED", 0.6 + 0.01 * j) for j in range(4)}
    out |= {f"verify-b{j:02d}": ("FINISHED", 0.5 + 0.012 * j) for j in range(4)}
    out["verify-b01"] = ("FAILED", None)
    del out["verify-r03"]  # never recorded (e.g. the store lost it)
    r = summarise(plan, out)
    assert [s for s, _, _ in r.pairs] == [7, 9]
    assert sorted(r.failed) == ["verify-b01", "verify-r03"]
    assert r.line.endswith(
        "(95% CI "
        + f"{r.ci_low:+.3f}..{r.ci_high:+.3f}, 2 seeds paired, 2 of 4 pairs incomplete: failed trials)"
    )
    one = summarise(plan, {"verify-r00": ("FINISHED", 0.6), "verify-b00": ("FINISHED", 0.5)})
    assert (
        one.line
        == "recommended - baseline = +0.100 (one seed pair: no interval; 1 seed paired, 3 of 4 pairs incomplete: failed trials)"
    )
    assert summarise(plan, {}).line.startswith("verification inconclusive: none of the 4 seed pairs finished")


def test_plan_pairs_fresh_seeds_and_defaults_the_baseline(tmp_path: Path) -> None:
    # No seed mixture: the baseline is uniform, projected onto the bounds (a >= 0.5 excludes it).
    exp = experiment(search={"bounds": {"a": {"min": 0.5}}}, verify={"seeds": 3})
    opt = fitted_optimizer(exp)
    record = recommendation_record(opt)
    plan = make_plan(exp, opt, record, used_seeds=[10, 11, 12, 13, 14, 15]).to_json()
    assert plan["seeds"] == [16, 17, 18]
    assert plan["baseline"]["source"] == "uniform (projected onto the search bounds)"
    assert plan["baseline"]["proposal"] == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.25})
    assert [(t["arm"], t["seed"]) for t in plan["trials"][:2]] == [("recommended", 16), ("baseline", 16)]
    assert all(t["proposal"] == record.proposal for t in plan["trials"] if t["arm"] == "recommended")
    # Persisted atomically, and a second call (a resumed sweep) reads it back unchanged.
    path = tmp_path / "verify_plan.json"
    first = load_or_make_plan(path, exp, opt, record, [10])
    assert json.loads(path.read_text()) == first.to_json()
    opt.tell(opt.ask(1)[0], 5.0)  # whatever happened since, the plan stays the one recorded
    assert load_or_make_plan(path, exp, opt, recommendation_record(opt), [10, 11]) == first


def test_plan_baseline_from_config_or_first_seed_and_the_same_mixture() -> None:
    seeds = [{"a": 0.2, "b": 0.3, "c": 0.5}]
    exp = experiment(search={"seed_mixtures": seeds}, verify={"seeds": 2})
    opt = fitted_optimizer(exp)
    plan = make_plan(exp, opt, recommendation_record(opt), []).to_json()
    assert plan["baseline"] == {"proposal": seeds[0], "source": "search.seed_mixtures[0]"}
    assert plan["seeds"] == [10, 11]
    exp = experiment(search={"seed_mixtures": seeds}, verify={"baseline": {"a": 0.7, "c": 0.3}})
    plan = make_plan(exp, opt, recommendation_record(opt), []).to_json()
    assert plan["baseline"]["proposal"] == {"a": 0.7, "b": 0.0, "c": 0.3}
    # A recommendation equal to the baseline: nothing to run, and the verdict says why.
    record = dataclasses.replace(recommendation_record(opt), proposal={"a": 0.7, "b": 0.0, "c": 0.3})
    same = make_plan(exp, opt, record, [])
    plan = same.to_json()
    assert plan["same"] and plan["trials"] == []
    assert summarise(same, {}).line.startswith("recommended mixture equals the baseline (verify.baseline)")


# A verify_plan.json as sweeps record it (json.dumps(plan, indent=1)); resumed sweeps read such files.
RECORDED_PLAN = """{
 "format": "mixopt.verify_plan",
 "version": 1,
 "recommendation": {
  "proposal": {
   "a": 0.6,
   "b": 0.3,
   "c": 0.1
  },
  "mean_pred": 0.91,
  "sd_pred": 0.01,
  "source": "posterior_mean",
  "noise_sd": 0.02,
  "best_observed": {
   "proposal": {
    "a": 0.5,
    "b": 0.4,
    "c": 0.1
   },
   "objective": 0.9
  }
 },
 "baseline": {
  "proposal": {
   "a": 0.2,
   "b": 0.3,
   "c": 0.5
  },
  "source": "search.seed_mixtures[0]"
 },
 "same": false,
 "seeds": [
  16
 ],
 "trials": [
  {
   "trial_id": "verify-r00",
   "arm": "recommended",
   "seed": 16,
   "proposal": {
    "a": 0.6,
    "b": 0.3,
    "c": 0.1
   }
  },
  {
   "trial_id": "verify-b00",
   "arm": "baseline",
   "seed": 16,
   "proposal": {
    "a": 0.2,
    "b": 0.3,
    "c": 0.5
   }
  }
 ]
}"""


def test_a_recorded_plan_loads_typed_and_writes_back_the_same_bytes(tmp_path: Path) -> None:
    path = tmp_path / "verify_plan.json"
    path.write_text(RECORDED_PLAN)
    exp = experiment(verify={"seeds": 1})
    plan = load_or_make_plan(path, exp, optimizer_for(exp), {}, [])
    assert plan.seeds == (16,) and plan.baseline_source == "search.seed_mixtures[0]"
    assert plan.recommendation.proposal == {"a": 0.6, "b": 0.3, "c": 0.1}
    assert [(t.trial_id, t.arm, t.seed) for t in plan.trials] == [
        ("verify-r00", "recommended", 16),
        ("verify-b00", "baseline", 16),
    ]
    assert plan.trials[1].proposal == {"a": 0.2, "b": 0.3, "c": 0.5}
    assert json.dumps(plan.to_json(), indent=1) == RECORDED_PLAN
    assert VerifyPlan.from_json(plan.to_json()) == plan
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.same = True  # type: ignore[misc]


def test_a_file_that_is_not_a_plan_is_named(tmp_path: Path) -> None:
    path = tmp_path / "verify_plan.json"
    path.write_text(json.dumps({"format": "something else", "version": 1}))
    exp = experiment()
    with pytest.raises(ValueError, match="verify_plan.json: not a mixopt verification plan"):
        load_or_make_plan(path, exp, optimizer_for(exp), {}, [])
