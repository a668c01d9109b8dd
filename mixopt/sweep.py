"""The sweep: Ray Tune runs the trials the MixtureOptimizer asks for; MLflow records them all.

Flow (driver process)::

    MixtureOptimizer ──ask──► MixtureSearcher.suggest ──► Tune runs run_trial on a worker
          ▲                                                        │ report(step, metrics)
          └──tell── MixtureSearcher.on_trial_complete ◄────────────┘
                    SweepCallback ──► SweepTracker (MLflow, the only writer)

Nothing is lost: the optimizer state is saved (atomically) after every ask and tell, and every
trial has its MLflow run from the moment it is asked. ``--resume`` after a killed driver rebuilds
the optimizer from that state, reconciles it with MLflow (a trial that finished while the state
was being written is told now; a trial that was running is run again in its own MLflow run), and
runs only what is missing, so the sweep ends with exactly ``max_trials`` finished-or-failed trials.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixopt.config import Experiment, dump_experiment
from mixopt.tracking import CHECKPOINT, PROPOSAL, STATE_PATH, STATUS, TRIAL_ID, SweepTracker

log = logging.getLogger("mixopt.sweep")


class SweepError(RuntimeError):
    """A sweep that cannot start (bad data, nothing to resume...); nothing has been run."""


@dataclass
class SweepSummary:
    parent_run_id: str
    experiment_name: str
    tracking_uri: str
    storage_dir: Path
    finished: int = 0
    failed: int = 0
    best: tuple[dict[str, Any], float] | None = None
    idle_fraction: float | None = None
    wall_seconds: float = 0.0
    trials: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _absolute_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Trainer options that name an existing relative path become absolute: trials run elsewhere."""
    out = {}
    for k, v in options.items():
        if isinstance(v, str) and not os.path.isabs(v) and "://" not in v and Path(v).exists():
            v = str(Path(v).resolve())
        out[k] = v
    return out


def check_data(exp: Experiment, rows: int = 50) -> None:
    """Fail before anything starts if a task file is missing or its first rows are malformed."""
    from mixopt.data import DataError, iter_rows

    problems = []
    for t in exp.tasks:
        for f in (t.train_file, t.dev_file):
            n = 0
            try:
                for n, _ in enumerate(iter_rows(f, t.kind), start=1):
                    if n >= rows:
                        break
            except DataError as e:
                problems.append(f"task {t.name}: {e}")
                continue
            if n == 0:
                problems.append(f"task {t.name}: {f}: the file has no rows")
    if problems:
        raise SweepError("\n".join(problems))


def _top_weights(proposal: Mapping[str, Any], tasks: list[str], n: int = 3) -> str:
    ws = sorted(((proposal[t], t) for t in tasks), reverse=True)[:n]
    return " ".join(f"{t}={w:.2f}" for w, t in ws)


# --------------------------------------------------------------------------- the trial (worker)


