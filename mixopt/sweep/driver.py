"""``run_sweep``: start or resume a sweep, run its trials with Ray Tune, record the summary."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from mixopt.config import Experiment, dump_experiment
from mixopt.sweep.callback import make_callback
from mixopt.sweep.checks import check_data, concurrency_warning, trial_slots
from mixopt.sweep.common import (
    State,
    SweepError,
    SweepInterrupted,
    SweepSummary,
    absolute_options,
    fit_tuner,
    storage_dir,
)
from mixopt.sweep.progress import Printer, print_summary, warn
from mixopt.sweep.resume import reconcile
from mixopt.sweep.searcher import make_searcher
from mixopt.sweep.stopping import make_scheduler
from mixopt.sweep.verify import (
    log_recommendation,
    print_recommendation,
    recommendation_record,
    run_verification,
)
from mixopt.sweep.worker import run_trial
from mixopt.tracking import (
    FAILURE,
    PROPOSAL,
    STAGE,
    STATE_PATH,
    STATUS,
    TRIAL_ID,
    WARM_START,
    SweepTracker,
    recorded_optimizer_state,
)

log = logging.getLogger("mixopt.sweep")


# How long `mixopt sweep --address HOST:PORT` waits for a Ray cluster to answer (seconds).
CONNECT_TIMEOUT = 30.0


def wait_for_ray(address: str | None, timeout: float = CONNECT_TIMEOUT) -> None:
    """Wait (at most ``timeout`` s) until something accepts connections at a Ray address; else SweepError.

    ``ray.init(address=...)`` retries an unreachable cluster for a long time; a TCP probe of the
    cluster's port first turns a wrong address into one line. ``auto`` and no address are left to
    Ray (it answers at once when there is no local cluster).
    """
    import socket

    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address == "auto" or address.startswith("local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return  # not host:port: let Ray interpret it
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(2.0, max(timeout, 0.1))):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise SweepError(
                    f"no Ray cluster answers at {address} (waited {timeout:.0f}s: {e.strerror or e}); "
                    "start one (ray start --head), check the address, or leave out --address to run "
                    "on a local Ray"
                ) from None
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def ray_init(address: str | None, exp: Experiment) -> None:
    import ray

    # Trials use absolute paths; keep Tune from changing the worker's working directory.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Trainers report loss between evaluations without an objective; Tune's strict check (read by
    # the driver's controller) would otherwise end the whole sweep at the first such report.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    _quiet_tune_failures()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    # Trial workers log through Tune; per-file progress bars of transformers would only add noise.
    env = {"RAY_CHDIR_TO_TRIAL_DIR": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    for k, v in env.items():
        os.environ.setdefault(k, v)
    if address:
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
        except ConnectionError as e:
            raise SweepError(f"cannot join the Ray cluster at {address}: {e}") from None
    else:
        ray.init(
            include_dashboard=False,
            runtime_env={"env_vars": env},
            log_to_driver=True,
            configure_logging=True,
            logging_level=logging.WARNING,
        )


class _DropTrialTracebacks(logging.Filter):
    """Tune logs each failed trial's whole Ray traceback (~50 lines); the sweep already prints the
    trainer's one-line reason and keeps the traceback in the trial's MLflow run (failure.txt)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not (
            msg.startswith("Trial task failed for trial") or msg.startswith("Trials did not complete")
        )


def _quiet_tune_failures() -> None:
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTrialTracebacks) for f in logger.filters):
            logger.addFilter(_DropTrialTracebacks())


def max_concurrent(exp: Experiment) -> int:
    """The one concurrency limit (Tune's ``max_concurrent_trials``): the config's, else what fits."""
    import ray

    resources = ray.cluster_resources()
    if exp.optimizer.max_concurrent:
        w = concurrency_warning(exp, resources, "the Ray cluster")
        if w:
            warn(w)
        return exp.optimizer.max_concurrent
    return max(1, trial_slots(exp, resources))


