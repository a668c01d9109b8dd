"""The checks of an experiment across its sections, after each section validated alone.

Each returns ``(YAML location, message)`` pairs, which :mod:`mixopt.config.loading` turns into
``FILE:LINE: yaml.path: message`` lines: task names and weights that agree (bounds, seed mixtures,
the baseline, the objective), settings that need one another (early stopping, the multi-fidelity
GP), the trainer's own options against its ``Options`` model (with the tasks as context), and for a
sweep, whether it has anything to optimise.
"""

from __future__ import annotations

import math

from pydantic import ValidationError

from mixopt.config.models import NAME_RE, SUM_TOLERANCE, Experiment
from mixopt.trial import TrainerError, load_trainer

# Pydantic puts union members and discriminator tags into error locations; they are not YAML keys.
_UNION_TAGS = {"float", "log_float", "int", "categorical", "str", "bool", "dict[str,float]", "list[str]"}


def clean_loc(loc: tuple) -> tuple:
    return tuple(
        p for p in loc if not (isinstance(p, str) and (p in _UNION_TAGS or p.startswith("function-")))
    )


def cross_problems(exp: Experiment) -> list[tuple[tuple, str]]:
    """Checks that involve more than one field; each returns the YAML location it concerns."""
    out: list[tuple[tuple, str]] = []
    names = exp.task_names
    known = set(names)
    for i, n in enumerate(names):
        if names.index(n) != i:
            out.append((("tasks", i, "name"), f"task name {n!r} is used twice"))
    for t in exp.search.bounds:
        if t not in known:
            out.append((("search", "bounds", t), f"unknown task {t!r}; tasks are {names}"))
    lo = sum(exp.search.bounds[t].min for t in names if t in exp.search.bounds)
    hi = sum(exp.search.bounds[t].max if t in exp.search.bounds else 1.0 for t in names)
    if lo > 1 + SUM_TOLERANCE:
        out.append((("search", "bounds"), f"the minimum weights sum to {lo:g} > 1: no mixture fits"))
    if hi < 1 - SUM_TOLERANCE:
        out.append((("search", "bounds"), f"the maximum weights sum to {hi:g} < 1: no mixture fits"))
    for i, mix in enumerate(exp.search.seed_mixtures):
        loc = ("search", "seed_mixtures", i)
        out += _mixture_problems(loc, mix, names, "seed mixture")
        for t in names:
            b = exp.search.bounds.get(t)
            w = mix.get(t, 0.0)
            if b is not None and not (b.min - SUM_TOLERANCE <= w <= b.max + SUM_TOLERANCE):
                out.append(
                    (loc + (t,), f"weight {w:g} for {t!r} is outside its bounds [{b.min:g}, {b.max:g}]")
                )
    if exp.verify.baseline is not None:
        out += _mixture_problems(("verify", "baseline"), exp.verify.baseline, names, "baseline")
    es = exp.sweep.early_stopping
    if es.enabled and es.method == "gp" and not exp.multi_fidelity:
        out.append(
            (
                ("sweep", "early_stopping", "method"),
                "method 'gp' predicts a trial's final value with the multi-fidelity GP, which "
                "optimizer.multi_fidelity: false turns off: drop that line (with early stopping "
                "it is on by default) or use method 'asha'",
            )
        )
    if exp.optimizer.fidelity_scale and not exp.multi_fidelity:
        out.append(
            (
                ("optimizer", "fidelity_scale"),
                "fidelity_scale scales the multi-fidelity GP's mixture term, and the multi-fidelity "
                "GP is off here: set optimizer.multi_fidelity: true (or enable sweep.early_stopping, "
                "which turns it on by default) or drop fidelity_scale",
            )
        )
    if es.enabled and es.grace_period is not None and es.grace_period >= exp.trainer.steps:
        out.append(
            (
                ("sweep", "early_stopping", "grace_period"),
                f"grace_period {es.grace_period} is not below trainer.steps ({exp.trainer.steps}): no "
                "trial could ever be stopped; lower it (default: half the steps) or turn early stopping off",
            )
        )
    if isinstance(exp.optimizer.dirichlet_alpha, dict):
        for t in exp.optimizer.dirichlet_alpha:
            if t not in known:
                out.append((("optimizer", "dirichlet_alpha", t), f"unknown task {t!r}; tasks are {names}"))
    out += _objective_problems(exp)
    for p in exp.search.hyperparameters:
        if not NAME_RE.match(p):
            out.append((("search", "hyperparameters", p), f"hyperparameter name {p!r} is not a simple name"))
        if p in known:
            out.append((("search", "hyperparameters", p), f"hyperparameter {p!r} has the name of a task"))
    return out


