"""``run_sweep``: start or resume a sweep, run its trials with Ray Tune, record the summary."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from mixopt.config import Experiment, dump_experiment
from mixopt.sweep.callback import make_callback, trial_name
from mixopt.sweep.checks import check_data
from mixopt.sweep.common import State, SweepError, SweepSummary, absolute_options, storage_dir
from mixopt.sweep.progress import Printer, print_summary
from mixopt.sweep.resume import reconcile
from mixopt.sweep.searcher import make_searcher
from mixopt.sweep.worker import run_trial
from mixopt.tracking import (
    PROPOSAL,
    STATE_PATH,
    STATUS,
    TRIAL_ID,
    WARM_START,
    SweepTracker,
    recorded_optimizer_state,
)

log = logging.getLogger("mixopt.sweep")


def ray_init(address: str | None, exp: Experiment) -> None:
    import ray

    # Trials use absolute paths; keep Tune from changing the worker's working directory.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Trainers report loss between evaluations without an objective; Tune's strict check (read by
    # the driver's controller) would otherwise end the whole sweep at the first such report.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    # Trial workers log through Tune; per-file progress bars of transformers would only add noise.
    env = {"RAY_CHDIR_TO_TRIAL_DIR": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    for k, v in env.items():
        os.environ.setdefault(k, v)
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
    else:
        ray.init(
            include_dashboard=False,
            runtime_env={"env_vars": env},
            log_to_driver=True,
            configure_logging=True,
            logging_level=logging.WARNING,
        )


def max_concurrent(exp: Experiment) -> int:
    import ray

    if exp.optimizer.max_concurrent:
        return exp.optimizer.max_concurrent
    resources = ray.cluster_resources()
    if exp.resources.gpus > 0:
        return max(1, int(resources.get("GPU", 0) // exp.resources.gpus))
    return max(1, int(resources.get("CPU", 1) // exp.resources.cpus))


def run_sweep(
    exp: Experiment,
    *,
    address: str | None = None,
    resume: bool = False,
    max_trials: int | None = None,
    verbose: bool = True,
) -> SweepSummary:
    """Run (or resume) the sweep of ``exp``; return its summary. See the module docstring."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    from mixopt.optimizer import MixtureOptimizer

    check_data(exp)
    if "://" in exp.storage:
        storage_dir(exp, "x")  # raises the explanation before anything is written
    total = max_trials or exp.optimizer.max_trials
    uri = exp.tracking.resolved_uri()
    tracker = SweepTracker(uri, exp.experiment_name)

    if resume:
        parent_id = tracker.find_unfinished_sweep()
        if parent_id is None:
            raise SweepError(
                f"nothing to resume: experiment {exp.experiment_name!r} in {uri} has no "
                "unfinished sweep; run without --resume to start one"
            )
        run = tracker.client.get_run(parent_id)
        state_path = Path(run.data.tags[STATE_PATH])
        if not state_path.exists():
            raise SweepError(
                f"cannot resume sweep run {parent_id}: its optimizer state {state_path} is missing"
            )
        opt = MixtureOptimizer.from_state_dict(json.loads(state_path.read_text()))
        tracker.reopen_sweep(parent_id)
        storage = state_path.parent
        done, reruns, next_index = reconcile(opt, tracker, parent_id, exp.trainer.steps, storage)
        if verbose:
            print(
                f"[mixopt] resuming sweep {parent_id}: {done} trials recorded, {len(reruns)} interrupted "
                f"(run again), {max(total - done, 0)} to run",
                flush=True,
            )
    else:
        opt = MixtureOptimizer.from_experiment(exp)
        warm = warm_start(opt, exp, uri)
        seeds = json.dumps(list(exp.search.seed_mixtures), indent=1)
        parent_id = tracker.start_sweep(
            exp.name,
            params={
                "max_trials": total,
                "n_seeds": exp.optimizer.n_seeds,
                "beta": exp.optimizer.beta,
                "dirichlet_alpha": exp.optimizer.dirichlet_alpha,
                "trainer": exp.trainer.target,
                "steps": exp.trainer.steps,
                "tasks": ",".join(exp.task_names),
                **warm,
            },
            artifacts={"config.yaml": dump_experiment(exp), "seed_mixtures.json": seeds},
        )
        storage = storage_dir(exp, parent_id)
        state_path = storage / "optimizer_state.json"
        tracker.set_tags(parent_id, {STATE_PATH: str(state_path)})
        if warm:
            tracker.set_tags(parent_id, {WARM_START: warm["warm_start"]})
        done, reruns, next_index = 0, [], 0
    state = State(opt, state_path)
    state.save()

    printer = Printer(exp.task_names, total, enabled=verbose)
    n_to_run = max(total - done, 0)
    t0 = time.monotonic()
    callback = None
    if n_to_run:
        ray_init(address, exp)
        concurrent = max_concurrent(exp)
        searcher = ConcurrencyLimiter(
            make_searcher(state, tracker, exp, n_to_run, reruns, next_index, printer),
            max_concurrent=concurrent,
        )
        callback = make_callback(tracker, printer, exp, state)
        scheduler = None
        if exp.sweep.early_stopping.enabled:
            es = exp.sweep.early_stopping
            scheduler = ASHAScheduler(
                time_attr="mixopt_step",
                metric="objective",
                mode="max",
                max_t=exp.trainer.steps,
                grace_period=es.grace_period,
                reduction_factor=es.reduction_factor,
                # A trial that reaches the budget must still send its final report.
                stop_last_trials=False,
            )
        resources = {"cpu": exp.resources.cpus, "gpu": exp.resources.gpus, **exp.resources.custom}
        trainable = tune.with_resources(
            tune.with_parameters(
                run_trial,
                experiment_json=exp.model_dump_json(),
                options=absolute_options(exp.trainer.options),
                storage_dir=str(storage),
            ),
            resources,
        )
        if verbose:
            print(
                f"[mixopt] sweep {exp.name}: {n_to_run} trials, {concurrent} at a time; MLflow {uri} "
                f"(experiment {exp.experiment_name!r}, run {parent_id}); checkpoints in {storage}",
                flush=True,
            )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=n_to_run,
                max_concurrent_trials=concurrent,
                reuse_actors=True,
                trial_name_creator=trial_name,
                trial_dirname_creator=trial_name,
            ),
            run_config=tune.RunConfig(
                name=f"tune-{int(time.time())}",
                storage_path=str(storage / "tune"),
                verbose=0,
                callbacks=[callback],
                failure_config=tune.FailureConfig(max_failures=exp.sweep.retries),
                progress_reporter=None,
            ),
        )
        tuner.fit()
    wall = time.monotonic() - t0
    return finish(exp, tracker, state, storage, wall, callback, concurrent if n_to_run else 1, verbose)