def run_sweep_preflight(exp: Experiment, address: str | None, verbose: bool) -> None:
    """``sweep.preflight``: one worst-case trial on a trial's resources before anything is recorded."""
    from mixopt.preflight import PreflightError, run_preflight

    ray_init(address, exp)
    try:
        result = run_preflight(
            exp,
            use_ray=True,
            echo=(lambda line: print(f"[mixopt] {line}", flush=True)) if verbose else (lambda line: None),
        )
    except (PreflightError, ValueError) as e:
        raise SweepError(f"preflight: {e}") from None
    if not result.fits:
        raise SweepError(f"preflight: the worst-case trial does not fit: {result.fix}")


def run_sweep(
    exp: Experiment,
    *,
    address: str | None = None,
    resume: bool = False,
    max_trials: int | None = None,
    verbose: bool = True,
    data_check: str = "full",
    connect_timeout: float = CONNECT_TIMEOUT,
) -> SweepSummary:
    """Run (or resume) the sweep of ``exp``; return its summary. See the module docstring."""

    from mixopt.optimizer import MixtureOptimizer

    if "://" in exp.storage:
        storage_dir(exp, "x")  # raises the explanation before anything is written
    report = check_data(exp, mode=data_check)
    for w in report.warnings:
        warn(w)
    if verbose:
        print(f"[mixopt] {report.dev_rows_line()}", flush=True)
    wait_for_ray(address, connect_timeout)  # before anything is recorded
    if exp.sweep.preflight and not resume:
        run_sweep_preflight(exp, address, verbose)
    report.save_cache()
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
                # the setting in effect (config.yaml leaves it out when unset: early stopping decides)
                "multi_fidelity": opt.multi_fidelity,
                "fidelity_scale": opt.fidelity_scale,
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
    tracker.show_in_ui(parent_id, exp.task_names, list(exp.search.hyperparameters))
    # The sweep's trial count as run now (--max-trials, or a resume given more): its last
    # optimizer.exploit_last proposals are exploitation steps.
    opt.budget = total
    state = State(opt, state_path)
    state.save()

    printer = Printer(exp.task_names, total, enabled=verbose, already_done=done)
    n_to_run = max(total - done, 0)
    t0 = time.monotonic()
    callback = None
    concurrent = 0  # set by the search; the verification stage reuses it (one warning, not two)
    box: dict[str, Any] = {}  # the searcher, once made: its live trials are marked KILLED on Ctrl-C
    # Ctrl-C ends the sweep at once: KeyboardInterrupt reaches this thread instead of Tune's own
    # graceful stop (which would finish the sweep as if complete and point at Tuner.restore).
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    try:
        if n_to_run:
            _, callback, concurrent = _tune(
                exp,
                address,
                state,
                tracker,
                storage,
                n_to_run,
                reruns,
                next_index,
                printer,
                verbose,
                uri,
                box,
            )
        verification = None
        if exp.verify.seeds > 0:
            ray_init(address, exp)
            verification = run_verification(
                exp,
                tracker,
                state,
                storage,
                make_trainable(exp, storage),
                concurrent or max_concurrent(exp),
                lambda p: make_callback(tracker, p, exp, state),
                Printer,
                verbose,
            )
    except KeyboardInterrupt:
        _interrupted(tracker, state, box.get("searcher"))
        raise SweepInterrupted(
            f"interrupted: sweep run {tracker.parent_id} marked KILLED; continue it with "
            "`mixopt sweep EXPERIMENT.yaml --resume`"
        ) from None
    wall = time.monotonic() - t0
    return finish(
        exp, tracker, state, storage, wall, callback, concurrent if n_to_run else 1, verbose, verification
    )


def make_trainable(exp: Experiment, storage: Path) -> Any:
    """The Tune trainable of every trial (search and verification): ``run_trial`` with resources."""
    from ray import tune

    resources = {"cpu": exp.resources.cpus, "gpu": exp.resources.gpus, **exp.resources.custom}
    return tune.with_resources(
        tune.with_parameters(
            run_trial,
            experiment_json=exp.model_dump_json(),
            options=absolute_options(exp.trainer.options),
            storage_dir=str(storage),
        ),
        resources,
    )


