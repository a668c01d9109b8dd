"""The optimizer's bookkeeping: every proposal asked, with its origin, and what became of it.

Pending, told, partial and stopped trials refer to a proposal by its index in ``asked``, so a
repeat tell or a cancelled proposal still resolves to the exact dict that was produced. The
ledger and the optimizer's configuration are saved together as a versioned state dict
(:func:`state_dict` in :class:`~mixopt.optimizer.MixtureOptimizer`); :func:`migrate` reads every
state this format has had.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mixopt.optimizer.defaults import EXPLOIT_LAST
from mixopt.space import Proposal

STATE_FORMAT = "mixopt.MixtureOptimizer"
STATE_VERSION = 1
ORIGINS = ("seed", "bo", "random", "warm", "exploit")
# The state's "config": MixtureOptimizer's arguments, by name.
CONFIG_KEYS = (
    "tasks",
    "n_seeds",
    "seed_mixtures",
    "dirichlet_alpha",
    "beta",
    "random_state",
    "hyperparameters",
    "bounds",
    "noise_sd",
    "multi_fidelity",
    "fidelity_scale",
    "budget",
    "exploit_last",
    "acquisition_stream",
)


def check_value(value: Any) -> float | None:
    """A told objective: a finite float, or None for a failed trial."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(
            f"tell(): value must be a float to maximise, or None for a failed trial; got {value!r}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(
            f"tell(): value {value} is not finite; a trial that produced no usable objective "
            "is a failed trial: tell(proposal, None)"
        )
    return value


def check_fraction(fraction: Any, method: str) -> float:
    """The share of a trial's step budget done, in (0, 1]."""
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float, np.integer, np.floating))
        or not 0.0 < float(fraction) <= 1.0
    ):
        raise ValueError(
            f"{method}(): fraction is the share of the step budget done, in (0, 1]; got {fraction!r}"
        )
    return float(fraction)


