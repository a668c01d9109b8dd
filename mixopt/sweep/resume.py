"""Resume: find the unfinished sweep, check the YAML against the config it recorded, and bring
an optimizer restored from its state file in line with what MLflow recorded."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mixopt.config import Experiment, dump_experiment
from mixopt.config.loading import drop_removed
from mixopt.optimizer import MixtureOptimizer
from mixopt.sweep.common import SweepError
from mixopt.sweep.scores import final_scores
from mixopt.tracking import CHECKPOINT, PROPOSAL, STAGE, STATE_PATH, STATUS, TRIAL_ID, SweepTracker
from mixopt.tracking.store import get_run, recorded_config
from mixopt.tracking.tags import CONFIG, FAILURE_KIND, INFRASTRUCTURE

# What the recorded trials and the optimizer state mean: the tasks (a mixture's coordinates) and
# the search space (the weights' bounds, the hyperparameters). A resume under other values would
# tell the optimizer results from a space it was not built on: refused, whatever the flag.
FIXED = ("tasks", "search.bounds", "search.hyperparameters")
# What the optimizer state composes: its trials' objective (a weighted mean of their task
# scores). Its state keeps the weights it was built with, so a resume under others would mix two
# objectives: refused, whatever the flag (`mixopt recommend --objective` re-weighs the scores of
# a finished sweep).
COMPOSED = ("objective",)
# How many trials and how many at once, and which checkpoints are kept: they change no trial's
# result, so a resume may change them freely (as --max-trials does); they are listed and recorded
# all the same.
RUN_ONLY = ("optimizer.max_trials", "optimizer.max_concurrent", "storage_keep")


@dataclass
class Reopening:
    """An unfinished sweep found for ``--resume``, its YAML checked, nothing written yet.

    ``config_name``: the config artifact the resumed driver runs under (the recorded one, or the
    next ``config-N.yaml`` when the YAML changed); ``changed``: the YAML paths that differ.
    """

    parent_id: str
    state_path: Path
    config_name: str
    changed: list[str]


def find_resumable(exp: Experiment, tracker: SweepTracker, allow_config_change: bool) -> Reopening:
    """The experiment's unfinished sweep and the config to resume it under; SweepError (nothing
    written) when there is none, its state file is gone, or the YAML changed what it may not."""
    parent_id = tracker.find_unfinished_sweep()
    if parent_id is None:
        raise SweepError(
            f"nothing to resume: experiment {exp.experiment_name!r} in {tracker.uri} has no "
            "unfinished sweep; run without --resume to start one"
        )
    run = get_run(tracker.client, parent_id)
    state_path = Path(run.data.tags[STATE_PATH])
    if not state_path.exists():
        raise SweepError(f"cannot resume sweep run {parent_id}: its optimizer state {state_path} is missing")
    name, text = recorded_config(tracker.client, run)
    if text is None:
        raise SweepError(
            f"cannot resume sweep run {parent_id}: it recorded no {name} to compare the YAML with"
        )
    # A key the product no longer has: dropped where the sweep ran as the product runs now,
    # refused where it ran an option that is gone (its state would continue under another model).
    recorded, refused = drop_removed(yaml.safe_load(text))
    if refused:
        path, value, why = refused[0]
        raise SweepError(
            f"cannot resume sweep run {parent_id}: it ran with {'.'.join(path)}: {value!r}, no longer "
            f"an option ({why}); start a new sweep, with optimizer.warm_start to reuse its trials"
        )
    changed = config_changes(recorded, yaml.safe_load(dump_experiment(exp)))
    fixed = [k for k in changed if _under(k, FIXED)]
    if fixed:
        raise SweepError(
            f"cannot resume sweep run {parent_id}: the YAML changes its tasks or search space ("
            f"{', '.join(fixed)}) against its recorded {name}; undo the change to resume it, or start "
            "a new sweep without --resume"
        )
    composed = [k for k in changed if _under(k, COMPOSED)]
    if composed:
        raise SweepError(
            f"cannot resume sweep run {parent_id}: the YAML changes its objective "
            f"({', '.join(composed)}) against its recorded {name}; undo the change to resume it, or "
            "resume it as it was and then see `mixopt recommend --objective` for other weights"
        )
    others = [k for k in changed if not _under(k, RUN_ONLY)]
    if others and not allow_config_change:
        raise SweepError(
            f"cannot resume sweep run {parent_id}: the YAML differs from its recorded {name} at "
            f"{', '.join(others)}; undo the change, or resume with --allow-config-change to run the "
            "remaining trials under the new values (recorded as a new config)"
        )
    return Reopening(parent_id, state_path, next_config_name(name) if changed else name, changed)


def next_config_name(name: str) -> str:
    """``config.yaml`` -> ``config-2.yaml`` -> ``config-3.yaml`` ..."""
    stem = name.removesuffix(".yaml")
    n = int(stem.rsplit("-", 1)[1]) if "-" in stem and stem.rsplit("-", 1)[1].isdigit() else 1
    return f"config-{n + 1}.yaml"


def config_changes(recorded: Any, current: Any, path: str = "") -> list[str]:
    """The YAML paths at which two configs (plain data) differ: ``trainer.learning_rate``,
    ``tasks[1].path``; a key present in one only counts as a change; a list whose length
    changed is named as a whole."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        out: list[str] = []
        for key in list(recorded) + [k for k in current if k not in recorded]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in recorded or key not in current:
                out.append(sub)
            else:
                out += config_changes(recorded[key], current[key], sub)
        return out
    if isinstance(recorded, list) and isinstance(current, list) and len(recorded) == len(current):
        return [
            k for i, (a, b) in enumerate(zip(recorded, current)) for k in config_changes(a, b, f"{path}[{i}]")
        ]
    return [] if recorded == current else [path]


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith((p + ".", p + "[")) for p in prefixes)