def _interrupted(tracker: SweepTracker, state: State, searcher: Any) -> None:
    """After Ctrl-C: save the optimizer, mark the parent and the running trials KILLED, stop Ray.

    Running trials keep ``mixopt.status=RUNNING``, so ``--resume`` runs them again in their runs.
    """
    import ray

    state.save()
    for _trial_id, run_id, _ in list(getattr(searcher, "live", {}).values()):
        try:
            tracker.client.set_terminated(run_id, status="KILLED")
        except Exception as e:  # the store may be what was interrupted; --resume reconciles it
            log.warning("could not mark trial run %s KILLED: %s", run_id, e)
    tracker.end_sweep("KILLED")
    if ray.is_initialized():
        ray.shutdown()  # a local Ray (and this driver's trial actors) go with the driver


def _tune(
    exp: Experiment,
    address: str | None,
    state: State,
    tracker: SweepTracker,
    storage: Path,
    n_to_run: int,
    reruns: list,
    next_index: int,
    printer: Printer,
    verbose: bool,
    uri: str,
    box: dict[str, Any],
) -> tuple[Any, Any, int]:
    """Run the trials with Ray Tune; return the searcher, the callback and the concurrency limit."""
    parent_id = tracker.parent_id
    ray_init(address, exp)
    concurrent = max_concurrent(exp)
    # One concurrency limit: Tune's max_concurrent_trials (it wraps the searcher in its own
    # ConcurrencyLimiter; a second one around it would make Tune ignore the first).
    searcher = make_searcher(state, tracker, exp, n_to_run, reruns, next_index, printer)
    callback = make_callback(tracker, printer, exp, state)
    scheduler = make_scheduler(exp, searcher)
    trainable = make_trainable(exp, storage)
    if verbose:
        print(
            f"[mixopt] sweep {exp.name}: {n_to_run} trials, {concurrent} at a time; MLflow {uri} "
            f"(experiment {exp.experiment_name!r}, run {parent_id}); checkpoints in {storage}",
            flush=True,
        )
    box["searcher"] = searcher
    fit_tuner(exp, trainable, searcher, n_to_run, concurrent, callback, storage, "tune", scheduler)
    return searcher, callback, concurrent


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
    verification: Any = None,
) -> SweepSummary:
    from mixopt import plots

    parent_id = tracker.parent_id
    assert parent_id is not None
    runs = [r for r in tracker.trial_runs(parent_id) if r.data.tags.get(STAGE) != "verify"]
    summary = SweepSummary(
        parent_id,
        exp.experiment_name,
        tracker.uri,
        storage,
        wall_seconds=wall,
        experiment_id=tracker.experiment_id,
    )
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
                "origin": r.data.params.get("origin"),
                "failure": r.data.tags.get(FAILURE) or None,
            }
        )
    summary.best = state.optimizer.best()
    # The verification plan holds the recommendation it tested; otherwise recommend() now.
    summary.recommended = (
        verification.plan["recommendation"]
        if verification is not None
        else recommendation_record(state.optimizer)
    )
    summary.verification = verification
    log_recommendation(tracker, summary.recommended, verification, exp.task_names)
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

        bounds = {t: (b.min, b.max) for t, b in exp.search.bounds.items()}
        figs = plots.sweep_figures(summary.trials, exp.task_names, state.optimizer, bounds, warn=warn)
        for name, fig in figs.items():
            tracker.log_figure(parent_id, fig, name)
            plt.close(fig)
    except Exception as e:  # a figure must never cost the sweep its record
        warn(f"could not log the summary figures: {type(e).__name__}: {e}")
    tracker.end_sweep("FINISHED")
    if verbose:
        print_summary(exp, summary)
        print_recommendation(summary.recommended, verification, exp.task_names)
    return summary
