"""The optimizer's state dict: its configuration (the constructor's arguments) and its ledger.

Versioned (:data:`~mixopt.optimizer.ledger.STATE_FORMAT`, :data:`~mixopt.optimizer.ledger.STATE_VERSION`);
:func:`~mixopt.optimizer.ledger.migrate` reads every earlier shape, so a sweep resumes with the
optimizer it was started with. :class:`~mixopt.optimizer.MixtureOptimizer` writes its state with
:func:`to_state` and rebuilds itself from :func:`arguments` and :func:`ledger_of`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mixopt.optimizer.ledger import CONFIG_KEYS, STATE_FORMAT, STATE_VERSION, Ledger, migrate
from mixopt.space import SearchSpace


def to_state(
    config: Mapping[str, Any], warm_source: Mapping[str, Any] | None, ledger: Ledger
) -> dict[str, Any]:
    """The state of an optimizer built with ``config`` (its arguments, plain JSON types) whose
    bookkeeping is ``ledger``."""
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "config": dict(config),
        "warm_source": warm_source,
        **ledger.to_json(),
    }


def malformed(err: Exception) -> ValueError:
    """The one error for a state that cannot be read back, naming what failed."""
    return ValueError(f"MixtureOptimizer state is incomplete or malformed: {type(err).__name__}: {err}")


def arguments(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state in the current shape (:func:`migrate`) and the constructor's arguments it records
    (bounds as ``(min, max)`` pairs)."""
    state = migrate(state)
    try:
        c = {k: state["config"][k] for k in CONFIG_KEYS}
        return state, c | {"bounds": {t: tuple(b) for t, b in c["bounds"].items()}}
    except (KeyError, TypeError, ValueError) as err:
        raise malformed(err) from None


def ledger_of(state: Mapping[str, Any], space: SearchSpace) -> Ledger:
    """The state's ledger over ``space`` (the optimizer its :func:`arguments` built), checked:
    origins and indices consistent, every proposal in the space."""
    try:
        ledger = Ledger.from_json(state, space.keys)
    except (KeyError, TypeError, ValueError) as err:
        raise malformed(err) from None
    if not ledger.consistent():
        raise ValueError("MixtureOptimizer state is inconsistent: unknown origin or index out of range")
    for i, (p, _) in enumerate(ledger.asked):
        space.check_proposal(p, f"state asked[{i}]")
    return ledger
