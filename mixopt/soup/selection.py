"""Which trial runs go into the soup, read from the sweep's MLflow experiment.

:func:`select_ingredients` reads the sweep's trial runs (finished, with a checkpoint on disk):
its search trials and the verification runs of its recommended mixture. The baseline arm's
verification runs are never ingredients: they train the mixture the recommendation was tested
against, not a candidate of the search. It ranks them by their metric and takes the top K, all,
or the runs named by id. Every read goes through :mod:`mixopt.tracking.store`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.exceptions import MlflowException

from mixopt.soup.ingredients import (
    Ingredient,
    RunsSpec,
    Selection,
    Skipped,
    SoupError,
    parse_runs,
)
from mixopt.tracking import store
from mixopt.tracking.tags import (
    CHECKPOINT,
    CHECKPOINT_CHECKSUMS,
    CHECKPOINT_PRUNED,
    PARENT,
    PROPOSAL,
    ROLE,
    ROLE_TRIAL,
    STAGE,
    STATUS,
    STOPPED_EARLY,
    TRIAL_ID,
    VERIFY_ARM,
)

RECOMMENDED_ARM = "recommended"

if TYPE_CHECKING:
    from mixopt.tracking.store import Client


def _local_checkpoint(uri: str) -> Path | None:
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    elif "://" in uri:
        return None
    return Path(uri)


def _ingredient_or_reason(run: Any, metric: str) -> tuple[Ingredient | None, str | None]:
    """An :class:`Ingredient` from an MLflow run, or why the run cannot be one."""
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    stage = tags.get(STAGE) or "search"
    arm = (tags.get(VERIFY_ARM) or params.get("verify.arm")) if stage == "verify" else None
    if stage == "verify" and arm != RECOMMENDED_ARM:
        return None, (
            f"a verification run of the {arm or 'unknown'} arm: only the recommended mixture's "
            "verification runs are ingredients"
        )
    status = tags.get(STATUS)
    if status != "FINISHED":
        if status is None:
            return None, f"no mixopt.status tag (MLflow status {run.info.status}): still running or killed"
        return None, f"trial status {status}"
    ckpt = tags.get(CHECKPOINT)
    if not ckpt:
        if tags.get(STOPPED_EARLY) == "true":
            return None, "stopped early by the scheduler, so it wrote no checkpoint"
        return None, "no checkpoint (tag mixopt.checkpoint is missing)"
    if tags.get(CHECKPOINT_PRUNED) == "true":
        return None, (
            "its checkpoint was deleted by the sweep's storage_keep (not among the best by objective "
            "nor a verification or pinned trial); choose a kept trial (--runs topK), or pin this one in "
            "storage_keep.pin of a new sweep"
        )
    path = _local_checkpoint(ckpt)
    if path is None:
        return None, f"checkpoint {ckpt} is not on a local filesystem; copy it locally and pass the run ids"
    if not path.is_dir():
        return None, f"checkpoint directory {path} is missing"
    value = metrics.get(metric)
    if value is None:
        return None, f"no metric {metric!r}"
    if not math.isfinite(value):
        return None, f"metric {metric!r} is {value}"
    scores = {k[len("score.") :]: v for k, v in metrics.items() if k.startswith("score.")}
    try:
        proposal = json.loads(tags[PROPOSAL]) if PROPOSAL in tags else None
    except ValueError:
        proposal = None
    # The exact weights are in the proposal tag; the w.<task> params are rounded for the runs table.
    weights = {k[2:] for k in params if k.startswith("w.")}
    if isinstance(proposal, dict) and weights <= proposal.keys():
        mixture = {k: float(proposal[k]) for k in weights}
    else:
        mixture = {k[2:]: float(v) for k, v in params.items() if k.startswith("w.")}
    return Ingredient(
        run_id=run.info.run_id,
        trial_id=tags.get(TRIAL_ID, run.info.run_name or "?"),
        checkpoint=path,
        value=float(value),
        mixture=mixture,
        task_scores=scores,
        metrics=dict(metrics),
        parent_run_id=tags.get(PARENT),
        checksums_sha256=tags.get(CHECKPOINT_CHECKSUMS),
        stage=stage,
    ), None


def resolve_run_id(client: Client, experiment_id: str, given: str, experiment_name: str) -> str:
    """A full MLflow run id from a unique prefix of one (as git resolves commits), in the experiment.

    A full 32-character id is returned as is. Raises SoupError when no run, or more than one,
    of the experiment starts with ``given``.
    """
    if len(given) >= 32:
        return given
    given = given.lower()
    matches = store.runs_with_prefix(client, experiment_id, given)
    if not matches:
        raise SoupError(
            f"--runs: no MLflow run id starting with {given} in experiment {experiment_name!r} "
            f"at {_redact(client.tracking_uri)}"
        )
    if len(matches) > 1:
        listed = ", ".join(
            f"{r.info.run_id} ({r.data.tags.get(TRIAL_ID) or r.data.tags.get(ROLE) or 'run'})"
            for r in sorted(matches, key=lambda r: r.info.run_id)
        )
        raise SoupError(f"--runs: run id prefix {given} is ambiguous: {listed}; give more characters")
    return matches[0].info.run_id


def select_ingredients(
    client: Client,
    experiment_name: str,
    runs: RunsSpec | str,
    metric: str = "objective",
) -> Selection:
    """Choose the soup's ingredients among the trial runs of MLflow experiment ``experiment_name``.

    Candidates are the trial runs of the experiment's latest sweep run (all trial runs if it has
    no sweep run). Usable trials are those with ``mixopt.status`` FINISHED, a
    ``mixopt.checkpoint`` directory that exists and was not pruned (``storage_keep``, tag
    ``mixopt.checkpoint_pruned``), and a finite ``metric``; they are ranked by
    ``metric``, highest first (ties by start time). ``top K`` takes the K best (all of them, with
    a note, if fewer are usable), ``all`` takes every usable one; explicit run ids may come from
    any sweep of the experiment but must all be usable trials.
    """

    spec = parse_runs(runs) if isinstance(runs, str) else runs
    experiment = store.experiment_by_name(client, experiment_name)
    if experiment is None:
        raise SoupError(
            f"no MLflow experiment named {experiment_name!r} at tracking URI {_redact(client.tracking_uri)}; "
            "run the sweep first, or pass --tracking-uri / --experiment"
        )
    eid = experiment.experiment_id
    chosen: list[Ingredient] = []
    skipped: list[Skipped] = []
    notes: list[str] = []
    if spec.kind == "ids":
        for given in spec.ids:
            run_id = resolve_run_id(client, eid, given, experiment_name)
            try:
                run = store.get_run(client, run_id)
            except MlflowException:
                raise SoupError(f"--runs: no MLflow run {run_id} at {_redact(client.tracking_uri)}") from None
            if run.info.experiment_id != eid:
                raise SoupError(
                    f"--runs: run {run_id} belongs to MLflow experiment id {run.info.experiment_id}, "
                    f"not {experiment_name!r} (id {eid})"
                )
            role = run.data.tags.get(ROLE)
            if role != ROLE_TRIAL:
                raise SoupError(f"--runs: run {run_id} is not a trial run (mixopt.role={role!r})")
            ing, reason = _ingredient_or_reason(run, metric)
            if ing is None:
                raise SoupError(f"--runs: run {run_id} cannot be an ingredient: {reason}")
            chosen.append(ing)
        chosen.sort(key=lambda i: -i.value)
    else:
        usable: list[Ingredient] = []
        trial_runs = store.trial_runs(client, eid, order_by=["attributes.start_time ASC"])
        newest = store.newest_sweep(client, [eid])
        if newest is not None:
            sweep = newest.info.run_id
            # Trials of earlier sweeps in the same experiment may come from another config; they
            # join only when named by run id.
            older = [r for r in trial_runs if r.data.tags.get(PARENT) != sweep]
            trial_runs = [r for r in trial_runs if r.data.tags.get(PARENT) == sweep]
            if older:
                notes.append(
                    f"ignored {len(older)} trial run(s) of earlier sweeps; the latest sweep is run {sweep} "
                    "(name other runs with --runs RUN_ID,...)"
                )
        for run in trial_runs:
            ing, reason = _ingredient_or_reason(run, metric)
            if ing is None:
                skipped.append(Skipped(run.info.run_id, run.data.tags.get(TRIAL_ID, "?"), str(reason)))
            else:
                usable.append(ing)
        usable.sort(key=lambda i: -i.value)  # stable: equal values keep start-time order
        if not usable:
            why = (
                "; ".join(f"{s.run_id} (trial {s.trial_id}): {s.reason}" for s in skipped) or "there are none"
            )
            raise SoupError(f"no usable trial runs in MLflow experiment {experiment_name!r}: {why}")
        if spec.kind == "top":
            assert spec.k is not None
            if len(usable) < spec.k:
                notes.append(f"only {len(usable)} usable trial runs for top{spec.k}; souping all of them")
            for ing in usable[spec.k :]:
                skipped.append(Skipped(ing.run_id, ing.trial_id, f"not in the top {spec.k} by {metric}"))
            usable = usable[: spec.k]
        chosen = usable
    return Selection(eid, experiment_name, spec, metric, tuple(chosen), tuple(skipped), tuple(notes))


def _redact(uri: str) -> str:
    """A tracking URI without credentials (``http://user:pass@host`` -> ``http://***@host``)."""
    return re.sub(r"//[^/@]+@", "//***@", uri)