def reconcile(
    opt: MixtureOptimizer,
    tracker: SweepTracker,
    parent_id: str,
    steps: int,
    storage: Path,
    tasks: Sequence[str] = (),
) -> tuple[int, list[tuple[str, str, dict]], int]:
    """Bring a restored optimizer in line with MLflow; return (done, reruns, next_index).

    - finished or failed in MLflow, pending in the state: the driver died before saving the tell;
      tell it now from MLflow's record (the per-task scores ``score.<task>`` of ``tasks`` when
      the run logged them all, else its objective).
    - running in MLflow, pending in the state: interrupted; run it again in the same MLflow run.
    - running in MLflow, told in the state (only if a save raced a crash): close the run from the
      state's value, with the checkpoint if the trial wrote one.
    - pending in the state with no MLflow run: asked just before the crash; dropped.
    - failed for the infrastructure (tag ``mixopt.failure_kind``: a full disk, a lost worker,
      out of memory): run again in its run, not counted as done; a live sweep never tells it, so
      it is pending in the state, and told once it has run again.

    A trial ASHA stopped early (tag ``mixopt.stopped_early``) is told as a partial result at the
    step of its last objective when the optimizer is multi-fidelity, as the searcher would have.
    """
    done = 0
    reruns: list[tuple[str, str, dict]] = []
    max_index = -1
    seen: list[dict] = []
    told = [p for p, _ in opt.history]
    runs = tracker.trial_runs(parent_id)
    proposals = [r.data.tags.get(PROPOSAL) for r in runs]
    for run in sorted(runs, key=lambda r: r.data.tags.get(TRIAL_ID, "")):
        tags = run.data.tags
        if tags.get(STAGE) == "verify":
            continue  # the verification stage reconciles its own trials (mixopt.sweep.verify)
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
        if (
            status == "FAILED"
            and tags.get(FAILURE_KIND) == INFRASTRUCTURE
            and proposals.count(tags[PROPOSAL]) == 1
        ):
            tracker.close_recorded(run)
            reruns.append((trial_id, run.info.run_id, proposal))
        elif status in ("FINISHED", "FAILED"):
            done += 1
            tracker.close_recorded(run)
            if pending:
                value = run.data.metrics.get("objective") if status == "FINISHED" else None
                fraction = _stopped_fraction(opt, tracker, run, steps, value)
                # A finished run's scores (score.<task>), as the searcher would have told them; a
                # stopped one logged its last report only, which has no score.<task>.
                scores = final_scores(run.data.metrics, tasks) if value is not None else None
                opt.tell(proposal, None if scores else value, fraction=fraction, scores=scores)
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


def _stopped_fraction(
    opt: MixtureOptimizer, tracker: SweepTracker, run: Any, steps: int, value: float | None
) -> float:
    """The share of the budget a stopped trial reached (1.0: tell it as a full-fidelity result)."""
    if value is None or not opt.multi_fidelity or run.data.tags.get("mixopt.stopped_early") != "true":
        return 1.0
    history = tracker.client.get_metric_history(run.info.run_id, "objective")
    last = max((m.step for m in history), default=0)
    return last / steps if 0 < last < steps else 1.0


def reopen(exp: Experiment, tracker: SweepTracker, reopening: Reopening, verbose: bool) -> tuple[Any, Path]:
    """The sweep ``reopening`` found, reopened: its optimizer restored, and its state file; a config
    the YAML changed is recorded as ``config-N.yaml``, and every trial run from now on is tagged
    with the config it runs under (tag ``mixopt.config``)."""
    parent_id, state_path = reopening.parent_id, reopening.state_path
    opt = MixtureOptimizer.from_state_dict(json.loads(state_path.read_text()))
    tracker.reopen_sweep(parent_id)
    if reopening.changed:
        tracker.log_text(parent_id, dump_experiment(exp), reopening.config_name)
        tracker.set_tags(parent_id, {CONFIG: reopening.config_name})
        if verbose:
            print(
                f"[mixopt] resuming sweep {parent_id} under a changed config ({', '.join(reopening.changed)}): "
                f"recorded as {reopening.config_name}; trials from now on are tagged {CONFIG}="
                f"{reopening.config_name}",
                flush=True,
            )
    tracker.trial_tags = {CONFIG: reopening.config_name}
    return opt, state_path


def within_budget(
    opt: MixtureOptimizer, tracker: SweepTracker, done: int, reruns: list[tuple[str, str, dict]], total: int
) -> list[tuple[str, str, dict]]:
    """The interrupted trials a resume runs again: as many as the sweep's ``total`` leaves room
    for (``--max-trials`` may be below what is recorded). The others are closed KILLED, with the
    reason, and cancelled in the optimizer: no run is left shown RUNNING."""
    room = max(total - done, 0)
    for trial_id, run_id, proposal in reruns[room:]:
        if proposal in opt.pending:
            opt.cancel(proposal)
        tracker.finish_trial(
            run_id,
            "KILLED",
            reason=f"{trial_id} was interrupted and not run again: the sweep's {total} trials are recorded",
        )
    return reruns[:room]


def recorded_best(tracker: SweepTracker) -> float | None:
    """The best objective of the search trials MLflow recorded as finished (before a ``--resume``)."""
    values = [
        r.data.metrics["objective"]
        for r in tracker.trial_runs()
        if r.data.tags.get(STAGE) != "verify"
        and r.data.tags.get(STATUS) == "FINISHED"
        and "objective" in r.data.metrics
    ]
    return max(values, default=None)
