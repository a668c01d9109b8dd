"""``run_sweep``: start or resume a sweep, run its trials with Ray Tune, verify, record the summary.

:class:`Sweep` holds one sweep's parts (the experiment, its MLflow tracker, the optimizer state,
the storage folder, the printer); ``run_sweep`` checks what can be checked before anything is
recorded, then calls ``Sweep.start``, ``search``, ``verify`` and ``finish`` in turn.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixopt import plots, report
from mixopt.config import Experiment, dump_experiment
from mixopt.optimizer.recommendation import recommendation_record
from mixopt.preflight import PreflightError, run_preflight
from mixopt.sweep.checks import check_data
from mixopt.sweep.common import (
    InfrastructureFailed,
    State,
    StorageFull,
    SweepError,
    SweepFailed,
    SweepInterrupted,
    SweepSummary,
    Terminated,
    one_line,
    storage_dir,
    storage_full_in,
)
from mixopt.sweep.lock import SweepLock
from mixopt.sweep.logs import driver_log, logs_line
from mixopt.sweep.progress import Printer, print_summary, warn
from mixopt.sweep.resume import Reopening, find_resumable, reconcile, recorded_best, reopen, within_budget
from mixopt.sweep.retention import prune_during_sweep
from mixopt.sweep.signals import SIGTERM, init_ray, trap_sigterm
from mixopt.sweep.tuner import (
    CONNECT_TIMEOUT,
    fit_tuner,
    make_trainable,
    max_concurrent,
    ray_connected,
    release_ray,
    wait_for_ray,
)
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
from mixopt.sweep.warm import optimizer_for, warm_line, warm_start
from mixopt.tracking import (
    FAILURE,
    PROPOSAL,
    STAGE,
    STATE_PATH,
    STATUS,
    TRIAL_ID,
    WARM_START,
    SweepTracker,
)
from mixopt.tracking.tags import CONFIG, CONFIG_ARTIFACT, FAILURE_KIND

if TYPE_CHECKING:  # Tune's classes, imported when trials run (see Sweep.search)
    from mixopt.sweep.callback import SweepCallback
    from mixopt.sweep.searcher import FixedSearcher, MixtureSearcher

log = logging.getLogger("mixopt.sweep")


def run_sweep(
    exp: Experiment,
    *,
    address: str | None = None,
    resume: bool = False,
    max_trials: int | None = None,
    verbose: bool = True,
    data_check: str = "full",
    connect_timeout: float = CONNECT_TIMEOUT,
    allow_config_change: bool = False,
) -> SweepSummary:
    """Run (or resume) the sweep of ``exp``; return its summary. See the package docstring.

    ``--resume`` first finds the unfinished sweep, compares the YAML with the config it recorded
    (:func:`mixopt.sweep.resume.find_resumable`; ``allow_config_change`` lets trainer options and
    the like change) and takes the sweep's lock (:mod:`mixopt.sweep.lock`), before anything else
    is read or written. SIGINT and SIGTERM end the sweep alike: :class:`SweepInterrupted`; the
    caller's SIGTERM handler is back in place when this returns.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    ray_was_up = ray_connected()
    SIGTERM.clear()
    trap_sigterm()
    try:
        with driver_log(exp):
            return _run(
                exp, address, resume, max_trials, verbose, data_check, connect_timeout, allow_config_change
            )
    except KeyboardInterrupt as interrupt:
        if SIGTERM.is_set() and not isinstance(interrupt, Terminated):
            raise Terminated() from None  # see trap_sigterm: Ray re-raised it as KeyboardInterrupt
        raise
    finally:
        if not ray_was_up:
            release_ray()  # the Ray this sweep started (or joined) goes with it; a caller's stays up
        if main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _run(
    exp: Experiment,
    address: str | None,
    resume: bool,
    max_trials: int | None,
    verbose: bool,
    data_check: str,
    connect_timeout: float,
    allow_config_change: bool,
) -> SweepSummary:
    """:func:`run_sweep`'s steps, with SIGTERM trapped."""
    reopening = lock = None
    if resume:
        # A new experiment is not created here: SweepTracker creates one only when it is missing,
        # and then there is nothing to resume (find_resumable says so).
        tracker = SweepTracker(exp.tracking.resolved_uri(), exp.experiment_name)
        reopening = find_resumable(exp, tracker, allow_config_change)
        lock = SweepLock(reopening.state_path.parent, reopening.parent_id, "resumed")
        lock.acquire(say=lambda line: print(line, flush=True) if verbose else None)
    try:
        check_before_start(
            exp,
            address,
            resume=resume,
            verbose=verbose,
            data_check=data_check,
            connect_timeout=connect_timeout,
        )
        sweep = Sweep.start(
            exp, address, reopening=reopening, total=max_trials or exp.optimizer.max_trials, verbose=verbose
        )
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if lock is None:
        # A new sweep: its storage folder is its own, but a --resume started while it runs must
        # find it held.
        lock = SweepLock(sweep.storage, sweep.tracker.parent_id or "", "run")
        lock.acquire()
    t0 = time.monotonic()
    # Ctrl-C ends the sweep at once: KeyboardInterrupt reaches this thread instead of Tune's own
    # graceful stop (which would finish the sweep as if complete and point at Tuner.restore).
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    try:
        try:
            sweep.search()
            verification = sweep.verify()
            return sweep.finish(time.monotonic() - t0, verification)
        except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM (Terminated)
            sweep.interrupted()
            term = isinstance(interrupt, Terminated) or SIGTERM.is_set()
            raise SweepInterrupted(
                f"interrupted{' (SIGTERM)' if term else ''}: sweep run {sweep.tracker.parent_id} marked KILLED",
                exit_code=143 if term else 130,
            ) from None
        except SweepError:
            raise  # each says what happened to the sweep run
        except Exception as e:  # the driver's own error: nothing left RUNNING, --resume continues
            reason = one_line(e)
            try:
                sweep.interrupted(reason)
            except Exception as again:
                log.warning("could not mark sweep run %s KILLED: %s", sweep.tracker.parent_id, again)
                raise e from None
            raise SweepInterrupted(
                f"stopped by an error ({reason}): sweep run {sweep.tracker.parent_id} marked KILLED",
                exit_code=1,
            ) from e
    finally:
        lock.release()


