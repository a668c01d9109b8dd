"""The verification stage: does the recommended mixture really beat the one you would pick by hand?

After the search, the optimizer's recommendation (:meth:`MixtureOptimizer.recommend`, the
maximiser of the GP posterior mean) and a baseline mixture (``verify.baseline``, else the first
of ``search.seed_mixtures``, else uniform) are each trained with the *same* N fresh trainer seeds,
seeds no search trial used. Pairing by seed cancels the part of the seed noise the two mixtures
share (data order, initialisation), so the per-seed differences

    d_i = objective(recommended, seed_i) - objective(baseline, seed_i),   i = 1..n

give the paired t interval (Student 1908; the paired-sample t test)

    d_bar +/- t_{0.975, n-1} * s_d / sqrt(n),   s_d the sample sd of the d_i (ddof=1).

If it excludes 0 the recommended mixture is better (or worse) beyond seed noise; if it includes 0
the sweep says so plainly. The verification trials are ordinary trials (MLflow runs nested under
the sweep, tagged ``mixopt.stage=verify``, checkpoints kept, run concurrently by Ray Tune) but are
*not* told to the optimizer: the search is over, and its recommendation must not move while it is
being checked.

Resumable like the search: the plan (recommendation, baseline, seeds, trial ids) is written
atomically to ``verify_plan.json`` beside the optimizer state before any verification trial
starts, and on ``--resume`` it is reloaded and reconciled with MLflow: finished or failed trials
are not run again, a trial that was running runs again in its own MLflow run, the rest start.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from mixopt import atomic
from mixopt.config import Experiment
from mixopt.optimizer.recommendation import RecommendationRecord
from mixopt.space import NEAR_IDENTICAL, project_capped_simplex
from mixopt.sweep.common import top_weights
from mixopt.sweep.last_lines import recommendation_lines, verified_lines
from mixopt.tracking import STAGE, STATUS, TRIAL_ID, SweepTracker
from mixopt.tracking.tags import FAILURE_KIND, INFRASTRUCTURE

if TYPE_CHECKING:
    from mixopt.optimizer import MixtureOptimizer

PLAN_FILE = "verify_plan.json"
PLAN_FORMAT = "mixopt.verify_plan"
PLAN_VERSION = 1
ARMS = ("recommended", "baseline")
LEVEL = 0.95


# --------------------------------------------------------------------------- the baseline


def baseline_proposal(
    exp: Experiment, opt: MixtureOptimizer, recommended: Mapping[str, Any]
) -> tuple[dict[str, Any], str]:
    """The baseline trial and where it comes from.

    Weights: ``verify.baseline``, else the first seed mixture, else uniform (projected onto the
    search bounds, which may exclude it). Hyperparameters: the first seed mixture's as the
    optimizer completed them; otherwise each one's ``default``, else the recommended value, so
    that the comparison is about the mixture.
    """
    tasks = exp.task_names
    space = opt.space
    hyper = {k: v for k, v in recommended.items() if k not in tasks}
    for name, p in space.hyperparameters.items():
        if getattr(p, "default", None) is not None:
            hyper[name] = p.default
    if exp.verify.baseline is not None:
        weights = {t: float(exp.verify.baseline.get(t, 0.0)) for t in tasks}
        source = "verify.baseline"
    elif exp.search.seed_mixtures:
        first = opt.state_dict()["config"]["seed_mixtures"][0]
        weights = {t: float(first[t]) for t in tasks}
        hyper.update({k: v for k, v in first.items() if k not in tasks})
        source = "search.seed_mixtures[0]"
    else:
        uniform = np.full(len(tasks), 1.0 / len(tasks))
        w = project_capped_simplex(uniform, space.lower, space.upper)
        weights = {t: float(x) for t, x in zip(tasks, w)}
        source = "uniform" if np.allclose(w, uniform) else "uniform (projected onto the search bounds)"
    return {**weights, **hyper}, source


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class PlannedTrial:
    """One verification trial: an arm (``recommended`` or ``baseline``) trained with one seed."""

    trial_id: str
    arm: str
    seed: int
    proposal: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "arm": self.arm, "seed": self.seed, "proposal": self.proposal}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlannedTrial:
        return cls(str(data["trial_id"]), str(data["arm"]), int(data["seed"]), dict(data["proposal"]))


@dataclass(frozen=True)
class VerifyPlan:
    """Which trials verify, fixed before the first one starts (``verify_plan.json``).

    ``recommendation``: the optimizer's recommendation at planning time
    (:func:`mixopt.optimizer.recommendation.recommendation_record`), the mixture under test;
    ``baseline``/``baseline_source``: the mixture it is compared with and where that comes from;
    ``same``: the two are one trial (nothing to run); ``seeds``: the N fresh seeds both arms
    train with; ``trials``: the 2N trials, interleaved by seed so that pairs finish together.
    """

    recommendation: RecommendationRecord
    baseline: dict[str, Any]
    baseline_source: str
    same: bool
    seeds: tuple[int, ...]
    trials: tuple[PlannedTrial, ...]

    def to_json(self) -> dict[str, Any]:
        """The plan as the JSON document ``verify_plan.json`` holds (keys in the recorded order)."""
        return {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "recommendation": self.recommendation.to_json(),
            "baseline": {"proposal": self.baseline, "source": self.baseline_source},
            "same": self.same,
            "seeds": list(self.seeds),
            "trials": [t.to_json() for t in self.trials],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VerifyPlan:
        """The plan of a ``verify_plan.json`` document; ValueError if it is not one."""
        if data.get("format") != PLAN_FORMAT or data.get("version") != PLAN_VERSION:
            raise ValueError(f"not a mixopt verification plan (version {PLAN_VERSION})")
        return cls(
            recommendation=RecommendationRecord.from_json(data["recommendation"]),
            baseline=dict(data["baseline"]["proposal"]),
            baseline_source=str(data["baseline"]["source"]),
            same=bool(data["same"]),
            seeds=tuple(int(s) for s in data["seeds"]),
            trials=tuple(PlannedTrial.from_json(t) for t in data["trials"]),
        )


def make_plan(
    exp: Experiment, opt: MixtureOptimizer, record: RecommendationRecord, used_seeds: Sequence[int]
) -> VerifyPlan:
    """Which trials verify: the same N seeds for both arms, none used by a search trial."""
    recommended = record.proposal
    baseline, source = baseline_proposal(exp, opt, recommended)
    start = max([exp.trainer.seed - 1, *used_seeds]) + 1
    seeds = tuple(start + j for j in range(exp.verify.seeds))
    same = _same_trial(opt, recommended, baseline)
    trials = []
    if not same:
        for j, seed in enumerate(seeds):  # interleaved, so that pairs finish together
            for arm, proposal in (("recommended", recommended), ("baseline", baseline)):
                trials.append(PlannedTrial(f"verify-{arm[0]}{j:02d}", arm, seed, proposal))
    return VerifyPlan(record, baseline, source, same, seeds, tuple(trials))


def _same_trial(opt: MixtureOptimizer, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    try:
        return opt.space.distance(a, b) < NEAR_IDENTICAL
    except (KeyError, ValueError):
        return False


def load_or_make_plan(
    path: Path,
    exp: Experiment,
    opt: MixtureOptimizer,
    record: RecommendationRecord | None,
    used_seeds: Sequence[int],
) -> VerifyPlan:
    """The persisted plan if there is one (a resumed sweep), else a new one for ``record``, written
    atomically before any verification trial starts."""
    if path.exists():
        data = json.loads(path.read_text())
        try:
            return VerifyPlan.from_json(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    if record is None:
        raise ValueError(f"{path}: no verification plan recorded, and no recommendation to plan for")
    plan = make_plan(exp, opt, record, used_seeds)
    atomic.write_text(path, json.dumps(plan.to_json(), indent=1))
    return plan


# --------------------------------------------------------------------------- the statistics


def paired_interval(diffs: Sequence[float], level: float = LEVEL) -> tuple[float, float | None, float | None]:
    """Mean of the paired differences and its two-sided t interval (None, None for n < 2)."""
    n = len(diffs)
    if n == 0:
        raise ValueError("paired_interval: no differences")
    mean = math.fsum(diffs) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


@dataclass
class VerifyResult:
    """What the verification stage found (see :func:`summary_line` for its one-line reading)."""

    plan: VerifyPlan
    pairs: list[tuple[int, float, float]] = field(default_factory=list)  # (seed, recommended, baseline)
    failed: list[str] = field(default_factory=list)  # trial ids that failed
    diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    line: str = ""

    @property
    def seed_sd(self) -> float | None:
        """Seed-to-seed sd of the objective at a fixed mixture: the two arms' sample variances over
        their seeds, pooled (each arm is one mixture trained with each seed). None below 2 pairs."""
        if self.n < 2:
            return None
        variances = []
        for values in ([r for _, r, _ in self.pairs], [b for _, _, b in self.pairs]):
            mean = math.fsum(values) / len(values)
            variances.append(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
        return math.sqrt(math.fsum(variances) / len(variances))

    @property
    def n(self) -> int:
        return len(self.pairs)


def summarise(plan: VerifyPlan, outcomes: Mapping[str, tuple[str, float | None]]) -> VerifyResult:
    """Pair the finished trials by seed and compute the interval. ``outcomes``: trial id ->
    (MLflow status, objective)."""
    result = VerifyResult(plan)
    by_seed: dict[int, dict[str, float]] = {}
    for t in plan.trials:
        status, value = outcomes.get(t.trial_id, ("MISSING", None))
        if status == "FINISHED" and value is not None and math.isfinite(value):
            by_seed.setdefault(t.seed, {})[t.arm] = value
        else:
            result.failed.append(t.trial_id)
    result.pairs = [
        (s, v["recommended"], v["baseline"]) for s, v in sorted(by_seed.items()) if len(v) == len(ARMS)
    ]
    if result.pairs:
        result.diff, result.ci_low, result.ci_high = paired_interval([r - b for _, r, b in result.pairs])
    result.line = summary_line(plan, result)
    return result


def summary_line(plan: VerifyPlan, r: VerifyResult) -> str:
    """The sweep's last line: the verdict, the difference, its 95% interval and how many pairs."""
    if plan.same:
        return "recommended mixture equals the baseline (" + plan.baseline_source + "): nothing to verify"
    planned = len(plan.seeds)
    if r.n == 0:
        return f"verification inconclusive: none of the {planned} seed pairs finished (see the failed trials)"
    seeds = f"{r.n} seed{'s' if r.n != 1 else ''} paired" + (
        f", {planned - r.n} of {planned} pairs incomplete: failed trials" if r.n < planned else ""
    )
    if r.ci_low is None or r.ci_high is None:
        return f"recommended - baseline = {r.diff:+.3f} (one seed pair: no interval; {seeds})"
    ci = f"95% CI {r.ci_low:+.3f}..{r.ci_high:+.3f}"
    if r.ci_low > 0:
        return f"recommended beats baseline by {r.diff:+.3f} ({ci}, {seeds})"
    if r.ci_high < 0:
        return f"recommended is WORSE than baseline by {r.diff:+.3f} ({ci}, {seeds})"
    return f"no significant difference: recommended - baseline = {r.diff:+.3f} ({ci} includes 0, {seeds})"


