"""``mixopt recommend``: a sweep's recommended mixture under a composition of its task scores.

The optimizer keeps each trial's per-task scores, so a team that decides after the sweep that
retrieval counts twice asks ``--objective retrieval=2,sts=1,...`` and gets the maximiser of the
posterior mean of a GP on the recorded trials' scores recomposed under those weights, ``Σ c_k s_k``
(``MixtureOptimizer.recommend(objective)``), no trial rerun. ``--verify`` then runs the verification stage for it
(:mod:`mixopt.sweep.recommend`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from mixopt.cli.common import (
    experiment_file_argument,
    experiment_option,
    fail,
    find_sweep,
    tracking_uri_option,
)
from mixopt.optimizer.recommendation import RecommendationRecord

if TYPE_CHECKING:  # annotations only: the optimizer loads torch (see recommend())
    from mixopt.optimizer import MixtureOptimizer


class RecommendError(ValueError):
    """What ``mixopt recommend`` cannot do, in one line."""


def recommend(
    experiment_file: Optional[Path] = experiment_file_argument(),
    experiment: Optional[str] = experiment_option(),
    objective: Optional[str] = typer.Option(
        None,
        "--objective",
        help="Weights over the task scores, e.g. retrieval_0=2,sts_1=1 (unnamed scores weigh 0; "
        "default: the sweep's own objective).",
    ),
    run_verify: bool = typer.Option(
        False,
        "--verify",
        help="Then run the verification stage for it (recommended vs baseline, fresh seeds).",
    ),
    tracking_uri: Optional[str] = tracking_uri_option(),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address for --verify."),
) -> None:
    """The recommended mixture under a composition of the task scores, from a sweep's recorded trials."""
    # The optimizer and the tracking store are imported when the command runs: they load torch and
    # MLflow, which `mixopt --help` must not wait for.
    from mixopt.optimizer import MixtureOptimizer
    from mixopt.optimizer.recommendation import recommendation_record
    from mixopt.tracking import store

    target = find_sweep(experiment_file, experiment, tracking_uri)
    if not store.store_exists(target.uri):
        fail(f"no MLflow store at {target.uri}: run `mixopt sweep` first, or give --tracking-uri")
    if target.exp is None:
        fail(str(target.error).replace("\n", "; "))
    exp = target.exp
    client = store.connect(target.uri)
    try:
        if target.run_id is not None:
            run = store.get_run(client, target.run_id)
        else:
            run = store.newest_sweep_run(target.uri, target.name)
    except LookupError as e:
        fail(str(e))
    run_id = run.info.run_id
    state = store.recorded_state(client, run)
    if state is None:
        fail(f"sweep run {run_id} recorded no optimizer state (file or artifact)")
    opt = MixtureOptimizer.from_state_dict(state)
    weights = None
    if objective is not None:
        known = known_scores(opt)
        if not known:
            fail(
                f"--objective: sweep run {run_id} recorded no per-task scores (it predates "
                "them); only its own objective can be recommended: drop --objective"
            )
        try:
            weights = parse_objective(objective, known)
        except RecommendError as e:
            fail(str(e))
    try:
        record = recommendation_record(opt, weights)
    except (ValueError, RuntimeError) as e:
        fail(f"cannot recommend under this objective: {e}")
    if record is None:
        fail("no trial of the sweep succeeded: there is nothing to recommend from")
    head = f"sweep run {run_id} (experiment {exp.experiment_name!r}), {len(opt.history)} trials; objective: "
    for line in describe(record, list(opt.tasks), record.objective or dict(opt.objective_weights), head):
        typer.echo(line)
    if run_verify:
        # The verification stage runs trials on Ray: imported only when asked for.
        from mixopt.sweep.common import SweepError
        from mixopt.sweep.recommend import verify_recommendation

        try:
            verify_recommendation(exp, run_id, target.uri, opt, record, address)
        except SweepError as e:
            fail(str(e))


def parse_objective(text: str, known: list[str]) -> dict[str, float]:
    """``retrieval_0=2,sts_1=1`` -> ``{"retrieval_0": 2.0, "sts_1": 1.0}``; weights finite and >= 0,
    not all 0, each name a score of ``known``; RecommendError (one line) otherwise."""
    out: dict[str, float] = {}
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        name, eq, value = (s.strip() for s in part.partition("="))
        try:
            weight = float(value) if eq and name else math.nan
        except ValueError:
            weight = math.nan
        if not math.isfinite(weight) or weight < 0:
            raise RecommendError(
                f"--objective {text!r}: {part!r} is not NAME=WEIGHT with a weight >= 0 "
                "(e.g. --objective retrieval_0=2,sts_1=1)"
            )
        if name not in known:
            raise RecommendError(
                f"--objective {text!r}: unknown score {name!r}; the sweep's scores are {known}"
            )
        if name in out:
            raise RecommendError(f"--objective {text!r}: {name!r} is given twice")
        out[name] = weight
    if not out or max(out.values()) <= 0:
        raise RecommendError(f"--objective {text!r}: give at least one score a positive weight")
    return out


def known_scores(opt: MixtureOptimizer) -> list[str]:
    """The score names the sweep's trials recorded (the tasks' first, in task order)."""
    names = {k for _, s in opt.score_history if s for k in s}
    return [t for t in opt.tasks if t in names] + sorted(names - set(opt.tasks))


def describe(
    record: RecommendationRecord, tasks: list[str], weights: dict[str, float], head: str
) -> list[str]:
    """The lines ``mixopt recommend`` prints: ``head`` and the objective's ``weights``, the mixture
    with its predicted mean and sd, and the best trial observed under the same objective."""
    mixture = ", ".join(f"{t}={record.proposal[t]:.3f}" for t in tasks)
    hps = "".join(
        f"; {k}={v:.4g}" if isinstance(v, float) else f"; {k}={v}"
        for k, v in record.proposal.items()
        if k not in tasks
    )
    if record.sd_pred is not None:
        pred = f"predicted {record.mean_pred:.4f} ± {record.sd_pred:.4f} (posterior mean ± sd"
        pred += f", from {record.trials} trials)" if record.trials is not None else ")"
    else:
        pred = f"observed {record.mean_pred:.4f} (too few results for the GP: the best trial)"
    lines = [
        head + ", ".join(f"{k}={w:.3f}" for k, w in weights.items()),
        f"recommended: {mixture}{hps}; {pred}",
    ]
    if record.best_observed is not None:
        proposal, value = record.best_observed
        lines.append(
            f"best observed under this objective: {value:.4f} at "
            + ", ".join(f"{t}={proposal[t]:.3f}" for t in tasks)
        )
    return lines