def warm_start(opt: Any, exp: Experiment, uri: str) -> dict[str, Any]:
    """Apply ``optimizer.warm_start`` to a fresh optimizer; the parent run's params naming the source
    (``{}`` without a warm start). Reused trials have origin "warm" in the optimizer state."""
    cfg = exp.optimizer.warm_start
    if cfg is None:
        return {}
    try:
        if cfg.state is not None:
            source, state = str(cfg.state), json.loads(Path(cfg.state).read_text())
        else:
            state, run_id = recorded_optimizer_state(uri, cfg.experiment)  # type: ignore[arg-type]
            source = f"{cfg.experiment}/{run_id}"
        reused, dropped = opt.warm_start(state, max_removed=cfg.max_removed, name=source)
    except (OSError, LookupError, ValueError) as err:
        raise SweepError(f"optimizer.warm_start: cannot reuse the earlier sweep: {err}") from None
    return {"warm_start": source, "warm_start_reused": reused, "warm_start_dropped": dropped}


def finish(
    exp: Experiment,
    tracker: SweepTracker,
    state: State,
    storage: Path,
    wall: float,
    callback: Any,
    slots: int,
    verbose: bool,
) -> SweepSummary:
    from mixopt import plots

    parent_id = tracker.parent_id
    assert parent_id is not None
    runs = tracker.trial_runs(parent_id)
    summary = SweepSummary(parent_id, exp.experiment_name, tracker.uri, storage, wall_seconds=wall)
    for r in sorted(runs, key=lambda r: r.data.tags.get(TRIAL_ID, "")):
        status = r.data.tags.get(STATUS)
        summary.finished += status == "FINISHED"
        summary.failed += status == "FAILED"
        summary.trials.append(
            {
                "trial_id": r.data.tags.get(TRIAL_ID),
                "status": status,
                "objective": r.data.metrics.get("objective"),
                "run_id": r.info.run_id,
                "proposal": json.loads(r.data.tags[PROPOSAL]),
            }
        )
    summary.best = state.optimizer.best()
    metrics: dict[str, float] = {
        "trials_finished": summary.finished,
        "trials_failed": summary.failed,
        "wall_seconds": wall,
    }
    if summary.best is not None:
        metrics["best_objective"] = summary.best[1]
    if callback is not None:
        summary.idle_fraction = callback.idle_fraction(slots)
        if summary.idle_fraction is not None:
            metrics["slot_idle_fraction"] = summary.idle_fraction
    tracker.log_metrics(parent_id, metrics, 0)
    tracker.log_text(parent_id, json.dumps(state.optimizer.state_dict()), "optimizer_state.json")
    if summary.best is not None:
        tracker.log_text(
            parent_id,
            json.dumps({"proposal": summary.best[0], "objective": summary.best[1]}, indent=1),
            "best.json",
        )
    try:
        import matplotlib.pyplot as plt

        for name, fig in plots.sweep_figures(summary.trials, exp.task_names, state.optimizer).items():
            tracker.log_figure(parent_id, fig, name)
            plt.close(fig)
    except Exception as e:  # a figure must never cost the sweep its record
        log.warning("could not draw the summary figures: %s", e)
    tracker.end_sweep("FINISHED")
    if verbose:
        print_summary(exp, summary)
    return summary