# --------------------------------------------------------------------------- running it


def used_search_seeds(tracker: SweepTracker, parent_id: str) -> list[int]:
    seeds = []
    for run in tracker.trial_runs(parent_id):
        if run.data.tags.get(STAGE) != "verify":
            try:
                seeds.append(int(run.data.params["seed"]))
            except (KeyError, ValueError):
                pass
    return seeds


def verify_runs(tracker: SweepTracker, parent_id: str) -> dict[str, Any]:
    """The verification trials' MLflow runs by trial id (the first run of a trial id is its record)."""
    out: dict[str, Any] = {}
    for run in sorted(tracker.trial_runs(parent_id), key=lambda r: r.info.start_time):
        if run.data.tags.get(STAGE) == "verify":
            out.setdefault(run.data.tags.get(TRIAL_ID, ""), run)
    return out


def unfinished_trials(plan: VerifyPlan, tracker: SweepTracker) -> list[tuple[PlannedTrial, str | None]]:
    """The plan's trials still to run, each with its MLflow run id (None: not started yet).

    A trial MLflow recorded as finished or failed is not run again (its run is closed if a
    killed driver left it open); one that was running, or that failed for the infrastructure (tag
    ``mixopt.failure_kind``), runs again in its own run.
    """
    assert tracker.parent_id is not None
    runs = verify_runs(tracker, tracker.parent_id)
    todo: list[tuple[PlannedTrial, str | None]] = []
    for t in plan.trials:
        run = runs.get(t.trial_id)
        if (
            run is not None
            and run.data.tags.get(STATUS) in ("FINISHED", "FAILED")
            and run.data.tags.get(FAILURE_KIND) != INFRASTRUCTURE
        ):
            tracker.close_recorded(run)
            continue
        todo.append((t, run.info.run_id if run is not None else None))
    return todo