def run_trial(
    config: dict[str, Any], experiment_json: str, options: dict[str, Any], storage_dir: str
) -> None:
    """Ray Tune function trainable: one trial of the experiment's trainer.

    Runs on a worker. Reports every trainer report to Tune; the final report carries the
    objective, per-task scores and the checkpoint path. A failure raises, so Tune records it.
    """
    import ray
    from ray import tune

    from mixopt.config import Experiment
    from mixopt.trial import Trial, TrialFailed, load_target

    exp = Experiment.model_validate_json(experiment_json)
    node_id = ray.get_runtime_context().get_node_id()
    proposal = config["proposal"]
    tasks = exp.task_names
    trial = Trial(
        mixture={t: float(proposal[t]) for t in tasks},
        hyperparameters={k: v for k, v in proposal.items() if k not in tasks},
        seed=exp.trainer.seed,
        steps=exp.trainer.steps,
        output_dir=Path(storage_dir) / config["trial_id"],
        tasks=tuple(exp.tasks),
        options=options,
        trial_id=config["trial_id"],
    )

    def report(step: int, metrics: Mapping[str, float]) -> None:
        out: dict[str, Any] = {
            "mixopt_step": int(step),
            "mixopt_node": node_id,
            "mixopt": {k: float(v) for k, v in metrics.items()},
        }
        if "objective" in metrics:
            out["objective"] = float(metrics["objective"])
        tune.report(out)

    train = load_target(exp.trainer.target)
    result = train(trial, report)
    if not (isinstance(result.objective, (int, float)) and math.isfinite(result.objective)):
        raise TrialFailed(f"the trainer returned a non-finite objective ({result.objective})")
    final = {
        "objective": float(result.objective),
        **result.task_metrics,
        **result.extra,
        **{f"score.{t}": float(v) for t, v in result.task_scores.items()},
    }
    tune.report(
        {
            "objective": float(result.objective),
            "mixopt_step": trial.steps,
            "mixopt_node": node_id,
            "mixopt_final": 1,
            "mixopt": final,
            "mixopt_checkpoint": str(result.checkpoint) if result.checkpoint else "",
        }
    )


# --------------------------------------------------------------------------- driver side


class _State:
    """The optimizer and its on-disk state file, saved after every change."""

    def __init__(self, optimizer: Any, path: Path):
        self.optimizer, self.path = optimizer, path

    def save(self) -> None:
        _atomic_write(self.path, json.dumps(self.optimizer.state_dict()))