class Ledger:
    """Asked proposals and their fate.

    Attributes:
        asked: ``(proposal, origin)`` per proposal ever asked (or reused by a warm start).
        pending: indices asked and not yet told, stopped or cancelled, in ask order.
        history: ``(index, value)`` in tell order; value None marks a failed trial.
        partial: ``(index, fraction of the step budget in (0, 1], value)`` in tell order.
        stopped: indices of trials stopped early (no longer pending, no full-fidelity value).
    """

    def __init__(self, keys: Sequence[str] = ()) -> None:
        self.keys = tuple(keys)  # a proposal's keys, for error messages
        self.asked: list[tuple[Proposal, str]] = []
        self.pending: list[int] = []
        self.history: list[tuple[int, float | None]] = []
        self.partial: list[tuple[int, float, float]] = []
        self.stopped: list[int] = []
        self._features: list[np.ndarray] = []  # encode(asked[i]), filled lazily

    def add(self, proposal: Proposal, origin: str, *, pending: bool) -> int:
        self.asked.append((proposal, origin))
        i = len(self.asked) - 1
        if pending:
            self.pending.append(i)
        return i

    def proposal(self, i: int) -> Proposal:
        return self.asked[i][0]

    def origin(self, i: int) -> str:
        return self.asked[i][1]

    def find(self, proposal: Mapping[str, Any], *, pending_only: bool) -> int | None:
        """The index of ``proposal`` (``==`` an asked dict): the first pending one, or the latest asked."""
        if not isinstance(proposal, Mapping):
            raise ValueError(
                f"a proposal is a dict returned by ask(), got {type(proposal).__name__}: {proposal!r}"
            )
        target = dict(proposal)
        if pending_only:
            return next((i for i in self.pending if self.asked[i][0] == target), None)
        return next((i for i in reversed(range(len(self.asked))) if self.asked[i][0] == target), None)

    def pending_index(self, method: str, proposal: Mapping[str, Any], why: str) -> int:
        """The index of a pending ``proposal``; ``why`` ends the error message when it is not."""
        i = self.find(proposal, pending_only=True)
        if i is None:
            raise ValueError(f"{method}(): {dict(proposal)} is not pending {why}")
        return i

    def asked_index(self, method: str, proposal: Mapping[str, Any]) -> int:
        i = self.find(proposal, pending_only=False)
        if i is None:
            raise ValueError(
                f"{method}(): {dict(proposal)} was never asked by this optimizer. Pass back a dict returned by "
                f"ask() unchanged (same keys {self.keys}, same values; a JSON round trip is fine)."
            )
        return i

    def tell(self, proposal: Mapping[str, Any], value: Any, fraction: Any) -> None:
        """A trial's result (see ``MixtureOptimizer.tell``): told, or stopped early at ``fraction < 1``."""
        value = check_value(value)
        fraction = check_fraction(fraction, "tell")
        if fraction < 1.0:
            i = self.find(proposal, pending_only=True)
            if i is None:
                raise ValueError(
                    f"tell(..., fraction={fraction}): {dict(proposal)} is not pending; only a running "
                    "trial can be stopped early"
                )
            self.pending.remove(i)
            self.stopped.append(i)
            # Usually the trial's last report, already told by tell_partial: kept once.
            if value is not None and (i, fraction, value) not in self.partial:
                self.partial.append((i, fraction, value))
            return
        i = self.find(proposal, pending_only=True)
        if i is not None:
            self.pending.remove(i)
        else:
            i = self.asked_index("tell", proposal)
        self.history.append((i, value))

    def tell_partial(self, proposal: Mapping[str, Any], value: Any, fraction: Any) -> None:
        value = check_value(value)
        if value is None:
            raise ValueError("tell_partial(): value must be a finite float (a partial result has one)")
        fraction = check_fraction(fraction, "tell_partial")
        why = "(never asked, already told or stopped); partial results are for running trials"
        i = self.pending_index("tell_partial", proposal, why)
        self.partial.append((i, fraction, value))

    def cancel(self, proposal: Mapping[str, Any]) -> None:
        why = "(never asked, already told, or already cancelled); pending proposals are listed by .pending"
        self.pending.remove(self.pending_index("cancel", proposal, why))

    def warm(
        self,
        pairs: Sequence[tuple[Mapping[str, Any], float | None]],
        carry: Callable[[Mapping[str, Any]], Proposal | None],
    ) -> tuple[int, int]:
        """Record each successful ``(proposal, value)`` as told, carried onto this space by
        ``carry`` (None: dropped), with origin ``"warm"``. Returns ``(reused, dropped)``."""
        reused = dropped = 0
        for proposal, value in pairs:
            if value is None:
                continue
            value = check_value(value)
            carried = carry(proposal)
            if carried is None:
                dropped += 1
                continue
            self.history.append((self.add(carried, "warm", pending=False), value))
            reused += 1
        return reused, dropped

    def successes(self) -> list[tuple[int, float]]:
        """``(index, value)`` of the successful full-fidelity observations, in tell order."""
        return [(i, v) for i, v in self.history if v is not None]

    def told(self) -> list[tuple[Proposal, float]]:
        """``(proposal, value)`` of the successful full-fidelity observations, in tell order."""
        return [(self.asked[i][0], v) for i, v in self.history if v is not None]

    def failed(self) -> list[Proposal]:
        return [self.asked[i][0] for i, v in self.history if v is None]

    def live(self) -> list[int]:
        """Indices of pending, told and stopped proposals (each once): what a new one must not repeat."""
        return list(dict.fromkeys(list(self.pending) + [i for i, _ in self.history] + self.stopped))

    def taken_features(self, encode: Callable[[Proposal], np.ndarray], dim: int) -> np.ndarray:
        """Features ``(m, dim)`` of the pending and told proposals."""
        idx = self.live()
        for i in range(len(self._features), len(self.asked)):  # encode each asked proposal once
            self._features.append(encode(self.asked[i][0]))
        return np.array([self._features[i] for i in idx]) if idx else np.zeros((0, dim))

    def cancelled(self, candidates: Sequence[Proposal]) -> Proposal | None:
        """The first of ``candidates`` among the first ``len(asked)`` that was asked, then
        cancelled (neither pending, told nor stopped)."""
        live = (
            [self.asked[i][0] for i in self.pending]
            + [self.asked[i][0] for i, _ in self.history]
            + [self.asked[i][0] for i in self.stopped]
        )
        for p in candidates[: len(self.asked)]:
            if p not in live:
                return p
        return None

    def issued(self) -> int:
        """How many of the sweep's own proposals count towards its budget (not cancelled, not reused)."""
        live = set(self.pending) | {i for i, _ in self.history} | set(self.stopped)
        return sum(1 for i in live if self.asked[i][1] != "warm")

    def to_json(self) -> dict[str, Any]:
        return {
            "asked": [{"proposal": dict(p), "origin": o} for p, o in self.asked],
            "pending": list(self.pending),
            "history": [[i, v] for i, v in self.history],
            "partial": [[i, f, v] for i, f, v in self.partial],
            "stopped": list(self.stopped),
        }

    @classmethod
    def from_json(cls, state: Mapping[str, Any], keys: Sequence[str]) -> Ledger:
        """The ledger of a (migrated) state; ``KeyError``/``TypeError``/``ValueError`` when malformed."""
        led = cls(keys)
        led.asked = [(dict(a["proposal"]), str(a["origin"])) for a in state["asked"]]
        led.pending = [int(i) for i in state["pending"]]
        led.history = [(int(i), None if v is None else float(v)) for i, v in state["history"]]
        led.partial = [(int(i), float(f), float(v)) for i, f, v in state["partial"]]
        led.stopped = [int(i) for i in state["stopped"]]
        return led

    def consistent(self) -> bool:
        n = len(self.asked)
        indices = self.pending + [i for i, _ in self.history] + [i for i, _, _ in self.partial] + self.stopped
        return (
            all(o in ORIGINS for _, o in self.asked)
            and all(0 <= i < n for i in indices)
            and all(0.0 < f <= 1.0 and math.isfinite(v) for _, f, v in self.partial)
        )