def recorded_outcomes(tracker: SweepTracker) -> dict[str, tuple[str, float | None]]:
    """Each verification trial's MLflow status and objective, by trial id (for :func:`summarise`)."""
    assert tracker.parent_id is not None
    return {
        tid: (run.data.tags.get(STATUS, "RUNNING"), run.data.metrics.get("objective"))
        for tid, run in verify_runs(tracker, tracker.parent_id).items()
    }


# --------------------------------------------------------------------------- recording it


def log_recommendation(
    tracker: SweepTracker,
    record: RecommendationRecord | None,
    result: VerifyResult | None,
    tasks: list[str],
    opt: MixtureOptimizer | None = None,
) -> None:
    """Parent-run params, metrics and ``recommended.json``: the recommendation and the verdict, and
    with ``opt`` the prediction re-made with the verification's seed sd beside the measured mean."""
    parent_id = tracker.parent_id
    assert parent_id is not None
    if record is None:
        return
    metrics: dict[str, float] = {"recommended.mean_pred": record.mean_pred}
    if record.sd_pred is not None:
        metrics["recommended.sd_pred"] = record.sd_pred
    if record.noise_sd is not None:
        metrics["gp.noise_sd"] = record.noise_sd
    params = {f"recommended.w.{t}": repr(float(record.proposal[t])) for t in tasks}
    params["recommended.source"] = record.source
    doc: dict[str, Any] = record.to_json()
    if result is not None:
        plan = result.plan
        params |= {
            "verify.seeds": json.dumps(list(plan.seeds)),
            "verify.baseline": json.dumps(plan.baseline, sort_keys=True),
            "verify.baseline_source": plan.baseline_source,
        }
        metrics["verify.n"] = result.n
        metrics["verify.failed"] = len(result.failed)
        for name in ("diff", "ci_low", "ci_high"):
            value = getattr(result, name)
            if value is not None:
                metrics[f"verify.{name}"] = value
        if result.seed_sd is not None:
            metrics["verify.seed_sd"] = result.seed_sd
        if result.pairs:
            metrics["verify.recommended_mean"] = math.fsum(r for _, r, _ in result.pairs) / result.n
            metrics["verify.baseline_mean"] = math.fsum(b for _, _, b in result.pairs) / result.n
        doc["verification"] = {
            "baseline": {"proposal": plan.baseline, "source": plan.baseline_source},
            "seeds": list(plan.seeds),
            "pairs": [{"seed": s, "recommended": r, "baseline": b} for s, r, b in result.pairs],
            "failed_trials": result.failed,
            "diff": result.diff,
            "ci95": [result.ci_low, result.ci_high],
            "seed_sd": result.seed_sd,
            "summary": result.line,
        }
        checked = verified_lines(record, [r for _, r, _ in result.pairs], result.seed_sd, opt)[1]
        if checked:
            doc["verification"]["prediction"] = checked
            metrics["verify.prediction_z"] = checked["prediction_z"]
        tracker.set_tags(parent_id, {"mixopt.verify": result.line[:4000]})
    tracker.log_params(parent_id, params)
    tracker.log_metrics(parent_id, metrics, 0)
    tracker.log_text(parent_id, json.dumps(doc, indent=1), "recommended.json")


