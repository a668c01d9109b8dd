"""The optimizer's state dict: its configuration (the constructor's arguments) and its ledger.

Versioned (:data:`~mixopt.optimizer.ledger.STATE_FORMAT`, :data:`~mixopt.optimizer.ledger.STATE_VERSION`);
:func:`~mixopt.optimizer.ledger.migrate` reads every earlier shape, so a sweep resumes with the
optimizer it was started with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mixopt.optimizer.ledger import CONFIG_KEYS, STATE_FORMAT, STATE_VERSION, Ledger, migrate
from mixopt.space import Proposal

if TYPE_CHECKING:
    from mixopt.optimizer.optimizer import MixtureOptimizer


def to_state(opt: MixtureOptimizer, user_seeds: list[Proposal], ledger: Ledger) -> dict[str, Any]:
    """``opt``'s state: plain JSON types only."""
    space = opt.space
    alpha = opt.dirichlet_alpha
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "config": {
            "tasks": list(space.tasks),
            "n_seeds": opt.n_seeds,
            # The validated, complete seed proposals: plain floats, and their hyperparameters
            # fixed, so a restored optimizer rebuilds exactly the same seeds.
            "seed_mixtures": [dict(p) for p in user_seeds],
            "dirichlet_alpha": dict(alpha) if isinstance(alpha, dict) else alpha,
            "beta": opt.beta,
            "random_state": opt.random_state,
            "hyperparameters": space.hyperparameters_json(),
            "bounds": space.bounds_json(),
            "noise_sd": opt.prior_noise_sd,
            "multi_fidelity": opt.multi_fidelity,
            "fidelity_scale": opt.fidelity_scale,
            "budget": opt.budget,
            "exploit_last": opt.exploit_last,
            "objective": None if opt.objective is None else dict(opt.objective),
            "surrogate": opt.surrogate,
        },
        "warm_source": opt.warm_source,
        **ledger.to_json(),
    }


def from_state(cls: type[MixtureOptimizer], state: Mapping[str, Any]) -> tuple[MixtureOptimizer, Ledger]:
    """A new optimizer with the state's configuration, and the state's ledger (checked)."""
    state = migrate(state)
    try:
        # The config's keys are the constructor's arguments (bounds as (min, max) pairs).
        c = {k: state["config"][k] for k in CONFIG_KEYS}
        opt = cls(**c | {"bounds": {t: tuple(b) for t, b in c["bounds"].items()}})
        ledger = Ledger.from_json(state, opt.space.keys)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"MixtureOptimizer state is incomplete or malformed: {type(err).__name__}: {err}"
        ) from None
    if not ledger.consistent():
        raise ValueError("MixtureOptimizer state is inconsistent: unknown origin or index out of range")
    for i, (p, _) in enumerate(ledger.asked):
        opt.space.check_proposal(p, f"state asked[{i}]")
    for i, (p, _, _) in enumerate(ledger.proxy):
        opt.space.check_proposal(p, f"state proxy[{i}]")
    return opt, ledger
