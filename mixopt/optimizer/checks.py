"""Argument checks of the optimizer, one implementation for Python callers and the config.

:class:`~mixopt.optimizer.MixtureOptimizer` calls them on its arguments, so it rejects bad ones
when used alone from Python; ``mixopt.config`` calls :func:`check_alpha` and :func:`check_beta`
from its validators, so a YAML file gets the same rule (with its file, line and YAML path).
Each raises ``ValueError`` with a message that names the argument and what to give instead.
Importing this module loads neither torch nor botorch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """An integer that is not a bool (``True`` is an int in Python, never a count here)."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def check_n_seeds(n_seeds: Any) -> int:
    if not is_int(n_seeds) or n_seeds < 0:
        raise ValueError(f"n_seeds must be an integer >= 0, got {n_seeds!r}")
    return int(n_seeds)


def check_beta(beta: Any) -> float:
    if not is_number(beta) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    return float(beta)


def check_random_state(random_state: Any) -> int:
    if not is_int(random_state):
        raise ValueError(f"random_state must be an integer, got {random_state!r}")
    return int(random_state)


def check_noise_sd(noise_sd: Any) -> float | None:
    if noise_sd is None:
        return None
    if not is_number(noise_sd) or not math.isfinite(noise_sd) or noise_sd <= 0:
        raise ValueError(f"noise_sd must be a positive finite number (objective units), got {noise_sd!r}")
    return float(noise_sd)


def check_multi_fidelity(multi_fidelity: Any) -> bool:
    if not isinstance(multi_fidelity, bool):
        raise ValueError(f"multi_fidelity must be true or false, got {multi_fidelity!r}")
    return multi_fidelity


def check_fidelity_scale(fidelity_scale: Any, multi_fidelity: bool) -> bool:
    if not isinstance(fidelity_scale, bool):
        raise ValueError(f"fidelity_scale must be true or false, got {fidelity_scale!r}")
    if fidelity_scale and not multi_fidelity:
        raise ValueError(
            f"fidelity_scale={fidelity_scale!r} needs multi_fidelity=True (config optimizer.multi_fidelity): "
            "it scales the multi-fidelity GP's mixture term"
        )
    return fidelity_scale


def check_budget(budget: Any) -> int | None:
    if budget is not None and (not is_int(budget) or budget < 1):
        raise ValueError(
            f"budget must be an integer >= 1 (the sweep's number of trials) or None, got {budget!r}"
        )
    return None if budget is None else int(budget)


def check_exploit_last(exploit_last: Any) -> int:
    if not is_int(exploit_last) or exploit_last < 0:
        raise ValueError(f"exploit_last must be an integer >= 0, got {exploit_last!r}")
    return int(exploit_last)


def check_max_removed(max_removed: Any) -> float:
    if not is_number(max_removed) or not 0 <= max_removed < 1:
        raise ValueError(f"warm_start(): max_removed must be in [0, 1), got {max_removed!r}")
    return float(max_removed)


def check_alpha(
    alpha: float | Mapping[str, float], tasks: Sequence[str] | None = None
) -> float | dict[str, float]:
    """The Dirichlet concentration: one positive finite number, or task -> number.

    ``tasks``: the known task names, to reject unknown ones (None: not checked here; the config
    reports them per YAML path).
    """

    def ok(a: Any) -> bool:
        return is_number(a) and math.isfinite(a) and a > 0

    if isinstance(alpha, Mapping):
        unknown = [] if tasks is None else sorted(set(alpha) - set(tasks))
        if unknown:
            raise ValueError(
                f"dirichlet_alpha names unknown task(s) {unknown}; tasks are {list(tasks or [])}"
            )
        bad = {t: a for t, a in alpha.items() if not ok(a)}
        if bad:
            raise ValueError(f"dirichlet_alpha values must be positive finite numbers, got {bad}")
        return {t: float(a) for t, a in alpha.items()}
    if not ok(alpha):
        raise ValueError(
            f"dirichlet_alpha must be a positive finite number (or task -> number), got {alpha!r}"
        )
    return float(alpha)