def print_plan(plan: VerifyPlan, n_todo: int, tasks: list[str]) -> None:
    """The stage's first line: what is compared with what, on which seeds, and what is left to run."""
    print(
        f"[mixopt] verification: recommended ({top_weights(plan.recommendation.proposal, tasks)}) "
        f"vs baseline {plan.baseline_source} ({top_weights(plan.baseline, tasks)}), "
        f"seeds {list(plan.seeds)}; {n_todo} of {len(plan.trials)} trials to run",
        flush=True,
    )


def print_recommendation(
    record: RecommendationRecord | None,
    result: VerifyResult | None,
    tasks: list[str],
    opt: MixtureOptimizer | None = None,
) -> None:
    """The sweep's last lines (:mod:`mixopt.sweep.last_lines`): the recommendation with its interval
    and evidence, the verification's seed sd, the recommended arm's measured mean beside the
    prediction, and the verdict last."""
    if record is not None:
        for line in recommendation_lines(record, tasks):
            print(f"[mixopt] {line}", flush=True)
    if result is not None:
        seed_sd = result.seed_sd
        if seed_sd is not None:
            note = ""
            span = record.noise_sd_range if record is not None else None
            if span is not None and not span[0] <= seed_sd <= span[1]:
                # The model's noise missed the measured one: say where the next sweep should start.
                note = (
                    f"; outside the model's 95% range for the trial noise ({span[0]:.4f}..{span[1]:.4f}): set "
                    f"optimizer.noise_sd: {seed_sd:.3g} so the next sweep starts from the measured noise"
                )
            print(f"[mixopt] seed-to-seed sd of the objective (verification, pooled): {seed_sd:.4f}{note}")
        if record is not None:
            for line in verified_lines(record, [r for _, r, _ in result.pairs], result.seed_sd, opt)[0]:
                print(f"[mixopt] {line}", flush=True)
        print(f"[mixopt] {result.line}", flush=True)