def _make_searcher(
    state: _State,
    tracker: SweepTracker,
    exp: Experiment,
    n_to_run: int,
    reruns: list[tuple[str, str, dict]],
    next_index: int,
    printer: _Printer,
):
    from ray.tune.search import Searcher

    class MixtureSearcher(Searcher):
        """Tune Searcher over the MixtureOptimizer: ask on suggest, tell on completion.

        Trials still running are pending in the optimizer, so the next worker to free up gets a
        proposal away from them at once (asynchronous, no batch barrier).
        """

        def __init__(self) -> None:
            super().__init__(metric="objective", mode="max")
            self.issued = 0
            self.index = next_index
            self.live: dict[str, tuple[str, str, dict]] = {}

        def suggest(self, tune_trial_id: str) -> dict | None:
            if self.issued >= n_to_run:
                return Searcher.FINISHED
            opt = state.optimizer
            if reruns:
                trial_id, run_id, proposal = reruns.pop(0)
                tracker.restart_trial(run_id)
                origin = "rerun"
            else:
                proposal = opt.ask(1)[0]
                state.save()
                trial_id = f"trial-{self.index:03d}"
                self.index += 1
                origin = opt.origin(proposal)
                run_id = tracker.start_trial(trial_id, proposal, exp.task_names, origin, exp.trainer.seed)
            self.issued += 1
            self.live[tune_trial_id] = (trial_id, run_id, proposal)
            printer.started(trial_id, origin, proposal)
            return {"proposal": proposal, "trial_id": trial_id, "run_id": run_id}

        def on_trial_complete(
            self, tune_trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            trial_id, run_id, proposal = self.live.pop(tune_trial_id)
            value = None
            if not error and result is not None:
                v = result.get("objective")
                value = float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None
            # Saved by the callback once MLflow has recorded the trial's end (Tune calls it next), so
            # "told in the saved state" always implies "closed in MLflow".
            state.optimizer.tell(proposal, value)

    return MixtureSearcher()


class _Printer:
    """Progress on the terminal: a line per event and a table of the trials so far."""

    def __init__(self, tasks: list[str], total: int, enabled: bool = True):
        self.tasks, self.total, self.enabled = tasks, total, enabled
        self.rows: dict[str, dict[str, Any]] = {}
        self.best: float | None = None

    def _out(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def started(self, trial_id: str, origin: str, proposal: Mapping[str, Any]) -> None:
        self.rows[trial_id] = {
            "origin": origin,
            "weights": _top_weights(proposal, self.tasks),
            "status": "RUNNING",
            "objective": None,
        }
        self._out(f"[mixopt] {trial_id} started ({origin}): {_top_weights(proposal, self.tasks)}")

    def ended(self, trial_id: str, status: str, objective: float | None, reason: str | None = None) -> None:
        row = self.rows.setdefault(
            trial_id, {"origin": "?", "weights": "", "status": status, "objective": None}
        )
        row.update(status=status, objective=objective)
        if objective is not None and (self.best is None or objective > self.best):
            self.best = objective
        row["best"] = self.best
        done = sum(r["status"] in ("FINISHED", "FAILED") for r in self.rows.values())
        what = f"objective={objective:.4f}" if objective is not None else f"reason: {reason}"
        self._out(
            f"[mixopt] {trial_id} {status} {what}  (best so far {self.best if self.best is None else round(self.best, 4)}; "
            f"{done}/{self.total} done)"
        )
        self._out(self.table())

    def table(self) -> str:
        head = f"{'trial':<10} {'origin':<7} {'status':<9} {'objective':>9} {'best':>8}  top weights"
        lines = [head, "-" * len(head)]
        for tid, r in sorted(self.rows.items()):
            obj = "" if r["objective"] is None else f"{r['objective']:.4f}"
            best = "" if r.get("best") is None else f"{r['best']:.4f}"
            lines.append(f"{tid:<10} {r['origin']:<7} {r['status']:<9} {obj:>9} {best:>8}  {r['weights']}")
        return "\n".join(lines)


def _make_callback(tracker: SweepTracker, printer: _Printer, exp: Experiment, state: _State):
    from ray import tune

    class SweepCallback(tune.Callback):
        """Driver-side MLflow logging of every trial event (the single writer to the store)."""

        def __init__(self) -> None:
            self.node_logged: set[str] = set()
            self.attempts: dict[str, int] = {}
            self.busy_since: dict[str, float] = {}
            self.busy_total = 0.0
            self.first_start: float | None = None
            self.last_end: float | None = None

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            now = time.monotonic()
            self.first_start = self.first_start or now
            self.busy_since[trial.trial_id] = now

        def _busy_end(self, trial) -> None:
            t0 = self.busy_since.pop(trial.trial_id, None)
            self.last_end = time.monotonic()
            if t0 is not None:
                self.busy_total += self.last_end - t0

        def idle_fraction(self, slots: int) -> float | None:
            """Share of slot time, from the first trial's start to the last one's end, with no trial."""
            if self.first_start is None or self.last_end is None or self.last_end <= self.first_start:
                return None
            return max(0.0, 1.0 - self.busy_total / (slots * (self.last_end - self.first_start)))

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            run_id = trial.config["run_id"]
            metrics = result.get("mixopt") or {}
            step = int(result.get("mixopt_step", 0))
            if not result.get("mixopt_final"):
                tracker.log_metrics(run_id, metrics, step)
            node = result.get("mixopt_node")
            if node and run_id not in self.node_logged:
                self.node_logged.add(run_id)
                tracker.set_tags(
                    run_id,
                    {
                        "ray.node_id": node,
                        "ray.trial_id": trial.trial_id,
                        "ray.node_ip": str(result.get("node_ip", "")),
                    },
                )

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self._busy_end(trial)
            run_id, trial_id = trial.config["run_id"], trial.config["trial_id"]
            last = trial.last_result or {}
            objective = last.get("objective")
            tags = {}
            if last.get("mixopt_final"):
                tracker.log_metrics(run_id, last.get("mixopt") or {}, int(last.get("mixopt_step", 0)))
                if last.get("mixopt_checkpoint"):
                    tags[CHECKPOINT] = last["mixopt_checkpoint"]
                    if exp.sweep.log_checkpoints:
                        tracker.log_artifact(run_id, last["mixopt_checkpoint"], "checkpoint")
            else:
                tags["mixopt.stopped_early"] = "true"
                if objective is not None:
                    tracker.log_metrics(run_id, {"objective": objective}, int(last.get("mixopt_step", 0)))
            tracker.finish_trial(run_id, "FINISHED", tags=tags)
            state.save()
            printer.ended(trial_id, "FINISHED", objective)

        def on_trial_recover(self, iteration, trials, trial, **info) -> None:
            # Tune retries the trial (sweep.retries): keep a trace of the failed attempt.
            self._busy_end(trial)
            run_id = trial.config["run_id"]
            self.attempts[run_id] = self.attempts.get(run_id, 0) + 1
            tracker.set_tags(
                run_id,
                {
                    f"mixopt.attempt_{self.attempts[run_id]}_failure": _error_reason(trial)[:4000],
                    "mixopt.retries": str(self.attempts[run_id]),
                },
            )

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._busy_end(trial)
            run_id, trial_id = trial.config["run_id"], trial.config["trial_id"]
            reason = _error_reason(trial)
            tracker.finish_trial(run_id, "FAILED", reason=reason, tags={"ray.trial_id": trial.trial_id})
            state.save()
            printer.ended(trial_id, "FAILED", None, reason=reason.splitlines()[-1] if reason else "unknown")

    return SweepCallback()


def _error_reason(trial: Any) -> str:
    try:
        err = trial.get_error()
    except Exception:
        err = None
    if err is not None:
        cause = getattr(err, "cause", None) or err
        text = "".join(traceback.format_exception_only(type(cause), cause)).strip()
        # Ray wraps worker exceptions; the last line is the trainer's own message.
        return text.splitlines()[-1] if "Traceback" in text else text
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        return Path(path).read_text()[-2000:].strip()
    return "the trial's worker died without an error message (killed or out of memory)"


def _trial_name(trial: Any) -> str:
    return str(trial.config.get("trial_id", trial.trial_id))


def _storage_dir(exp: Experiment, parent_id: str) -> Path:
    if "://" in exp.storage:
        raise SweepError(
            f"storage {exp.storage!r}: mixopt writes trial checkpoints to a filesystem path that every "
            "node mounts (NFS, Lustre, a FUSE-mounted bucket); give that path"
        )
    return (Path(exp.storage) / exp.name / f"sweep-{parent_id[:8]}").resolve()


def _reconcile(
    opt: Any, tracker: SweepTracker, parent_id: str, steps: int, storage: Path
) -> tuple[int, list[tuple[str, str, dict]], int]:
    """Bring a restored optimizer in line with MLflow; return (done, reruns, next_index).

    - finished or failed in MLflow, pending in the state: the driver died before saving the tell;
      tell it now from MLflow's record.
    - running in MLflow, pending in the state: interrupted; run it again in the same MLflow run.
    - running in MLflow, told in the state (only if a save raced a crash): close the run from the
      state's value, with the checkpoint if the trial wrote one.
    - pending in the state with no MLflow run: asked just before the crash; dropped.
    """
    done = 0
    reruns: list[tuple[str, str, dict]] = []
    max_index = -1
    seen: list[dict] = []
    told = [p for p, _ in opt.history]
    for run in sorted(tracker.trial_runs(parent_id), key=lambda r: r.data.tags.get(TRIAL_ID, "")):
        tags = run.data.tags
        trial_id = tags.get(TRIAL_ID, "")
        try:
            max_index = max(max_index, int(trial_id.rsplit("-", 1)[-1]))
        except ValueError:
            pass
        proposal = json.loads(tags[PROPOSAL])
        if proposal in seen:
            continue  # a duplicate run of the same trial: the first one is the record
        seen.append(proposal)
        status = tags.get(STATUS)
        pending = proposal in opt.pending
        if status in ("FINISHED", "FAILED"):
            done += 1
            if pending:
                value = run.data.metrics.get("objective") if status == "FINISHED" else None
                opt.tell(proposal, value)
        elif pending:
            reruns.append((trial_id, run.info.run_id, proposal))
        elif proposal in told:
            value = next(v for p, v in reversed(opt.history) if p == proposal)
            if value is None:
                tracker.finish_trial(run.info.run_id, "FAILED", reason="trial failed (recorded on resume)")
            else:
                # At the final step: MLflow shows the value logged at the highest step.
                tracker.log_metrics(run.info.run_id, {"objective": value}, steps)
                checkpoint = storage / trial_id / "model"
                extra = {CHECKPOINT: str(checkpoint)} if (checkpoint / "modules.json").exists() else {}
                tracker.finish_trial(run.info.run_id, "FINISHED", tags=extra)
            done += 1
        else:
            reruns.append((trial_id, run.info.run_id, proposal))
    for p in list(opt.pending):
        if p not in seen:
            opt.cancel(p)
    return done, reruns, max_index + 1


def _ray_init(address: str | None, exp: Experiment) -> None:
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


def _max_concurrent(exp: Experiment) -> int:
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
        _storage_dir(exp, "x")  # raises the explanation before anything is written
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
        done, reruns, next_index = _reconcile(opt, tracker, parent_id, exp.trainer.steps, storage)
        if verbose:
            print(
                f"[mixopt] resuming sweep {parent_id}: {done} trials recorded, {len(reruns)} interrupted "
                f"(run again), {max(total - done, 0)} to run",
                flush=True,
            )
    else:
        opt = MixtureOptimizer.from_experiment(exp)
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
            },
            artifacts={"config.yaml": dump_experiment(exp), "seed_mixtures.json": seeds},
        )
        storage = _storage_dir(exp, parent_id)
        state_path = storage / "optimizer_state.json"
        tracker.set_tags(parent_id, {STATE_PATH: str(state_path)})
        done, reruns, next_index = 0, [], 0
    state = _State(opt, state_path)
    state.save()

    printer = _Printer(exp.task_names, total, enabled=verbose)
    n_to_run = max(total - done, 0)
    t0 = time.monotonic()
    callback = None
    if n_to_run:
        _ray_init(address, exp)
        concurrent = _max_concurrent(exp)
        searcher = ConcurrencyLimiter(
            _make_searcher(state, tracker, exp, n_to_run, reruns, next_index, printer),
            max_concurrent=concurrent,
        )
        callback = _make_callback(tracker, printer, exp, state)
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
                options=_absolute_options(exp.trainer.options),
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
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
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
    return _finish(exp, tracker, state, storage, wall, callback, concurrent if n_to_run else 1, verbose)


