"""``mixopt recommend --verify``: the verification stage for a recommendation made after the sweep.

A recommendation under another composition of the task scores (``mixopt recommend --objective``)
comes from a finished sweep's recorded trials alone; this runs the verification stage
(:mod:`mixopt.sweep.verify`: the recommended mixture and the baseline on the same fresh seeds)
with the trials reporting that composition. It is recorded as the sweep records its own
verification, in a run of role ``recommend`` beside the sweep (tag ``mixopt.sweep_run``: the
sweep), its trials nested under it; the sweep itself is left as it was.
"""

from __future__ import annotations

import json

from mixopt.config import Experiment, ObjectiveConfig, VerifyConfig, dump_experiment
from mixopt.optimizer import MixtureOptimizer
from mixopt.optimizer.recommendation import RecommendationRecord
from mixopt.sweep.callback import SweepCallback
from mixopt.sweep.common import State, storage_dir
from mixopt.sweep.progress import Printer
from mixopt.sweep.searcher import FixedSearcher
from mixopt.sweep.signals import init_ray
from mixopt.sweep.tuner import fit_tuner, make_trainable, max_concurrent
from mixopt.sweep.verify import (
    PLAN_FILE,
    VerifyResult,
    load_or_make_plan,
    log_recommendation,
    print_plan,
    print_recommendation,
    recorded_outcomes,
    summarise,
    unfinished_trials,
    used_search_seeds,
)
from mixopt.tracking import SweepTracker
from mixopt.tracking.tags import CONFIG_ARTIFACT, ROLE_RECOMMEND


def verify_recommendation(
    exp: Experiment,
    sweep_run: str,
    uri: str,
    opt: MixtureOptimizer,
    record: RecommendationRecord,
    address: str | None,
    verbose: bool = True,
) -> VerifyResult:
    """Run the verification stage for ``record`` (made from sweep run ``sweep_run`` of ``exp`` in the
    store at ``uri``, whose optimizer is ``opt``), its trials reporting ``record.objective`` (the
    sweep's own objective when None). Returns the :class:`~mixopt.sweep.verify.VerifyResult`."""
    weights = record.objective if record.objective is not None else dict(opt.objective_weights)
    # An explicit --verify runs the stage even where the sweep turned it off (verify.seeds: 0).
    seeds = exp.verify.seeds or VerifyConfig().seeds
    vexp = exp.model_copy(
        update={
            "objective": ObjectiveConfig(weights=weights),
            "verify": exp.verify.model_copy(update={"seeds": seeds}),
        }
    )
    tracker = SweepTracker(uri, exp.experiment_name)
    parent_id = tracker.start_sweep(
        f"{exp.name}-recommend",
        params={"sweep_run": sweep_run, "objective": json.dumps(weights, sort_keys=True)},
        artifacts={CONFIG_ARTIFACT: dump_experiment(vexp)},
        role=ROLE_RECOMMEND,
    )
    tracker.set_tags(parent_id, {"mixopt.sweep_run": sweep_run})
    storage = storage_dir(vexp, parent_id)
    state = State(opt, storage / "optimizer_state.json")
    status = "KILLED"
    try:
        state.save()
        plan = load_or_make_plan(
            storage / PLAN_FILE, vexp, opt, record, used_search_seeds(tracker, sweep_run)
        )
        todo = unfinished_trials(plan, tracker)
        if todo:
            tasks = vexp.task_names
            printer = Printer(tasks, len(todo), enabled=verbose)
            if verbose:
                print_plan(plan, len(todo), tasks)
            init_ray(address, vexp)
            searcher = FixedSearcher(todo, tracker, tasks, printer)
            callback = SweepCallback(tracker, printer, vexp, state)
            fit_tuner(
                vexp,
                make_trainable(vexp, storage),
                searcher,
                len(todo),
                max_concurrent(vexp),
                callback,
                storage,
                "verify",
            )
        result = summarise(plan, recorded_outcomes(tracker))
        log_recommendation(tracker, record, result, vexp.task_names, opt)
        tracker.wait_for_uploads()
        status = "FINISHED"
    finally:
        tracker.end_sweep(status)
    if verbose:
        print_recommendation(record, result, vexp.task_names, opt)
    return result