def check_before_start(
    exp: Experiment,
    address: str | None,
    *,
    resume: bool,
    verbose: bool,
    data_check: str,
    connect_timeout: float,
) -> None:
    """What is checked before anything is recorded: storage, data, the Ray cluster, the preflight."""
    if "://" in exp.storage:
        storage_dir(exp, "x")  # raises the explanation before anything is written
    report = check_data(exp, mode=data_check)
    for w in report.warnings:
        warn(w)
    if verbose:
        print(f"[mixopt] {report.dev_rows_line()}", flush=True)
        if report.unknown_line():
            print(f"[mixopt] {report.unknown_line()}", flush=True)
    wait_for_ray(address, connect_timeout)  # before anything is recorded
    if exp.sweep.preflight and not resume:
        run_sweep_preflight(exp, address, verbose)
    report.save_cache()


@dataclass
class Sweep:
    """One sweep and its parts, between ``start`` and ``finish``.

    ``tracker`` has the sweep's parent run open; ``state`` is the optimizer and its state file
    (saved after every ask and tell); ``storage`` holds that file, the trials' checkpoints and the
    verification plan; ``printer`` the search's progress lines. ``done``, ``reruns`` and
    ``next_index`` say where a resumed sweep stands (what :func:`mixopt.sweep.resume.reconcile`
    found). :meth:`search` sets ``searcher``, ``callback`` and ``concurrent``.
    """

    exp: Experiment
    tracker: SweepTracker
    state: State
    storage: Path
    printer: Printer
    address: str | None
    verbose: bool
    total: int  # the sweep's trial count as run now (optimizer.max_trials or --max-trials)
    done: int = 0  # trials recorded before a --resume
    reruns: list[tuple[str, str, dict]] = field(default_factory=list)  # interrupted: run again first
    next_index: int = 0  # the next new trial is trial-{next_index:03d}
    # The live Tune parts: the searchers' running trials are marked KILLED on Ctrl-C, the search's
    # callback measured the slots' idle time; the verification reuses the concurrency limit.
    searcher: MixtureSearcher | None = None
    verifier: FixedSearcher | None = None
    callback: SweepCallback | None = None
    concurrent: int = 0
    # Why the search stopped short with no answer to give (a trial hit bad data): the sweep FAILS.
    failure: str | None = None

    @classmethod
    def start(
        cls, exp: Experiment, address: str | None, *, reopening: Reopening | None, total: int, verbose: bool
    ) -> Sweep:
        """Resume the sweep ``reopening`` found (see :func:`mixopt.sweep.resume.find_resumable`), or
        record a new one; the state saved either way. Whatever stops it once the sweep's MLflow run
        exists leaves that run closed with the reason (:func:`_start_failed`)."""
        tracker = SweepTracker(exp.tracking.resolved_uri(), exp.experiment_name)
        try:
            if reopening is not None:
                opt, state_path = reopen(exp, tracker, reopening, verbose)
                storage = state_path.parent
                done, reruns, next_index = reconcile(
                    opt, tracker, tracker.parent_id, exp.trainer.steps, storage, exp.task_names
                )
                if exp.sweep.log_checkpoints:  # uploads a killed driver left undone
                    tracker.upload_missing_checkpoints()
                if exp.storage_keep is not None:  # finish a prune the killed driver left half done
                    prune_during_sweep(tracker, storage, exp.storage_keep, verbose, exp.sweep.log_checkpoints)
                reruns = within_budget(opt, tracker, done, reruns, total)
                if verbose:
                    print(
                        f"[mixopt] resuming sweep {tracker.parent_id}: {done} trials recorded, {len(reruns)} "
                        f"interrupted (run again), {max(total - done, 0)} to run",
                        flush=True,
                    )
            else:
                opt, state_path = _record_new(exp, tracker, total, verbose)
                storage = state_path.parent
                done, reruns, next_index = 0, [], 0
            tracker.show_in_ui(tracker.parent_id, exp.task_names, list(exp.search.hyperparameters))
            # The sweep's trial count as run now (--max-trials, or a resume given more): its last
            # optimizer.exploit_last proposals are exploitation steps.
            opt.budget = total
            state = State(opt, state_path)
            state.save()
            printer = Printer(
                exp.task_names, total, enabled=verbose, already_done=done, best=recorded_best(tracker)
            )
            return cls(
                exp, tracker, state, storage, printer, address, verbose, total, done, reruns, next_index
            )
        except BaseException as e:
            _start_failed(tracker, reopening is not None, e)
            raise

    def search(self) -> None:
        """Run the trials still missing with Ray Tune (none when a resumed sweep has them all)."""
        n_to_run = max(self.total - self.done, 0)
        if not n_to_run:
            return
        # Tune is imported when trials run: `mixopt validate` imports this package's checks.
        from mixopt.sweep.callback import SweepCallback
        from mixopt.sweep.searcher import MixtureSearcher
        from mixopt.sweep.stopping import make_scheduler

        exp = self.exp
        ray_logs = init_ray(self.address, exp)
        # One concurrency limit: Tune's max_concurrent_trials (it wraps the searcher in its own
        # ConcurrencyLimiter; a second one around it would make Tune ignore the first).
        self.concurrent = max_concurrent(exp)
        self.searcher = MixtureSearcher(
            self.state, self.tracker, exp, n_to_run, self.reruns, self.next_index, self.printer
        )
        self.callback = SweepCallback(self.tracker, self.printer, exp, self.state, self.searcher)
        scheduler = make_scheduler(exp, self.searcher)
        trainable = make_trainable(exp, self.storage)
        if self.verbose:
            print(
                f"[mixopt] sweep {exp.name}: {n_to_run} trials, {self.concurrent} at a time; MLflow "
                f"{self.tracker.uri} (experiment {exp.experiment_name!r}, run {self.tracker.parent_id}); "
                f"checkpoints in {self.storage}",
                flush=True,
            )
            print(f"[mixopt] {logs_line(exp, ray_logs)}", flush=True)
        try:
            fit_tuner(
                exp,
                trainable,
                self.searcher,
                n_to_run,
                self.concurrent,
                self.callback,
                self.storage,
                "tune",
                scheduler,
            )
        except Exception as e:
            full = e if isinstance(e, StorageFull) else storage_full_in(e, self.storage)
            if full is None:
                raise
            self.mark_killed(full.reason)
            raise full from None
        self._stop_if_infrastructure(self.callback)
        if self.callback.data_error is not None:
            trial_id, reason = self.callback.data_error
            self.failure = (
                f"{trial_id} failed on bad data ({reason}); no further trial was proposed and sweep run "
                f"{self.tracker.parent_id} is marked FAILED: fix the row and start the sweep again"
            )

    def mark_killed(self, reason: str | None = None) -> None:
        """Mark the sweep run and its running trials (search and verification) KILLED and stop Ray
        (a local Ray and this driver's trial actors go with the driver); ``reason`` goes on the
        sweep run (tag ``mixopt.failure``). The trials keep ``mixopt.status=RUNNING``, so
        ``--resume`` runs them again in their runs. After a full disk under ``storage`` the state is
        not saved again: the one on disk is the last written whole."""
        import ray  # as Tune in search(): not loaded by `mixopt validate`

        self.tracker.wait_for_uploads(drain=False, timeout=60)  # the rest: --resume uploads them
        for searcher in (self.searcher, self.verifier):
            for _trial_id, run_id, _ in list(searcher.live.values() if searcher is not None else []):
                try:
                    self.tracker.client.set_terminated(run_id, status="KILLED")
                except Exception as e:  # the store may be what was interrupted; --resume reconciles it
                    log.warning("could not mark trial run %s KILLED: %s", run_id, e)
        if reason:
            self.tracker.set_tags(self.tracker.parent_id or "", {FAILURE: reason[:4000]})
        self.tracker.end_sweep("KILLED")
        if ray.is_initialized():
            ray.shutdown()

    def _stop_if_infrastructure(self, callback: SweepCallback) -> None:
        """After a stage's trials: if the infrastructure failed one, mark the sweep KILLED and raise
        :class:`InfrastructureFailed` (``--resume`` runs that trial again)."""
        if callback.infrastructure is None:
            return
        trial_id, reason = callback.infrastructure
        self.mark_killed(f"{trial_id} failed for the infrastructure: {reason}")
        raise InfrastructureFailed(
            f"{trial_id} failed for the infrastructure, not its mixture ({reason}); sweep run "
            f"{self.tracker.parent_id} marked KILLED, and the trial runs again on resume",
            exit_code=1,
        )

    def verify(self) -> VerifyResult | None:
        """The verification stage (``verify.seeds`` > 0, see :mod:`mixopt.sweep.verify`): plan it, or
        reload the plan of a resumed sweep; run its trials not yet recorded; pair them by seed.

        None without a stage, or when there is nothing to recommend (no search trial succeeded).
        """
        exp, tracker = self.exp, self.tracker
        if exp.verify.seeds <= 0 or self.failure is not None:
            return None
        # Tune, as in search(): imported when trials run.
        from mixopt.sweep.callback import SweepCallback
        from mixopt.sweep.searcher import FixedSearcher

        init_ray(self.address, exp)
        concurrent = self.concurrent or max_concurrent(exp)
        path = self.storage / PLAN_FILE
        if path.exists():
            plan = load_or_make_plan(path, exp, self.state.optimizer, None, [])
        else:
            record = recommendation_record(self.state.optimizer)
            if record is None:
                if self.verbose:
                    print("[mixopt] verification skipped: no search trial succeeded", flush=True)
                return None
            used = used_search_seeds(tracker, tracker.parent_id)
            plan = load_or_make_plan(path, exp, self.state.optimizer, record, used)
        todo = unfinished_trials(plan, tracker)
        if todo:
            printer = Printer(exp.task_names, len(todo), enabled=self.verbose)
            if self.verbose:
                print_plan(plan, len(todo), exp.task_names)
            self.verifier = FixedSearcher(todo, tracker, exp.task_names, printer)
            callback = SweepCallback(tracker, printer, exp, self.state, verifier=self.verifier)
            trainable = make_trainable(exp, self.storage)
            fit_tuner(exp, trainable, self.verifier, len(todo), concurrent, callback, self.storage, "verify")
            self._stop_if_infrastructure(callback)
        return summarise(plan, recorded_outcomes(tracker))

    def interrupted(self, reason: str | None = None) -> None:
        """After Ctrl-C, SIGTERM or an error of the driver: save the optimizer, then :meth:`mark_killed`."""
        self.state.save()
        self.mark_killed(reason)

    def finish(self, wall: float, verification: VerifyResult | None) -> SweepSummary:
        """Record the summary on the parent run (metrics, state, best, recommendation, figures),
        close it, print the summary; ``wall``: seconds since the search started."""
        exp, tracker, state = self.exp, self.tracker, self.state
        parent_id = tracker.parent_id
        assert parent_id is not None
        runs = [r for r in tracker.trial_runs(parent_id) if r.data.tags.get(STAGE) != "verify"]
        summary = SweepSummary(
            parent_id,
            exp.experiment_name,
            tracker.uri,
            self.storage,
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
                    "failure_kind": r.data.tags.get(FAILURE_KIND) or None,
                }
            )
        summary.best = state.optimizer.best()
        # The verification plan holds the recommendation it tested; otherwise recommend() now. A
        # sweep stopped by bad data recommends nothing: its evidence is a part of what was asked.
        if self.failure is not None:
            summary.recommended = None
        else:
            summary.recommended = (
                verification.plan.recommendation
                if verification is not None
                else recommendation_record(state.optimizer)
            )
        summary.verification = verification
        log_recommendation(tracker, summary.recommended, verification, exp.task_names, state.optimizer)
        metrics: dict[str, float] = {
            "trials_finished": summary.finished,
            "trials_failed": summary.failed,
            "wall_seconds": wall,
        }
        if summary.best is not None:
            metrics["best_objective"] = summary.best[1]
        if self.callback is not None:
            summary.idle_fraction = self.callback.idle_fraction(self.concurrent)
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
            import matplotlib.pyplot as plt  # loaded for the figures only: it takes a second to import

            bounds = {t: (b.min, b.max) for t, b in exp.search.bounds.items()}
            figs = plots.sweep_figures(summary.trials, exp.task_names, state.optimizer, bounds, warn=warn)
            for name, fig in figs.items():
                tracker.log_figure(parent_id, fig, name)
                plt.close(fig)
        except Exception as e:  # a figure must never cost the sweep its record
            warn(f"could not log the summary figures: {type(e).__name__}: {e}")
        # A sweep with no trial that finished, or stopped by bad data, has no answer: FAILED (not
        # resumable; the user fixes the cause and starts again).
        failed = self.failure is not None or (summary.failed > 0 and summary.finished == 0)
        report.log_report(tracker, self.storage, state.optimizer, "FAILED" if failed else "FINISHED", warn)
        tracker.wait_for_uploads()
        if exp.storage_keep is not None and exp.sweep.log_checkpoints:
            # The last uploads are confirmed only now: what storage_keep held back for them goes.
            prune_during_sweep(tracker, self.storage, exp.storage_keep, self.verbose, True)
        tracker.end_sweep("FAILED" if failed else "FINISHED")
        # The end is printed even when quiet (verbose False drops the per-trial lines only).
        print_summary(exp, summary)
        if self.failure is None:
            print_recommendation(summary.recommended, verification, exp.task_names, state.optimizer)
        if self.failure is not None:
            raise SweepFailed(self.failure)
        return summary


