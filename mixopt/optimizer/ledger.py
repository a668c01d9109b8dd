"""The optimizer's bookkeeping: every proposal asked, with its origin, and what became of it.

Pending, told, partial and stopped trials refer to a proposal by its index in ``asked``, so a
repeat tell or a cancelled proposal still resolves to the exact dict that was produced. The
ledger and the optimizer's configuration are saved together as a versioned state dict
(:func:`state_dict` in :class:`~mixopt.optimizer.MixtureOptimizer`); :func:`migrate` reads every
state this format has had.

Scores: a trial told with per-score values (``tell(p, scores=...)``) keeps them beside its composed
objective, in ``scores`` (parallel to ``history``) and ``partial_scores`` (parallel to
``partial``), so that a later composition (other weights, a warm start with other tasks) can be
recomputed from what was measured. A history entry with value None is a failed trial when it has
no scores, and a trial whose objective is *unknown* (a weighted score never measured: a task added
since a warm-started trial ran) when it has some.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mixopt.optimizer.defaults import EXPLOIT_LAST
from mixopt.optimizer.objective import check_objective, equal_weights
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
    "objective",
)
Scores = dict[str, float]


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
        scores: per ``history`` entry, the trial's scores (None: told a scalar, or failed).
        partial_scores: per ``partial`` entry, the scores reported with it (None: a scalar).
    """

    def __init__(self, keys: Sequence[str] = ()) -> None:
        self.keys = tuple(keys)  # a proposal's keys, for error messages
        self.asked: list[tuple[Proposal, str]] = []
        self.pending: list[int] = []
        self.history: list[tuple[int, float | None]] = []
        self.partial: list[tuple[int, float, float]] = []
        self.stopped: list[int] = []
        self.scores: list[Scores | None] = []
        self.partial_scores: list[Scores | None] = []
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

    def tell(
        self, proposal: Mapping[str, Any], value: Any, fraction: Any, scores: Scores | None = None
    ) -> None:
        """A trial's result (see ``MixtureOptimizer.tell``): told, or stopped early at ``fraction < 1``.
        ``scores`` (already checked, ``value`` composed from them) are kept beside the value."""
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
                self.partial_scores.append(scores)
            return
        i = self.find(proposal, pending_only=True)
        if i is not None:
            self.pending.remove(i)
        else:
            i = self.asked_index("tell", proposal)
        self.history.append((i, value))
        self.scores.append(scores)

    def tell_partial(
        self, proposal: Mapping[str, Any], value: Any, fraction: Any, scores: Scores | None = None
    ) -> None:
        value = check_value(value)
        if value is None:
            raise ValueError("tell_partial(): value must be a finite float (a partial result has one)")
        fraction = check_fraction(fraction, "tell_partial")
        why = "(never asked, already told or stopped); partial results are for running trials"
        i = self.pending_index("tell_partial", proposal, why)
        self.partial.append((i, fraction, value))
        self.partial_scores.append(scores)

    def cancel(self, proposal: Mapping[str, Any]) -> None:
        why = "(never asked, already told, or already cancelled); pending proposals are listed by .pending"
        self.pending.remove(self.pending_index("cancel", proposal, why))

    def warm(self, records: Sequence[tuple[Proposal | None, float | None, Scores | None]]) -> tuple[int, int]:
        """Record each reused ``(proposal, value, scores)`` as told with origin ``"warm"``; a
        proposal None is a dropped trial. Returns ``(reused, dropped)``."""
        reused = dropped = 0
        for carried, value, scores in records:
            if carried is None:
                dropped += 1
                continue
            self.history.append((self.add(carried, "warm", pending=False), check_value(value)))
            self.scores.append(scores)
            reused += 1
        return reused, dropped

    def successes(self) -> list[tuple[int, float]]:
        """``(index, value)`` of the successful full-fidelity observations, in tell order."""
        return [(i, v) for i, v in self.history if v is not None]

    def told(self) -> list[tuple[Proposal, float]]:
        """``(proposal, value)`` of the successful full-fidelity observations, in tell order."""
        return [(self.asked[i][0], v) for i, v in self.history if v is not None]

    def failed(self) -> list[Proposal]:
        """Proposals of failed trials (value None, no scores), in tell order."""
        return [self.asked[i][0] for (i, v), s in zip(self.history, self.scores) if v is None and s is None]

    def scored(self) -> list[tuple[int, Scores]]:
        """``(index, scores)`` of the full-fidelity observations told with scores, in tell order."""
        return [(i, s) for (i, _), s in zip(self.history, self.scores) if s is not None]

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
            "scores": [None if s is None else dict(s) for s in self.scores],
            "partial_scores": [None if s is None else dict(s) for s in self.partial_scores],
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
        led.scores = [_scores(s) for s in state["scores"]]
        led.partial_scores = [_scores(s) for s in state["partial_scores"]]
        return led

    def consistent(self) -> bool:
        n = len(self.asked)
        indices = self.pending + [i for i, _ in self.history] + [i for i, _, _ in self.partial] + self.stopped
        return (
            len(self.scores) == len(self.history)
            and len(self.partial_scores) == len(self.partial)
            and all(o in ORIGINS for _, o in self.asked)
            and all(0 <= i < n for i in indices)
            and all(0.0 < f <= 1.0 and math.isfinite(v) for _, f, v in self.partial)
        )