def _finish(
    exp: Experiment,
    tracker: SweepTracker,
    state: _State,
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
        _print_summary(exp, summary)
    return summary


def _print_summary(exp: Experiment, s: SweepSummary) -> None:
    out = sys.stdout
    print(
        f"\n[mixopt] sweep done in {s.wall_seconds:.0f}s: {s.finished} finished, {s.failed} failed.", file=out
    )
    if s.best is not None:
        proposal, value = s.best
        weights = ", ".join(f"{t}={proposal[t]:.3f}" for t in exp.task_names)
        hps = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in proposal.items()
            if k not in exp.task_names
        )
        print(f"[mixopt] best objective {value:.4f}: {weights}" + (f"; {hps}" if hps else ""), file=out)
    if s.idle_fraction is not None:
        print(
            f"[mixopt] trial slots idle {100 * s.idle_fraction:.1f}% of the time between the first trial's "
            "start and the last one's end",
            file=out,
        )
    print(
        f"[mixopt] MLflow: {s.tracking_uri}, experiment {s.experiment_name!r}, sweep run {s.parent_run_id}",
        file=out,
    )
    if s.tracking_uri.startswith("sqlite:"):
        print(f"[mixopt] inspect: make ui   (or: mlflow ui --backend-store-uri {s.tracking_uri})", file=out)
    print("[mixopt] next: mixopt soup --runs top5   (the final model; or: make soup)", file=out, flush=True)