def migrate(state: Mapping[str, Any]) -> dict[str, Any]:
    """A state of any earlier shape as today's (a copy; the argument is not modified).

    Keys added to version 1 over time are filled with the value that reproduces what the state's
    writer did: ``noise_sd`` None (no noise prior), ``multi_fidelity`` False, ``fidelity_scale``
    False (absent: the scale did not exist), ``budget`` None and ``exploit_last`` the default
    (no exploitation steps without a budget), no partial or stopped trials. ``fidelity_scale:
    "auto"`` (a rule that switched the scale on from the finished trials' early ranking, since
    removed) reads as False, the value it held until six finished trials had early reports.

    Raises:
        ValueError: not a MixtureOptimizer state, or another version.
    """
    if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
        raise ValueError(
            f"not a MixtureOptimizer state (expected format {STATE_FORMAT!r}); pass what state_dict() returned"
        )
    if state.get("version") != STATE_VERSION:
        raise ValueError(
            f"MixtureOptimizer state version {state.get('version')!r} is not supported "
            f"(this mixopt reads version {STATE_VERSION})"
        )
    out = dict(state)
    out.setdefault("partial", [])
    out.setdefault("stopped", [])
    config = state.get("config")
    if isinstance(config, Mapping):
        c = dict(config)
        c.setdefault("noise_sd", None)
        c.setdefault("multi_fidelity", False)
        c["multi_fidelity"] = bool(c["multi_fidelity"])
        if c.get("fidelity_scale", "auto") == "auto":
            c["fidelity_scale"] = False
        c.setdefault("budget", None)
        c.setdefault("exploit_last", EXPLOIT_LAST)
        c.setdefault("acquisition_stream", 0)
        out["config"] = c
    return out


def warm_pairs(
    source: Mapping[str, Any] | Sequence[tuple[Mapping[str, Any], float | None]],
) -> list[tuple[Mapping[str, Any], float | None]]:
    """``(proposal, value)`` pairs of a warm-start source: a state's told trials, or the pairs given."""
    if not isinstance(source, Mapping):
        return list(source)
    if source.get("format") != STATE_FORMAT:
        raise ValueError(f"warm_start(): not a MixtureOptimizer state (expected format {STATE_FORMAT!r})")
    try:
        asked = [a["proposal"] for a in source["asked"]]
        return [(asked[int(i)], v) for i, v in source["history"]]
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(
            f"warm_start(): the source state is malformed: {type(err).__name__}: {err}"
        ) from None