def _scores(s: Any) -> Scores | None:
    return None if s is None else {str(k): float(v) for k, v in dict(s).items()}


def migrate(state: Mapping[str, Any]) -> dict[str, Any]:
    """A state of any earlier shape in the current one (a copy; the argument is not modified).

    Keys added to version 1 over time are filled with the value that reproduces what the state's
    writer did: ``noise_sd`` None (no noise prior), ``multi_fidelity`` False, ``fidelity_scale``
    False (absent: the scale did not exist), ``budget`` None and ``exploit_last`` the default
    (no exploitation steps without a budget), no partial or stopped trials. ``fidelity_scale:
    "auto"`` (a rule that switched the scale on from the finished trials' early ranking, since
    removed) reads as False, the value it held until six finished trials had early reports.
    A state from before per-score observations has no scores and the plain mean over its tasks as
    ``objective``. ``surrogate`` (the model that proposed: ``"single"``, one GP on the objective,
    the only one now; or ``"composite"``, one GP per score, since removed) is dropped: a composite
    state's trials are read as they are and the single GP proposes from them.

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
    # Proxy observations (merged task experts scored without training, an option since removed)
    # are dropped: the GP models trained trials only.
    out.pop("proxy", None)
    if "scores" not in out and isinstance(out.get("history"), list):
        out["scores"] = [None] * len(out["history"])
    if "partial_scores" not in out and isinstance(out.get("partial"), list):
        out["partial_scores"] = [None] * len(out["partial"])
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
        # Some states hold a benchmark's stream of acquisition draws: not the optimizer's configuration.
        c.pop("acquisition_stream", None)
        c.pop("surrogate", None)
        c.setdefault("objective", None)
        out["config"] = c
    return out


WarmRecord = tuple[Mapping[str, Any], float | None, Scores | None]


def warm_records(
    source: Mapping[str, Any] | Sequence[Sequence[Any]],
) -> tuple[list[WarmRecord], dict[str, float] | None]:
    """A warm-start source's told trials ``(proposal, value, scores or None)`` and its composition.

    ``source``: a state (any version; its composition is its ``objective``, or the plain mean over
    its tasks for a state from before scores), or ``(proposal, value)`` pairs (composition None:
    taken as this optimizer's) or ``(proposal, value, scores)`` triples.
    """
    if not isinstance(source, Mapping):
        records: list[WarmRecord] = []
        for n, r in enumerate(source):
            if not isinstance(r, (tuple, list)) or len(r) not in (2, 3):
                raise ValueError(
                    f"warm_start(): source[{n}] must be (proposal, value) or (proposal, value, scores), got {r!r}"
                )
            records.append((r[0], r[1], None if len(r) == 2 or r[2] is None else dict(r[2])))
        return records, None
    if source.get("format") != STATE_FORMAT:
        raise ValueError(f"warm_start(): not a MixtureOptimizer state (expected format {STATE_FORMAT!r})")
    try:
        state = migrate(source)
        asked = [a["proposal"] for a in state["asked"]]
        scores = state["scores"]
        records = [(asked[int(i)], v, _scores(s)) for (i, v), s in zip(state["history"], scores, strict=True)]
        c = state["config"]
        weights = equal_weights(c["tasks"]) if c["objective"] is None else check_objective(c["objective"])
        return records, weights
    except (KeyError, TypeError, IndexError, ValueError) as err:
        raise ValueError(
            f"warm_start(): the source state is malformed: {type(err).__name__}: {err}"
        ) from None
