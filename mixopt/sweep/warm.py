"""A new sweep's optimizer: the one its experiment describes, seeded with an earlier sweep's trials.

:func:`optimizer_for` builds :class:`~mixopt.optimizer.MixtureOptimizer` from the experiment's
``search`` and ``optimizer`` sections. ``optimizer.warm_start`` (:func:`warm_start`): the optimizer reuses trials per score (``MixtureOptimizer.warm_start``): a reused trial brings the
scores of the tasks this sweep still has, its objective is recomposed under this sweep's
weights, and a task the source never scored starts unobserved. What was reused is said on the
console (:func:`warm_line`) and recorded as the parent run's params (``warm_start*``); the reused
observations carry origin ``warm`` in the optimizer state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixopt.config import Experiment
from mixopt.optimizer import MixtureOptimizer
from mixopt.sweep.common import SweepError
from mixopt.tracking import recorded_optimizer_state


def optimizer_for(exp: Experiment) -> MixtureOptimizer:
    """The optimizer an experiment config describes (``exp.search`` and ``exp.optimizer``)."""
    return MixtureOptimizer(
        exp.task_names,
        n_seeds=exp.optimizer.n_seeds,
        seed_mixtures=list(exp.search.seed_mixtures),
        dirichlet_alpha=exp.optimizer.dirichlet_alpha,
        beta=exp.optimizer.beta,
        random_state=exp.optimizer.random_state,
        hyperparameters=exp.search.hyperparameters,
        bounds=exp.search.bounds,
        noise_sd=exp.optimizer.noise_sd,
        multi_fidelity=exp.multi_fidelity,
        fidelity_scale=exp.optimizer.fidelity_scale,
        budget=exp.optimizer.max_trials,
        exploit_last=exp.optimizer.exploit_last,
        objective=exp.objective_weights,
    )


def warm_start(opt: MixtureOptimizer, exp: Experiment, uri: str) -> dict[str, Any]:
    """Apply ``optimizer.warm_start`` to a fresh optimizer; the parent run's params naming the
    source and counting what was reused (``{}`` without a warm start). SweepError (one line) when
    the source is unusable. :func:`warm_line` says the same on the console."""
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
    info = opt.warm_source or {}
    return {
        "warm_start": source,
        "warm_start_reused": reused,
        "warm_start_dropped": dropped,
        "warm_start_scores_reused": ",".join(info.get("scores_reused", [])),
        "warm_start_scores_new": ",".join(info.get("scores_new", [])),
    }


def warm_line(params: dict[str, Any], exp: Experiment) -> str:
    """``warm start: 6 trials from sweep <id>, scores for 5 of 6 tasks reused, 1 task new`` from
    :func:`warm_start`'s params (counts out of this sweep's scores; new tasks and trials not
    reused named after)."""
    source, reused, dropped = params["warm_start"], params["warm_start_reused"], params["warm_start_dropped"]
    old = [s for s in params["warm_start_scores_reused"].split(",") if s]
    new = [s for s in params["warm_start_scores_new"].split(",") if s]
    from_file = exp.optimizer.warm_start is not None and exp.optimizer.warm_start.state is not None
    where = f"state file {source}" if from_file else f"sweep {source.rsplit('/', 1)[-1]}"
    total = len(old) + len(new)
    line = (
        f"warm start: {reused} trial{'s' * (reused != 1)} from {where}, scores for {len(old)} of "
        f"{total} task{'s' * (total != 1)} reused, {len(new)} task{'s' * (len(new) != 1)} new"
    )
    if new:
        line += f" ({', '.join(new)})"
    if dropped:
        line += f"; {dropped} not reused (too much of their data removed, or no scores to recompose)"
    return line
