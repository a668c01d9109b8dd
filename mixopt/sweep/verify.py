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
from typing import Any

from mixopt.config import Experiment
from mixopt.sweep.common import State, atomic_write, fit_tuner, top_weights
from mixopt.tracking import STAGE, STATUS, TRIAL_ID, SweepTracker, mixture_params

PLAN_FILE = "verify_plan.json"
PLAN_FORMAT = "mixopt.verify_plan"
PLAN_VERSION = 1
ARMS = ("recommended", "baseline")
LEVEL = 0.95


# --------------------------------------------------------------------------- the recommendation


def recommendation_record(opt: Any) -> dict[str, Any] | None:
    """The optimizer's recommendation as plain JSON: proposal, predicted mean and sd, the fitted
    noise sd and the best observed trial (for comparison). None when no trial succeeded."""
    rec = opt.recommend()
    if rec is None:
        return None
    best = opt.best()
    return {
        "proposal": rec.proposal,
        "mean_pred": rec.mean,
        "sd_pred": rec.sd,
        "source": rec.source,
        "noise_sd": opt.noise_sd(),
        "best_observed": {"proposal": best[0], "objective": best[1]} if best else None,
    }


def baseline_proposal(
    exp: Experiment, opt: Any, recommended: Mapping[str, Any]
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
        import numpy as np

        from mixopt.space import project_capped_simplex

        uniform = np.full(len(tasks), 1.0 / len(tasks))
        w = project_capped_simplex(uniform, space.lower, space.upper)
        weights = {t: float(x) for t, x in zip(tasks, w)}
        source = "uniform" if np.allclose(w, uniform) else "uniform (projected onto the search bounds)"
    return {**weights, **hyper}, source


# --------------------------------------------------------------------------- the plan


def make_plan(
    exp: Experiment, opt: Any, record: Mapping[str, Any], used_seeds: Sequence[int]
) -> dict[str, Any]:
    """Which trials verify: the same N seeds for both arms, none used by a search trial."""
    recommended = record["proposal"]
    baseline, source = baseline_proposal(exp, opt, recommended)
    start = max([exp.trainer.seed - 1, *used_seeds]) + 1
    seeds = [start + j for j in range(exp.verify.seeds)]
    same = _same_trial(opt, recommended, baseline)
    trials = []
    if not same:
        for j, seed in enumerate(seeds):  # interleaved, so that pairs finish together
            for arm, proposal in (("recommended", recommended), ("baseline", baseline)):
                trials.append(
                    {"trial_id": f"verify-{arm[0]}{j:02d}", "arm": arm, "seed": seed, "proposal": proposal}
                )
    return {
        "format": PLAN_FORMAT,
        "version": PLAN_VERSION,
        "recommendation": dict(record),
        "baseline": {"proposal": baseline, "source": source},
        "same": same,
        "seeds": seeds,
        "trials": trials,
    }


def _same_trial(opt: Any, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    from mixopt.space import NEAR_IDENTICAL

    try:
        return opt.space.distance(a, b) < NEAR_IDENTICAL
    except (KeyError, ValueError):
        return False


def load_or_make_plan(
    path: Path, exp: Experiment, opt: Any, record: Mapping[str, Any], used_seeds: Sequence[int]
) -> dict[str, Any]:
    """The persisted plan if there is one (a resumed sweep), else a new one, written atomically
    before any verification trial starts."""
    if path.exists():
        plan = json.loads(path.read_text())
        if plan.get("format") != PLAN_FORMAT or plan.get("version") != PLAN_VERSION:
            raise ValueError(f"{path}: not a mixopt verification plan (version {PLAN_VERSION})")
        return plan
    plan = make_plan(exp, opt, record, used_seeds)
    atomic_write(path, json.dumps(plan, indent=1))
    return plan


# --------------------------------------------------------------------------- the statistics


def paired_interval(diffs: Sequence[float], level: float = LEVEL) -> tuple[float, float | None, float | None]:
    """Mean of the paired differences and its two-sided t interval (None, None for n < 2)."""
    from scipy import stats

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

    plan: dict[str, Any]
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


def summarise(plan: Mapping[str, Any], outcomes: Mapping[str, tuple[str, float | None]]) -> VerifyResult:
    """Pair the finished trials by seed and compute the interval. ``outcomes``: trial id ->
    (MLflow status, objective)."""
    result = VerifyResult(dict(plan))
    by_seed: dict[int, dict[str, float]] = {}
    for t in plan["trials"]:
        status, value = outcomes.get(t["trial_id"], ("MISSING", None))
        if status == "FINISHED" and value is not None and math.isfinite(value):
            by_seed.setdefault(int(t["seed"]), {})[t["arm"]] = value
        else:
            result.failed.append(t["trial_id"])
    result.pairs = [
        (s, v["recommended"], v["baseline"]) for s, v in sorted(by_seed.items()) if len(v) == len(ARMS)
    ]
    if result.pairs:
        result.diff, result.ci_low, result.ci_high = paired_interval([r - b for _, r, b in result.pairs])
    result.line = summary_line(plan, result)
    return result


def summary_line(plan: Mapping[str, Any], r: VerifyResult) -> str:
    """The sweep's last line: the verdict, the difference, its 95% interval and how many pairs."""
    if plan["same"]:
        return (
            "recommended mixture equals the baseline (" + plan["baseline"]["source"] + "): nothing to verify"
        )
    planned = len(plan["seeds"])
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


def run_verification(
    exp: Experiment,
    tracker: SweepTracker,
    state: State,
    storage: Path,
    trainable: Any,
    concurrent: int,
    make_callback: Any,
    printer_cls: Any,
    verbose: bool,
) -> VerifyResult | None:
    """Plan (or reload the plan), run the verification trials not yet recorded, and summarise.

    ``trainable`` is the sweep's Tune trainable (the same worker function as the search),
    ``make_callback(printer)`` the sweep's MLflow callback. Returns None when there is nothing to
    recommend (no successful search trial).
    """

    parent_id = tracker.parent_id
    assert parent_id is not None
    path = storage / PLAN_FILE
    if path.exists():
        plan = load_or_make_plan(path, exp, state.optimizer, {}, [])
    else:
        record = recommendation_record(state.optimizer)
        if record is None:
            if verbose:
                print("[mixopt] verification skipped: no search trial succeeded", flush=True)
            return None
        plan = load_or_make_plan(path, exp, state.optimizer, record, used_search_seeds(tracker, parent_id))

    runs = verify_runs(tracker, parent_id)
    todo: list[dict[str, Any]] = []
    for t in plan["trials"]:
        run = runs.get(t["trial_id"])
        if run is not None and run.data.tags.get(STATUS) in ("FINISHED", "FAILED"):
            tracker.close_recorded(run)
            continue
        todo.append({**t, "run_id": run.info.run_id if run is not None else None})
    if todo:
        printer = printer_cls(exp.task_names, len(todo), enabled=verbose)
        if verbose:
            print(
                f"[mixopt] verification: recommended ({top_weights(plan['recommendation']['proposal'], exp.task_names)}) "
                f"vs baseline {plan['baseline']['source']} "
                f"({top_weights(plan['baseline']['proposal'], exp.task_names)}), seeds {plan['seeds']}; "
                f"{len(todo)} of {len(plan['trials'])} trials to run",
                flush=True,
            )
        searcher = _fixed_searcher(todo, tracker, exp, printer)
        fit_tuner(exp, trainable, searcher, len(todo), concurrent, make_callback(printer), storage, "verify")
    runs = verify_runs(tracker, parent_id)
    outcomes = {
        tid: (run.data.tags.get(STATUS, "RUNNING"), run.data.metrics.get("objective"))
        for tid, run in runs.items()
    }
    return summarise(plan, outcomes)


def _fixed_searcher(todo: list[dict[str, Any]], tracker: SweepTracker, exp: Experiment, printer: Any):
    """A Tune Searcher over a fixed list of trials (the verification plan's unfinished ones)."""
    from ray.tune.search import Searcher

    class FixedSearcher(Searcher):
        def __init__(self) -> None:
            super().__init__(metric="objective", mode="max")
            self.queue = list(todo)

        def suggest(self, tune_trial_id: str) -> dict | None:
            if not self.queue:
                return Searcher.FINISHED
            t = self.queue.pop(0)
            if t["run_id"] is not None:
                run_id = t["run_id"]
                tracker.restart_trial(
                    run_id,
                    mixture_params(t["proposal"], exp.task_names)
                    | {"origin": "verify", "seed": str(t["seed"]), "verify.arm": t["arm"]},
                )
            else:
                run_id = tracker.start_trial(
                    t["trial_id"],
                    t["proposal"],
                    exp.task_names,
                    "verify",
                    t["seed"],
                    stage="verify",
                    extra_tags={"mixopt.verify_arm": t["arm"]},
                )
                tracker.log_params(run_id, {"verify.arm": t["arm"]})
            printer.started(t["trial_id"], t["arm"][:4], t["proposal"])
            return {"proposal": t["proposal"], "trial_id": t["trial_id"], "run_id": run_id, "seed": t["seed"]}

        def on_trial_complete(
            self, tune_trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            pass  # not told to the optimizer: the recommendation under test must not move

        # Tune checkpoints its searcher; resume itself reads verify_plan.json and MLflow, so the
        # checkpoint only has to hold the trials still queued.
        def save(self, checkpoint_path: str) -> None:
            atomic_write(Path(checkpoint_path), json.dumps(self.queue))

        def restore(self, checkpoint_path: str) -> None:
            self.queue = json.loads(Path(checkpoint_path).read_text())

    return FixedSearcher()


# --------------------------------------------------------------------------- recording it


def log_recommendation(
    tracker: SweepTracker, record: Mapping[str, Any] | None, result: VerifyResult | None, tasks: list[str]
) -> None:
    """Parent-run params, metrics and ``recommended.json``: the recommendation and the verdict."""
    parent_id = tracker.parent_id
    assert parent_id is not None
    if record is None:
        return
    metrics: dict[str, float] = {"recommended.mean_pred": record["mean_pred"]}
    if record.get("sd_pred") is not None:
        metrics["recommended.sd_pred"] = record["sd_pred"]
    if record.get("noise_sd") is not None:
        metrics["gp.noise_sd"] = record["noise_sd"]
    params = {f"recommended.w.{t}": repr(float(record["proposal"][t])) for t in tasks}
    params["recommended.source"] = record["source"]
    doc: dict[str, Any] = {**record}
    if result is not None:
        plan = result.plan
        params |= {
            "verify.seeds": json.dumps(plan["seeds"]),
            "verify.baseline": json.dumps(plan["baseline"]["proposal"], sort_keys=True),
            "verify.baseline_source": plan["baseline"]["source"],
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
            "baseline": plan["baseline"],
            "seeds": plan["seeds"],
            "pairs": [{"seed": s, "recommended": r, "baseline": b} for s, r, b in result.pairs],
            "failed_trials": result.failed,
            "diff": result.diff,
            "ci95": [result.ci_low, result.ci_high],
            "seed_sd": result.seed_sd,
            "summary": result.line,
        }
        tracker.set_tags(parent_id, {"mixopt.verify": result.line[:4000]})
    tracker.log_params(parent_id, params)
    tracker.log_metrics(parent_id, metrics, 0)
    tracker.log_text(parent_id, json.dumps(doc, indent=1), "recommended.json")


def print_recommendation(
    record: Mapping[str, Any] | None, result: VerifyResult | None, tasks: list[str]
) -> None:
    if record is not None:
        weights = ", ".join(f"{t}={record['proposal'][t]:.3f}" for t in tasks)
        hps = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in record["proposal"].items()
            if k not in tasks
        )
        if record["source"] == "posterior_mean":
            pred = f"predicted {record['mean_pred']:.4f} ± {record['sd_pred']:.4f}"
            noise = record.get("noise_sd")
            pred += f"; fitted trial noise sd {noise:.4f}" if noise is not None else ""
            what = "recommended (GP posterior-mean maximiser)"
        else:
            pred = f"observed {record['mean_pred']:.4f}; too few results for the GP"
            what = "recommended (the best observed trial)"
        print(f"[mixopt] {what}: {weights}" + (f"; {hps}" if hps else "") + f" ({pred})", flush=True)
    if result is not None:
        seed_sd = result.seed_sd
        if seed_sd is not None:
            note = ""
            noise = record.get("noise_sd") if record is not None else None
            if noise is not None and noise < 0.5 * seed_sd:
                # The GP took the seed noise for signal: its posterior mean follows lucky trials.
                note = (
                    f"; the GP fitted {noise:.4f}: set optimizer.noise_sd: {seed_sd:.3g} so the next sweep "
                    "does not take seed noise for signal"
                )
            print(f"[mixopt] seed-to-seed sd of the objective (verification, pooled): {seed_sd:.4f}{note}")
        print(f"[mixopt] {result.line}", flush=True)
