"""The recommendation as a sweep records it: :class:`RecommendationRecord`, built by
:func:`recommendation_record`.

:meth:`MixtureOptimizer.recommend` answers "which mixture" (proposal, predicted mean and sd); the
record adds what a reader of the sweep needs beside it: how many trials the prediction rests on,
the trial noise the model believes (median and 95 % interval), the best trial
observed under the same objective (the winner's-curse comparison) and, for a recommendation under
another composition (``mixopt recommend --objective``), that composition. The sweep's
verification plan (``verify_plan.json``), its ``recommended.json``, the report and ``mixopt
recommend`` all hold this one record; :meth:`RecommendationRecord.to_json` is its file form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mixopt.optimizer.objective import check_objective, compose

if TYPE_CHECKING:  # annotations only: the sweep's summary and the CLI import this without torch
    from mixopt.optimizer.optimizer import MixtureOptimizer


@dataclass(frozen=True)
class RecommendationRecord:
    """A recommended mixture and what backs it.

    Attributes:
        proposal: task weights (+ hyperparameters) to use.
        mean_pred: predicted objective there (posterior mean; for ``source="best_observed"``, the
            observed value).
        sd_pred: posterior sd of the latent objective there; None for ``"best_observed"``.
        source: ``"posterior_mean"`` or ``"best_observed"`` (:class:`~mixopt.optimizer.policy.Recommendation`).
        noise_sd: the GP's fitted observation-noise sd (objective units), None before it is fitted.
        best_observed: the best trial ``(proposal, objective)`` under the same objective, if any.
        objective: the composition (score -> weight, summing to 1) it was made under; None: the
            sweep's own.
        trials: how many trained trials the prediction rests on (None for ``"best_observed"``).
        noise_sd_range: the 95 % posterior interval of the trial noise sd (``noise_sd`` is its median).
    """

    proposal: dict[str, Any]
    mean_pred: float
    sd_pred: float | None
    source: str
    noise_sd: float | None
    best_observed: tuple[dict[str, Any], float] | None
    objective: dict[str, float] | None = None
    trials: int | None = None
    noise_sd_range: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, keys in the order sweeps record them (``trials``, ``noise_sd_range`` and
        ``objective`` only when set, so a record read from an earlier sweep writes back the same)."""
        out: dict[str, Any] = {
            "proposal": dict(self.proposal),
            "mean_pred": self.mean_pred,
            "sd_pred": self.sd_pred,
            "source": self.source,
            "noise_sd": self.noise_sd,
            "best_observed": None
            if self.best_observed is None
            else {"proposal": dict(self.best_observed[0]), "objective": self.best_observed[1]},
        }
        if self.trials is not None:
            out["trials"] = self.trials
        if self.noise_sd_range is not None:
            out["noise_sd_range"] = list(self.noise_sd_range)
        if self.objective is not None:
            out["objective"] = dict(self.objective)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecommendationRecord:
        """The record of :meth:`to_json`'s form (``recommended.json`` and ``verify_plan.json`` hold it;
        their other keys are ignored)."""
        best = data.get("best_observed")
        objective = data.get("objective")
        return cls(
            proposal=dict(data["proposal"]),
            mean_pred=float(data["mean_pred"]),
            sd_pred=None if data.get("sd_pred") is None else float(data["sd_pred"]),
            source=str(data["source"]),
            noise_sd=None if data.get("noise_sd") is None else float(data["noise_sd"]),
            best_observed=None if best is None else (dict(best["proposal"]), float(best["objective"])),
            objective=None if objective is None else {str(k): float(v) for k, v in objective.items()},
            trials=None if data.get("trials") is None else int(data["trials"]),
            noise_sd_range=None
            if data.get("noise_sd_range") is None
            else (float(data["noise_sd_range"][0]), float(data["noise_sd_range"][1])),
        )


def recommendation_record(
    opt: MixtureOptimizer, weights: Mapping[str, float] | None = None
) -> RecommendationRecord | None:
    """The optimizer's recommendation under ``weights`` (None: its own objective) with what backs
    it; None when no trial succeeded.

    The best observed trial is :meth:`~MixtureOptimizer.best` under the optimizer's own objective;
    under other weights, the trial whose recorded scores compose highest under them.

    Raises:
        ValueError, RuntimeError: ``weights`` the recorded trials cannot recommend under
            (:meth:`MixtureOptimizer.recommend`).
    """
    if weights is None:
        rec = opt.recommend()
        if rec is None:
            return None
        best = opt.best()
        used = None
    else:
        rec = opt.recommend(objective=weights)
        if rec is None:
            return None
        used = check_objective(weights, "objective")
        observed = [
            (p, v) for p, s in opt.score_history if s is not None and (v := compose(used, s)) is not None
        ]
        best = max(observed, key=lambda pv: pv[1]) if observed else None
    trials, noise, noise_range = None, None, None
    if rec.source == "posterior_mean":
        try:
            predictive = opt.predictive(objective=used)
        except RuntimeError:  # too few trained values (a multi-fidelity sweep's partial ones)
            noise = opt.noise_sd()
        else:
            trials = predictive.trials
            noise, lo, hi = predictive.noise_sd()
            noise_range = (lo, hi)
    return RecommendationRecord(
        rec.proposal, rec.mean, rec.sd, rec.source, noise, best, used, trials, noise_range
    )
