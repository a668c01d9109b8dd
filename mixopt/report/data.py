"""What the report shows, read from a sweep's MLflow records (through :mod:`mixopt.tracking.store`).

A sweep in progress is read as it stands: its trials so far (running ones included), and the
optimizer state from the state file the sweep saves after every ask and tell. A finished sweep
adds ``recommended.json`` (the recommendation and the verification's result).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mixopt.tracking import store
from mixopt.tracking.tags import PROPOSAL, RUN_NAME, STAGE, STATUS, TRIAL_ID

if TYPE_CHECKING:
    from mixopt.optimizer import MixtureOptimizer

RECOMMENDED_ARTIFACT = "recommended.json"
SCORE_PREFIX = "score."


@dataclass
class TrialRecord:
    """One trial as MLflow has it: ``trial_id`` as in the runs table, ``origin`` (seed / bo /
    exploit / random / rerun / verify, or warm for a reused trial of an earlier sweep),
    ``objective`` and per-score values (``score.<name>`` metrics) when it finished."""

    trial_id: str
    status: str
    origin: str
    proposal: dict[str, Any]
    objective: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    stage: str = "search"


@dataclass
class SweepData:
    """A sweep as the report needs it. ``state``: the optimizer's ``state_dict`` (None when the
    sweep recorded none yet); ``recommended``: the parsed ``recommended.json`` (None mid-sweep)."""

    experiment: str
    run_id: str
    run_status: str
    tasks: list[str]
    trials: list[TrialRecord]
    state: dict[str, Any] | None
    recommended: dict[str, Any] | None
    uri: str

    @property
    def warm_source(self) -> dict[str, Any] | None:
        return (self.state or {}).get("warm_source")


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _trial(run: Any) -> TrialRecord:
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    try:
        proposal = json.loads(tags.get(PROPOSAL, "{}"))
    except ValueError:
        proposal = {}
    return TrialRecord(
        trial_id=tags.get(TRIAL_ID) or tags.get(RUN_NAME) or run.info.run_id,
        status=tags.get(STATUS, run.info.status),
        origin=params.get("origin", "?"),
        proposal=proposal,
        objective=_finite(metrics.get("objective")),
        scores={k[len(SCORE_PREFIX) :]: v for k, v in metrics.items() if k.startswith(SCORE_PREFIX)},
        run_id=run.info.run_id,
        stage=tags.get(STAGE, "search"),
    )


def load_sweep(uri: str, experiment: str | None = None, run_id: str | None = None) -> SweepData:
    """The sweep run ``run_id``, else the newest sweep of MLflow experiment ``experiment``.

    Raises:
        LookupError: no store at ``uri``, no such experiment, or no sweep in it (one line, naming
            what is missing and what to do).
    """
    if not store.store_exists(uri):
        raise LookupError(f"no MLflow store at {uri}; run `mixopt sweep` first or give --tracking-uri")
    client = store.connect(uri)
    if run_id is not None:
        try:
            run = store.get_run(client, run_id)
        except Exception as e:  # MLflow's RESOURCE_DOES_NOT_EXIST, or a malformed id
            raise LookupError(f"no sweep run {run_id} in {uri} ({type(e).__name__}); check --run") from None
    else:
        if experiment is None:
            raise LookupError("give the sweep: EXPERIMENT.yaml or --experiment NAME")
        exp = store.experiment_by_name(client, experiment)
        if exp is None:
            raise LookupError(f"no MLflow experiment {experiment!r} in {uri}")
        run = store.newest_sweep(client, [exp.experiment_id])
        if run is None:
            raise LookupError(f"experiment {experiment!r} in {uri} has no sweep; run `mixopt sweep` first")
    parent = run.info.run_id
    name = store.experiment_name_of_run(client, parent)
    trials = [_trial(r) for r in store.trial_runs(client, run.info.experiment_id, parent)]
    trials.sort(key=lambda t: (t.stage == "verify", t.trial_id))
    state = store.recorded_state(client, run)
    text = store.artifact_text(client, parent, RECOMMENDED_ARTIFACT)
    tasks_param = run.data.params.get("tasks")
    if state is not None:
        tasks = list(state["config"]["tasks"])
    elif tasks_param:
        tasks = tasks_param.split(",")
    else:
        tasks = sorted({k for t in trials for k in t.proposal})
    return SweepData(
        experiment=name,
        run_id=parent,
        run_status=run.info.status,
        tasks=tasks,
        trials=trials,
        state=state,
        recommended=json.loads(text) if text is not None else None,
        uri=uri,
    )


def warm_trials(opt: MixtureOptimizer) -> list[TrialRecord]:
    """The trials an optimizer reused from an earlier sweep (origin ``warm``), as records with ids
    ``warm-000``...: they have no run in this sweep's MLflow experiment."""
    out: list[TrialRecord] = []
    scores = _score_history(opt)
    for k, (proposal, value) in enumerate(opt.history):
        if opt.origin(proposal) != "warm":
            continue
        out.append(
            TrialRecord(
                trial_id=f"warm-{len(out):03d}",
                status="FINISHED" if value is not None else "FAILED",
                origin="warm",
                proposal=proposal,
                objective=_finite(value),
                scores=dict(scores[k] or {}) if k < len(scores) else {},
            )
        )
    return out


def _score_history(opt: MixtureOptimizer) -> list[dict[str, float] | None]:
    try:
        return [s for _, s in opt.score_history]
    except AttributeError:  # an optimizer without per-score records
        return []
