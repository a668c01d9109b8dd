"""The real-data benchmark's view of a sweep: its trials and its verification, read from MLflow.

Every read goes through :mod:`mixopt.tracking.store`. A trial becomes the per-trial record of
bench/real.py's cache (its docstring gives the format): mixture, seed, stage (``search`` or
``verify-recommended`` / ``verify-baseline``), per-task dev scores, the dev objective, the learning
curve when the trial reported intermediate evaluations, the wall time and the checkpoint.
"""

from __future__ import annotations

import json
from typing import Any

from mixopt.sweep.scores import final_scores, report_scores
from mixopt.tracking import store
from mixopt.tracking.tags import (
    CHECKPOINT,
    PROPOSAL,
    ROLE,
    ROLE_SWEEP,
    STAGE,
    STATUS,
    TRIAL_ID,
    VERIFY_ARM,
)


def sweep_runs(uri: str, experiment: str) -> list[Any]:
    """The experiment's sweep runs, newest first (empty when the store or experiment is missing)."""
    if not store.store_exists(uri):
        return []
    client = store.connect(uri)
    exp = store.experiment_by_name(client, experiment)
    if exp is None:
        return []
    return store.search_all(
        client, [exp.experiment_id], f"tags.`{ROLE}` = '{ROLE_SWEEP}'", ["attributes.start_time DESC"]
    )


def trial_records(uri: str, sweep_run: Any, tasks: list[Any]) -> list[dict[str, Any]]:
    """Every finished trial of ``sweep_run`` as a cache record, in start order."""
    client = store.connect(uri)
    names = [t.name for t in tasks]
    configured = {t.name: t.metric for t in tasks}
    out = []
    runs = store.trial_runs(
        client, sweep_run.info.experiment_id, sweep_run.info.run_id, ["attributes.start_time ASC"]
    )
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        if tags.get(STATUS) != "FINISHED":
            continue
        scores = final_scores(metrics, names)
        if scores is None:
            continue
        stage = tags.get(STAGE) or "search"
        if stage == "verify":
            stage = f"verify-{tags.get(VERIFY_ARM) or run.data.params.get('verify.arm')}"
        proposal = json.loads(tags[PROPOSAL])
        objective = store.metric_history(client, run.info.run_id, "objective")
        intermediate = sorted(objective)[:-1]  # the last step is the final evaluation
        curve = []
        if intermediate:
            at = {k: store.metric_history(client, run.info.run_id, k) for k in metrics if "/" in k}
            for step in intermediate:
                values = {k: h[step] for k, h in at.items() if step in h}
                curve.append([step, objective[step], report_scores(values, configured)])
        out.append(
            {
                "id": f"sweep:{tags.get(TRIAL_ID)}",
                "stage": stage,
                "mixture": {n: float(proposal[n]) for n in names},
                "seed": int(run.data.params.get("seed", -1)),
                "dev": scores,
                "objective": float(metrics["objective"]),
                "curve": curve,
                "wall_s": (run.info.end_time - run.info.start_time) / 1000.0 if run.info.end_time else None,
                "train_s": metrics.get("train_seconds"),
                "eval_s": metrics.get("eval_seconds"),
                "checkpoint": tags.get(CHECKPOINT),
                "run_id": run.info.run_id,
            }
        )
    return out


def verification(uri: str, sweep_run: Any) -> dict[str, Any] | None:
    """The sweep's ``recommended.json`` (the recommendation and, when it ran, the verification)."""
    text = store.artifact_text(store.connect(uri), sweep_run.info.run_id, "recommended.json")
    return None if text is None else json.loads(text)
