"""Resume: bring an optimizer restored from its state file in line with what MLflow recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixopt.tracking import CHECKPOINT, PROPOSAL, STAGE, STATUS, TRIAL_ID, SweepTracker
from mixopt.tracking.tags import FAILURE_KIND, INFRASTRUCTURE


def reconcile(
    opt: Any, tracker: SweepTracker, parent_id: str, steps: int, storage: Path
) -> tuple[int, list[tuple[str, str, dict]], int]:
    """Bring a restored optimizer in line with MLflow; return (done, reruns, next_index).

    - finished or failed in MLflow, pending in the state: the driver died before saving the tell;
      tell it now from MLflow's record.
    - running in MLflow, pending in the state: interrupted; run it again in the same MLflow run.
    - running in MLflow, told in the state (only if a save raced a crash): close the run from the
      state's value, with the checkpoint if the trial wrote one.
    - pending in the state with no MLflow run: asked just before the crash; dropped.
    - failed for the infrastructure (tag ``mixopt.failure_kind``: a full disk, a lost worker):
      run again in its run, not counted as done; the state's failure, if told, stays a repeat
      observation beside the new result (a live sweep tells it: the mixture may be what kills).

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
                opt.tell(proposal, value, fraction=_stopped_fraction(opt, tracker, run, steps, value))
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


def _stopped_fraction(opt: Any, tracker: SweepTracker, run: Any, steps: int, value: float | None) -> float:
    """The share of the budget a stopped trial reached (1.0: tell it as a full-fidelity result)."""
    if value is None or not opt.multi_fidelity or run.data.tags.get("mixopt.stopped_early") != "true":
        return 1.0
    history = tracker.client.get_metric_history(run.info.run_id, "objective")
    last = max((m.step for m in history), default=0)
    return last / steps if 0 < last < steps else 1.0