def nothing_to_optimise(exp: Experiment) -> list[tuple[tuple, str]]:
    """One mixture only, and no hyperparameter searched: no trial could differ from another (checked
    for a sweep: ``mixopt validate`` and ``mixopt sweep``; other commands read such a config).

    The mixtures within the bounds, ``{w : min_k <= w_k <= max_k, sum w = 1}``, are a single point
    when the minimums or the maximums sum to 1, or when at most one task's weight may vary (the
    others' are fixed, so the sum fixes it too); one task only is the last case.
    """
    names = exp.task_names
    b = exp.search.bounds
    lo = sum(b[t].min for t in names if t in b)
    hi = sum(b[t].max if t in b else 1.0 for t in names)
    if exp.search.hyperparameters or lo > 1 + SUM_TOLERANCE or hi < 1 - SUM_TOLERANCE:
        return []  # no mixture fits at all: cross_problems says so
    free = [t for t in names if t not in b or b[t].max - b[t].min > SUM_TOLERANCE]
    if len(names) == 1:
        return [
            (
                ("tasks",),
                f"one task only ({names[0]}) and no hyperparameter searched: every trial would train the "
                "same mixture, so there is nothing to optimise; add a task, or search a hyperparameter "
                "(search.hyperparameters)",
            )
        ]
    if len(free) > 1 and abs(lo - 1) > SUM_TOLERANCE and abs(hi - 1) > SUM_TOLERANCE:
        return []
    if abs(lo - 1) <= SUM_TOLERANCE:
        point = {t: b[t].min if t in b else 0.0 for t in names}
    elif abs(hi - 1) <= SUM_TOLERANCE:
        point = {t: b[t].max if t in b else 1.0 for t in names}
    else:
        point = {t: b[t].min for t in names if t not in free}
        point |= {t: 1.0 - sum(point.values()) for t in free}
    fixed = ", ".join(f"{t}={point[t]:g}" for t in names)
    return [
        (
            ("search", "bounds"),
            f"the bounds leave one mixture only ({fixed}) and no hyperparameter is searched: every "
            "trial would train it, so there is nothing to optimise; widen the bounds or search a "
            "hyperparameter (search.hyperparameters)",
        )
    ]


def _objective_problems(exp: Experiment) -> list[tuple[tuple, str]]:
    """``objective.weights`` names the experiment's tasks and is the only objective given."""
    if exp.objective is None:
        return []
    names = exp.task_names
    out: list[tuple[tuple, str]] = [
        (("objective", "weights", k), f"unknown score {k!r}; the scores are the experiment's tasks {names}")
        for k in exp.objective.weights
        if k not in names
    ]
    trainer_objective = exp.trainer.knobs.objective
    if trainer_objective != "mean_task":
        out.append(
            (
                ("trainer", "objective"),
                f"trainer.objective {trainer_objective!r} and objective.weights both say what to "
                "maximise: keep objective.weights (mean_kind is equal weights per kind) and drop "
                "trainer.objective",
            )
        )
    return out


def _mixture_problems(
    loc: tuple, mix: dict[str, float], names: list[str], what: str
) -> list[tuple[tuple, str]]:
    """A mixture's own checks: known tasks, finite weights >= 0, summing to 1."""
    out: list[tuple[tuple, str]] = []
    unknown = sorted(set(mix) - set(names))
    if unknown:
        out.append((loc, f"{what} names unknown task(s) {unknown}; tasks are {names}"))
    neg = {k: v for k, v in mix.items() if not (math.isfinite(v) and v >= 0)}
    if neg:
        out.append((loc, f"{what} weights must be finite and >= 0, got {neg}"))
    total = sum(mix.values())
    if not math.isclose(total, 1.0, rel_tol=0, abs_tol=SUM_TOLERANCE):
        out.append(
            (loc, f"{what} weights must sum to 1 (within {SUM_TOLERANCE:g}), got {total!r} from {mix}")
        )
    return out


def trainer_option_problems(exp: Experiment) -> list[tuple[tuple, str]]:
    """Validate the trainer's own options against its module's ``Options`` model."""
    try:
        options_model = load_trainer(exp.trainer.target).options
    except TrainerError as e:
        return [(("trainer", "target"), str(e))]
    unknown_hps = [
        (
            ("search", "hyperparameters", name),
            f"the trainer {exp.trainer.target!r} has no option {name!r} for this hyperparameter to set; "
            f"its options are {sorted(options_model.model_fields)}",
        )
        for name in exp.search.hyperparameters
        if name not in options_model.model_fields
    ]
    if unknown_hps:
        return unknown_hps
    try:
        # The tasks as the validation context: options that name tasks are checked against them.
        options_model.model_validate(
            exp.trainer.options, context={"tasks": {t.name: t.kind.value for t in exp.tasks}}
        )
    except ValidationError as err:
        return [
            (
                ("trainer",) + clean_loc(tuple(e["loc"])),
                f"unknown trainer option {e['loc'][-1]!r}"
                if e["type"] == "extra_forbidden"
                else e["msg"].removeprefix("Value error, "),
            )
            for e in err.errors(include_url=False)
        ]
    return []