def _start_failed(tracker: SweepTracker, resumed: bool, e: BaseException) -> None:
    """A sweep stopped by ``e`` before its first trial, once its MLflow run exists: the run closed
    with the reason (tag ``mixopt.failure``), FAILED when new, KILLED (resumable) when resumed; the
    one-line error to raise instead of ``e`` (a KeyboardInterrupt is left to the caller)."""
    if tracker.parent_id is None:
        return
    reason = "interrupted as it started" if isinstance(e, KeyboardInterrupt) else one_line(e)
    try:
        tracker.set_tags(tracker.parent_id, {FAILURE: reason[:4000]})
        tracker.end_sweep("KILLED" if resumed else "FAILED")
    except Exception as again:
        log.warning("could not close sweep run %s: %s", tracker.parent_id, again)
        return
    if isinstance(e, KeyboardInterrupt):
        return
    if resumed:
        raise SweepError(
            f"could not resume: {reason}; sweep run {tracker.parent_id} is left KILLED: fix the cause, "
            "then --resume again"
        ) from e
    raise SweepFailed(
        f"could not start: {reason}; sweep run {tracker.parent_id} is marked FAILED (no trial ran): fix "
        "the cause, then start the sweep again"
    ) from e


def _record_new(exp: Experiment, tracker: SweepTracker, total: int, verbose: bool) -> tuple[Any, Path]:
    """A new sweep: its optimizer (warm-started if configured, :mod:`mixopt.sweep.warm`), its
    parent run, its state file."""
    opt = optimizer_for(exp)
    warm = warm_start(opt, exp, tracker.uri)
    if warm and verbose:
        print(f"[mixopt] {warm_line(warm, exp)}", flush=True)
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
        artifacts={CONFIG_ARTIFACT: dump_experiment(exp), "seed_mixtures.json": seeds},
    )
    state_path = storage_dir(exp, parent_id) / "optimizer_state.json"
    tracker.set_tags(parent_id, {STATE_PATH: str(state_path), CONFIG: CONFIG_ARTIFACT})
    tracker.trial_tags = {CONFIG: CONFIG_ARTIFACT}
    if warm:
        tracker.set_tags(parent_id, {WARM_START: warm["warm_start"]})
    return opt, state_path


def run_sweep_preflight(exp: Experiment, address: str | None, verbose: bool) -> None:
    """``sweep.preflight``: one worst-case trial on a trial's resources before anything is recorded."""
    init_ray(address, exp)
    try:
        result = run_preflight(
            exp,
            use_ray=True,
            measure_fix=False,  # the sweep refuses a trial that does not fit; measuring the fix would only delay it
            echo=(lambda line: print(f"[mixopt] {line}", flush=True)) if verbose else (lambda line: None),
        )
    except (PreflightError, ValueError) as e:
        raise SweepError(f"preflight: {e}") from None
    if not result.fits:
        fix = result.fix or "the trainer has no memory model to name a fix"
        raise SweepError(f"preflight: the worst-case trial does not fit: {fix}")
