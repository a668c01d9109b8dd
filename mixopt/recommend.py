"""``mixopt recommend``: a sweep's recommended mixture under a composition of its task scores.

The optimizer models each task's score and composes the objective from them (issue 34;
Astudillo & Frazier, arXiv 1906.01537): for weights ``c`` the composed posterior is Gaussian with
mean ``Σ c_k μ_k(x)`` and variance ``Σ c_k² σ_k²(x)``, so a team that decides after the sweep
that retrieval counts twice asks ``--objective retrieval=2,sts=1,...`` and gets the maximiser of
that posterior mean from the recorded trials alone (``MixtureOptimizer.recommend(objective)``),
no trial rerun. ``--verify`` then runs the verification stage (:mod:`mixopt.sweep.verify`: the
recommended mixture and the baseline on the same fresh seeds) with the trials reporting the new
composition, recorded in MLflow as a run of role ``recommend`` beside the sweep
(:mod:`mixopt.sweep.recommend`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from mixopt.config import Experiment
from mixopt.optimizer.recommendation import RecommendationRecord, recommendation_record


class RecommendError(ValueError):
    """What ``mixopt recommend`` cannot do, in one line."""


@dataclass
class Found:
    """The sweep a recommendation is made from: its config, parent run, tracking store, optimizer."""

    exp: Experiment
    run_id: str
    uri: str
    opt: Any


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
    if not out or sum(out.values()) <= 0:
        raise RecommendError(f"--objective {text!r}: give at least one score a positive weight")
    return out


def find_sweep(exp: Experiment | None, experiment: str | None, tracking_uri: str | None) -> Found:
    """The newest sweep of ``experiment`` (else of the YAML's experiment, else of any), as ``mixopt
    soup`` finds it, with its optimizer restored from the state it recorded."""
    from mixopt.config import ConfigError
    from mixopt.optimizer import MixtureOptimizer
    from mixopt.tracking import store

    uri = tracking_uri or (exp.tracking.resolved_uri() if exp is not None else store.resolve_uri(None))
    if not store.store_exists(uri):
        raise RecommendError(f"no MLflow store at {uri}: run `mixopt sweep` first, or give --tracking-uri")
    client = store.connect(uri)
    name = experiment or (exp.experiment_name if exp is not None else None)
    try:
        if exp is None:
            exp, run_id = store.recorded_experiment(uri, name)
            run = store.get_run(client, run_id)
        else:
            found = store.experiment_by_name(client, name or exp.experiment_name)
            run = store.newest_sweep(client, [found.experiment_id]) if found is not None else None
            if run is None:
                raise LookupError(f"no sweep of experiment {name!r} in {uri}; run `mixopt sweep` first")
    except (LookupError, ConfigError) as e:
        raise RecommendError(str(e).replace("\n", "; ")) from None
    state = store.recorded_state(client, run)
    if state is None:
        raise RecommendError(f"sweep run {run.info.run_id} recorded no optimizer state (file or artifact)")
    return Found(exp, run.info.run_id, uri, MixtureOptimizer.from_state_dict(state))


def known_scores(opt: Any) -> list[str]:
    """The score names the sweep's trials recorded (the tasks' first, in task order)."""
    names = {k for _, s in opt.score_history if s for k in s}
    return [t for t in opt.tasks if t in names] + sorted(names - set(opt.tasks))


def describe(found: Found, record: RecommendationRecord) -> list[str]:
    """The lines ``mixopt recommend`` prints: the sweep, the objective, the mixture with its
    predicted mean and sd, and the best trial observed under the same objective."""
    tasks = list(found.opt.tasks)
    used = record.objective if record.objective is not None else dict(found.opt.objective_weights)
    weights = ", ".join(f"{k}={w:.3f}" for k, w in used.items())
    mixture = ", ".join(f"{t}={record.proposal[t]:.3f}" for t in tasks)
    hps = "".join(
        f"; {k}={v:.4g}" if isinstance(v, float) else f"; {k}={v}"
        for k, v in record.proposal.items()
        if k not in tasks
    )
    if record.sd_pred is not None:
        pred = f"predicted {record.mean_pred:.4f} ± {record.sd_pred:.4f} (posterior mean ± sd)"
    else:
        pred = f"observed {record.mean_pred:.4f} (too few results for the GP: the best trial)"
    lines = [
        f"sweep run {found.run_id} (experiment {found.exp.experiment_name!r}), "
        f"{len(found.opt.history)} trials; objective: {weights}",
        f"recommended: {mixture}{hps}; {pred}",
    ]
    if record.best_observed is not None:
        proposal, value = record.best_observed
        lines.append(
            f"best observed under this objective: {value:.4f} at "
            + ", ".join(f"{t}={proposal[t]:.3f}" for t in tasks)
        )
    return lines


def command(
    experiment_file: Optional[Path] = typer.Argument(
        None,
        metavar="[EXPERIMENT.yaml]",
        help="The sweep's experiment YAML. Default: the config the newest sweep recorded.",
    ),
    experiment: Optional[str] = typer.Option(
        None, "--experiment", help="MLflow experiment of the sweep (default: the YAML's, else the newest)."
    ),
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
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address for --verify."),
) -> None:
    """The recommended mixture under a composition of the task scores, from a sweep's recorded trials."""
    from mixopt.cli import _fail, _load

    exp = _load(experiment_file) if experiment_file is not None else None
    try:
        found = find_sweep(exp, experiment, tracking_uri)
        weights = None
        if objective is not None:
            known = known_scores(found.opt)
            if not known:
                raise RecommendError(
                    f"--objective: sweep run {found.run_id} recorded no per-task scores (it predates "
                    "them); only its own objective can be recommended: drop --objective"
                )
            weights = parse_objective(objective, known)
        try:
            record = recommendation_record(found.opt, weights)
        except (ValueError, RuntimeError) as e:
            raise RecommendError(f"cannot recommend under this objective: {e}") from None
        if record is None:
            raise RecommendError("no trial of the sweep succeeded: there is nothing to recommend from")
    except RecommendError as e:
        _fail(str(e))
    for line in describe(found, record):
        typer.echo(line)
    if run_verify:
        from mixopt.sweep.common import SweepError
        from mixopt.sweep.recommend import verify_recommendation

        try:
            verify_recommendation(found.exp, found.run_id, found.uri, found.opt, record, address)
        except SweepError as e:
            _fail(str(e))
