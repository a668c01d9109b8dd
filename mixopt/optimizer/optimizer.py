"""``MixtureOptimizer``: ask/tell over the bounded simplex, wiring the package's parts.

Seeds come from :mod:`~mixopt.optimizer.seeding`, the bookkeeping lives in
:mod:`~mixopt.optimizer.ledger`, the GP in :mod:`~mixopt.optimizer.model` (its rows from
:mod:`~mixopt.optimizer.fidelity`) and the acquisition in :mod:`~mixopt.optimizer.acquisition`;
the package docstring (:mod:`mixopt.optimizer`) describes the method as a whole.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mixopt.optimizer import checks, defaults, state, views
from mixopt.optimizer.ledger import Ledger, warm_records
from mixopt.optimizer.model import one_thread
from mixopt.optimizer.objective import (
    check_objective,
    check_scores,
    composed_value,
    equal_weights,
    warm_scores,
)
from mixopt.optimizer.policy import Proposer, Recommendation
from mixopt.optimizer.seeding import RandomStreams, alpha_vector, user_seeds
from mixopt.optimizer.surrogate import Surrogate
from mixopt.space import SearchSpace

logger = logging.getLogger("mixopt.optimizer")


class MixtureOptimizer:
    """Propose task mixtures (and hyperparameters) to maximise a trial's objective. Ask/tell.

    Args:
        tasks: task names; every proposal has a weight for each.
        n_seeds: proposals of the seed phase (user seed mixtures count towards it; all user seed
            mixtures are proposed even if there are more than ``n_seeds``). With hyperparameters
            searched jointly, more seeds than the default 7 spread the first trials over them too.
        seed_mixtures: mixtures to try first, in order (task -> weight; missing tasks get 0; may
            also give hyperparameter values). Weights must sum to 1 within 1e-6 and respect bounds.
        dirichlet_alpha: concentration of the seed draws: one float for every task, or
            task -> float (tasks not named get 1.0). alpha=1 is uniform on the simplex; < 1 favours
            sparse mixtures, > 1 balanced ones.
        beta: UCB exploration weight in ``a(x) = mu(x) + beta * sigma(x)`` (botorch's UCB is
            given ``beta ** 2``, see :mod:`mixopt.optimizer.acquisition`).
        random_state: seed of every random choice; same seed and calls -> same proposals.
        hyperparameters: name -> ``mixopt.config`` FloatParam / LogFloatParam / IntParam /
            CategoricalParam, or the equivalent plain dicts (``{"type": "log_float", "low": 1e-5,
            "high": 1e-3}``).
        bounds: task -> ``mixopt.config.WeightBounds`` or ``(min, max)``; others get [0, 1].
        noise_sd: the seed-to-seed sd of a trial's objective (objective units), when known: centres
            the GP's noise prior there (:func:`mixopt.optimizer.model.make_gp`).
        multi_fidelity: model partial results (:meth:`tell_partial`, early-stopped trials) with a
            GP over (features, fraction of the step budget); see :mod:`mixopt.optimizer`.
        fidelity_scale: with ``multi_fidelity``, the mixture term of the GP's kernel gets the
            fitted scale ``s^p s'^p`` (:class:`mixopt.optimizer.model.FidelityScale`): for learning
            curves that rank mixtures early as they do at the end; on curves that cross it loses.
        budget: the sweep's total number of trials, when known (None: open-ended). Reused
            (warm-start) observations do not count; every asked proposal that is not cancelled does.
        exploit_last: with a ``budget``, the last this many proposals are *exploitation* steps
            (origin ``"exploit"``): the maximiser of the posterior mean (UCB with beta = 0) away
            from every pending and told point, so the sweep's own trials end on the mixture the GP
            believes best; see :mod:`mixopt.optimizer`. 0 turns it off.
        objective: score name -> weight >= 0 (normalised to sum 1: a weighted mean of the scores
            told with ``tell(p, scores=...)``); None: the plain mean over ``tasks``. Score names
            need not be tasks (a held-out dev set, an MTEB task).
        streams: the keys of every random choice (:class:`mixopt.optimizer.seeding.RandomStreams`
            of ``random_state``, the default); not part of the state, so a restored optimizer
            draws from the default streams.

    Raises:
        ValueError: on any invalid argument, saying which and what to do.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        n_seeds: int = defaults.N_SEEDS,
        seed_mixtures: Sequence[Mapping[str, Any]] | None = None,
        dirichlet_alpha: float | Mapping[str, float] = defaults.DIRICHLET_ALPHA,
        beta: float = defaults.BETA,
        random_state: int = defaults.RANDOM_STATE,
        hyperparameters: Mapping[str, Any] | None = None,
        bounds: Mapping[str, Any] | None = None,
        noise_sd: float | None = None,
        multi_fidelity: bool = False,
        fidelity_scale: bool = defaults.FIDELITY_SCALE,
        budget: int | None = None,
        exploit_last: int = defaults.EXPLOIT_LAST,
        objective: Mapping[str, float] | None = None,
        streams: RandomStreams | None = None,
    ) -> None:
        self._space = space = SearchSpace(tasks, bounds=bounds, hyperparameters=hyperparameters)
        if space.is_single_point:
            raise ValueError(
                "the bounds pin every task weight and there are no hyperparameters: there is only one "
                f"mixture ({dict(zip(space.tasks, space.lower.tolist()))}), nothing to optimise"
            )
        self.n_seeds = checks.check_n_seeds(n_seeds)
        self.beta = checks.check_beta(beta)
        self.random_state = checks.check_random_state(random_state)
        self.prior_noise_sd = checks.check_noise_sd(noise_sd)
        self.multi_fidelity = checks.check_multi_fidelity(multi_fidelity)
        self.fidelity_scale = checks.check_fidelity_scale(fidelity_scale, multi_fidelity)
        self.budget = budget
        self.exploit_last = checks.check_exploit_last(exploit_last)
        self.dirichlet_alpha = checks.check_alpha(dirichlet_alpha, space.tasks)
        self.objective_weights = (
            equal_weights(space.tasks) if objective is None else check_objective(objective)
        )
        # As given (the state keeps it, so a restored optimizer normalises the same numbers).
        self.objective: dict[str, float] | None = None if objective is None else dict(objective)
        self._alpha = alpha_vector(space, self.dirichlet_alpha)
        if streams is not None and streams.random_state != self.random_state:
            raise ValueError(
                f"streams are keyed by random_state {streams.random_state}, the optimizer's is "
                f"{self.random_state}: give RandomStreams of the same random_state"
            )
        self.streams = streams or RandomStreams(self.random_state)
        self.seed_mixtures: list[dict[str, Any]] = [dict(m) for m in (seed_mixtures or [])]
        self._user_seeds = user_seeds(space, self.seed_mixtures, self.streams)
        self._wire(Ledger(space.keys))
        # Where reused observations came from (warm_start), recorded in the state.
        self.warm_source: dict[str, Any] | None = None

    def _wire(self, ledger: Ledger) -> None:
        """Connect the parts around ``ledger`` (a new one, or a restored state's)."""
        self._ledger = ledger
        self._surrogate = Surrogate(
            ledger,
            self._space,
            self.streams,
            multi_fidelity=self.multi_fidelity,
            fidelity_scale=self.fidelity_scale,
            noise_sd=self.prior_noise_sd,
            weights=self.objective_weights,
        )
        self._proposer = Proposer(
            self._space, self._alpha, self.streams, ledger, self._surrogate, self._user_seeds
        )

    @property
    def budget(self) -> int | None:
        """The sweep's total number of trials (None: unknown); settable, e.g. when a resumed
        sweep is given more trials."""
        return self._budget

    @budget.setter
    def budget(self, value: int | None) -> None:
        self._budget = checks.check_budget(value)

    # ------------------------------------------------------------------ what it knows (read-only)

    @property
    def tasks(self) -> tuple[str, ...]:
        return self._space.tasks

    @property
    def space(self) -> SearchSpace:
        return self._space

    @property
    def score_names(self) -> tuple[str, ...]:
        """The scores the objective names (weighted or not), in its order."""
        return tuple(self.objective_weights)

    @property
    def pending(self) -> list[dict[str, Any]]:
        """Proposals asked and not yet told or cancelled, in ask order (copies)."""
        return views.pending(self._ledger)

    @property
    def history(self) -> list[tuple[dict[str, Any], float | None]]:
        """Told ``(proposal, value)`` pairs in tell order; value None marks a failed trial."""
        return views.history(self._ledger)

    @property
    def score_history(self) -> list[tuple[dict[str, Any], dict[str, float] | None]]:
        """Told ``(proposal, scores)`` in tell order (scores None: told a scalar, or failed)."""
        return views.score_history(self._ledger)

    @property
    def partial(self) -> list[tuple[dict[str, Any], float, float]]:
        """Partial results ``(proposal, fraction, value)`` in tell order (:meth:`tell_partial`, and
        the last value of each trial stopped early)."""
        return views.partial(self._ledger)

    @property
    def stopped(self) -> list[dict[str, Any]]:
        """Proposals whose trial was stopped early (``tell(p, value, fraction < 1)``), in tell order."""
        return views.stopped(self._ledger)

    def origin(self, proposal: Mapping[str, Any]) -> str:
        """``"seed"`` (user seed or Dirichlet seed draw), ``"bo"`` (GP-UCB), ``"exploit"`` (one of
        the budget's last proposals: the posterior-mean maximiser), ``"random"`` (fallback draw) or
        ``"warm"`` (an observation reused from an earlier sweep, see :meth:`warm_start`)."""
        return views.origin(self._ledger, proposal)

    def best(self) -> tuple[dict[str, Any], float] | None:
        """The best successful ``(proposal, value)`` told so far (first of ties), or None if none."""
        return views.best(self._ledger)

    def noise_sd(self) -> float | None:
        """The trial noise sd the optimizer's reported model believes, in objective units: the
        posterior median of :meth:`predictive`'s noise (None before 2 successful trials). With one
        trainer seed per trial it estimates the seed-to-seed spread of a mixture's objective."""
        return views.noise_sd(self._surrogate, self._space)

    def predictive(
        self,
        score: str | None = None,
        *,
        objective: Mapping[str, float] | None = None,
        seed_sd: tuple[float, int] | None = None,
    ) -> views.Predictive:
        """The posterior the optimizer reports, of the objective, of composition ``objective``
        (score name -> weight) or of one ``score``: the GP with its hyperparameters integrated
        (:mod:`mixopt.optimizer.calibrated`), fitted on the trained trials' values. Its intervals
        are the ones whose coverage bench/calibration.py measures; the proposals come from the
        proposal GP (MAP hyperparameters) instead. ``seed_sd``: an independent measurement of the
        seed-to-seed sd of the objective, ``(sd, degrees of freedom)`` (the verification's pooled sd
        of its two arms: ``2 (n - 1)``), which then informs the noise.

        Raises:
            RuntimeError: fewer than 2 trained values of it; ValueError: an unknown score name,
                or both ``score`` and ``objective``.
        """
        if score is not None and objective is not None:
            raise ValueError("predictive(): give score= or objective=, not both")
        weights: dict[str, float] | None = None
        what = "the objective"
        if score is not None:
            if not any(score in s for _, s in self._ledger.scored()):
                told = sorted({k for _, s in self._ledger.scored() for k in s})
                raise ValueError(f"predictive(): no trial was told score {score!r}; told scores: {told}")
            weights, what = {score: 1.0}, f"score {score!r}"
        elif objective is not None:
            weights, what = check_objective(objective, "predictive(): objective"), "the composition"
        evidence = () if seed_sd is None else ((float(seed_sd[0]), int(seed_sd[1])),)
        return views.predictive(self._surrogate, self._space, weights, evidence, what)

    def predict(self, proposals: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of the objective at ``proposals``, in the objective's units: the
        reported posterior (:meth:`predictive`), hyperparameters integrated.

        Returns two arrays of shape ``(len(proposals),)``. The sd is that of the latent objective
        (no observation noise). Pending proposals are not taken into account.

        Raises:
            RuntimeError: before 2 successful observations.
            ValueError: for a malformed proposal.
        """
        return views.predict(self._surrogate, self._space, proposals)

    def predict_scores(
        self, proposals: Sequence[Mapping[str, Any]]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per score name (the weighted ones, and others once observed twice), the reported
        posterior's mean and sd of the latent score at ``proposals``, each ``(len(proposals),)``.

        Raises:
            RuntimeError: a weighted score observed fewer than twice.
        """
        return views.predict_scores(self._surrogate, self._space, self.objective_weights, proposals)

    def predict_joint(
        self, proposals: Sequence[Mapping[str, Any]], score: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """One score's latent posterior mean ``(n,)`` and covariance ``(n, n)`` at ``proposals``
        (for differences between nearby mixtures with their uncertainty).

        Raises:
            RuntimeError: as :meth:`predict_scores`; ValueError: an unknown score name.
        """
        return views.predict_joint(self._surrogate, self._space, self._ledger, proposals, score)

    # ------------------------------------------------------------------ public state

    def warm_start(
        self,
        source: Mapping[str, Any] | Sequence[Sequence[Any]],
        *,
        max_removed: float = defaults.WARM_MAX_REMOVED,
        name: str = "",
    ) -> tuple[int, int]:
        """Reuse the observations of an earlier sweep before the first ask (Olmix's mixture reuse,
        arXiv:2602.12237).

        ``source``: a :meth:`state_dict` (its told trials are reused), ``(proposal, value)`` pairs
        (scalars of this optimizer's composition) or ``(proposal, value, scores)`` triples. A
        trial's mixture is carried onto this optimizer's tasks by :meth:`SearchSpace.carry`
        (removed tasks' weight renormalised away, the point dropped if that weight exceeds
        ``max_removed``; new tasks at weight 0) and recorded as told, with origin ``"warm"``.
        Scores: a trial contributes the scores this optimizer names and its objective is
        recomputed under this composition; a score the source never measured starts unobserved
        (the trial's objective is then unknown, ``history`` shows None, and only the per-score
        GPs use it). A trial without scores is reused only when the source's composition (score
        names and weights) is this one's: its value means something else otherwise.
        Reused points count towards the seed phase: with at least ``n_seeds`` of them the first
        ask is already a GP proposal. User seed mixtures are still proposed first. ``name``
        (e.g. the source sweep) is kept in :attr:`warm_source` with the counts and the scores
        reused and new. Returns ``(reused, dropped)``; failed source trials are not counted.

        Raises:
            ValueError: after the first ask, or for a source that is neither.
        """
        if self._ledger.asked:
            raise ValueError("warm_start() must be called before the first ask()")
        max_removed = checks.check_max_removed(max_removed)
        records, source_weights = warm_records(source)
        converted, _ = warm_scores(records, source_weights, self.objective_weights)
        carried = [
            (None if p is None else self._space.carry(p, max_removed), v, sc) for p, v, sc in converted
        ]
        reused, dropped = self._ledger.warm(carried)
        seen = {k for p, _, sc in carried if p is not None and sc for k in sc}
        self.warm_source = {
            "name": str(name),
            "reused": reused,
            "dropped": dropped,
            "trials": reused,
            "scores_reused": [n for n in self.score_names if n in seen],
            "scores_new": [n for n in self.score_names if n not in seen],
        }
        return reused, dropped

    def recommend(self, objective: Mapping[str, float] | None = None) -> Recommendation | None:
        """The mixture to use: the maximiser of the GP posterior mean, not the luckiest trial.

        ``best()`` is the best *observed* value, and with seed-to-seed noise that is biased upward
        (the winner's curse: the maximum of noisy scores favours lucky draws). The posterior mean

            mu(x) = E[f(x) | observations]

        pools every observation, so its maximiser over the bounded simplex (and the
        hyperparameters) is the noise-aware answer. It is found as a UCB proposal is
        (:func:`mixopt.optimizer.acquisition.maximise`, with every observed point among the
        starts) with botorch's ``PosteriorMean`` as the objective; the GP is fitted on the real
        observations only (no hallucinated pending points) and recommending may return an
        already-observed mixture. Deterministic: the same history gives the same recommendation,
        also after a ``state_dict`` round trip.

        ``objective``: another composition (score name -> weight) to recommend for, from the
        recorded trials alone (a single GP on their recomposed scores).

        Returns:
            A :class:`Recommendation` (``mean`` and ``sd`` in objective units: the reported
            posterior's, :meth:`predictive`, at the proposal GP's maximiser), or None when no
            trial has succeeded. With fewer than 2 successful observations, or when the GP
            cannot be fitted, it falls back to :meth:`best` (``source="best_observed"``) and
            logs why.
        """
        if objective is None:
            best = self.best()
            if best is None:
                return None
            with one_thread():
                return self._proposer.recommend(best)
        weights = check_objective(objective, "recommend(): objective")
        with one_thread():
            return self._proposer.recommend_under(weights)

    # ------------------------------------------------------------------ ask / tell

    def ask(self, n: int = 1) -> list[dict[str, Any]]:
        """``n`` new proposals, distinct from each other and from every pending and told one.

        Each becomes pending until told or cancelled. Returns plain dicts: every task's weight
        (float) then every hyperparameter's value.
        """
        if not checks.is_int(n) or n < 1:
            raise ValueError(f"ask(n): n must be an integer >= 1, got {n!r}")
        out = []
        with one_thread():
            for _ in range(int(n)):
                proposal, origin = self._proposer.next(
                    n_seeds=self.n_seeds, beta=self.beta, budget=self._budget, exploit_last=self.exploit_last
                )
                self._ledger.add(proposal, origin, pending=True)
                out.append(dict(proposal))
        return out

    def tell(
        self,
        proposal: Mapping[str, Any],
        value: float | None = None,
        fraction: float = 1.0,
        *,
        scores: Mapping[str, float] | None = None,
    ) -> None:
        """Record a trial's result: a finite float to maximise, or None for a failed trial; or its
        ``scores`` (score name -> float), the objective then composed from them under
        :attr:`objective_weights` (every weighted score must be there; others are kept for a later
        recomposition; ``value`` must then be None or that same number).

        ``proposal`` must equal (``==``) a dict returned by :meth:`ask`; a JSON round trip keeps
        it equal. Telling an already-told proposal again records a repeat observation.

        ``fraction < 1``: the trial was stopped early (e.g. by ASHA) after that fraction of its
        step budget, and ``value`` is the last objective it reported (None: it reported none). It
        is no longer pending and is never proposed again; its value is a *partial* result
        (:attr:`partial`), modelled at its fraction with ``multi_fidelity``, never a
        full-fidelity observation (``best()`` ignores it).
        """
        if scores is not None:
            scores = check_scores(scores, "tell")
            value = composed_value(self.objective_weights, scores, value, "tell")
        self._ledger.tell(proposal, value, fraction, scores)

    def tell_partial(
        self,
        proposal: Mapping[str, Any],
        value: float | None = None,
        fraction: float | None = None,
        *,
        scores: Mapping[str, float] | None = None,
    ) -> None:
        """Record an intermediate result of a running trial: its objective ``value`` (or its
        ``scores``, composed as in :meth:`tell`) after ``fraction`` (in (0, 1]) of its step
        budget. The trial stays pending.

        With ``multi_fidelity`` the GP uses the trial's latest partial value until its final value
        arrives (which supersedes it); without, partial values are only kept in the state.
        """
        if scores is not None:
            scores = check_scores(scores, "tell_partial")
            value = composed_value(self.objective_weights, scores, value, "tell_partial")
        self._ledger.tell_partial(proposal, value, fraction, scores)

    def should_stop(self, proposal: Mapping[str, Any]) -> bool:
        """Multi-fidelity early stopping: whether a running trial, given its partial results, is
        predicted not to beat the incumbent at full fidelity.

        With the GP over (mixture, fraction) fitted on every result so far (this trial's partial
        values included), the trial stops when even its upper confidence bound at full fidelity,
        ``mu(x, 1) + beta * sigma(x, 1)``, is below the best posterior mean at full fidelity
        among the finished trials: UCB would no longer choose it. This is the model-based
        counterpart of ASHA (learning-curve prediction, as in Domhan et al., IJCAI 2015, and the
        freeze-thaw view of multi-fidelity BO): curves that cross (small tasks learnt first) are
        judged by what they predict at the end, not by their rank at a rung. False until the
        trial has a partial result and some trial has finished, or when the GP cannot be fitted.
        A trial that stops is then told with ``tell(proposal, value, fraction=...)``.

        Raises:
            ValueError: without ``multi_fidelity``, or when ``proposal`` is not pending.
        """
        if not self.multi_fidelity:
            raise ValueError(
                "should_stop() needs multi_fidelity=True (config optimizer.multi_fidelity): the "
                "prediction comes from the GP over (mixture, fraction of the step budget)"
            )
        led = self._ledger
        i = led.pending_index("should_stop", proposal, "(never asked, already told or stopped)")
        with one_thread():
            return self._surrogate.below_incumbent(i, self.beta)

    def cancel(self, proposal: Mapping[str, Any]) -> None:
        """Drop a pending proposal without a value (an interrupted trial); it may be proposed again."""
        self._ledger.cancel(proposal)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: the configuration, every asked proposal with its origin,
        the pending ones, the told values and scores. Plain JSON types only (``json.dumps`` works)."""
        space, alpha = self._space, self.dirichlet_alpha
        config = {
            "tasks": list(space.tasks),
            "n_seeds": self.n_seeds,
            # The validated, complete seed proposals: plain floats, and their hyperparameters
            # fixed, so a restored optimizer rebuilds exactly the same seeds.
            "seed_mixtures": [dict(p) for p in self._user_seeds],
            "dirichlet_alpha": dict(alpha) if isinstance(alpha, dict) else alpha,
            "beta": self.beta,
            "random_state": self.random_state,
            "hyperparameters": space.hyperparameters_json(),
            "bounds": space.bounds_json(),
            "noise_sd": self.prior_noise_sd,
            "multi_fidelity": self.multi_fidelity,
            "fidelity_scale": self.fidelity_scale,
            "budget": self.budget,
            "exploit_last": self.exploit_last,
            "objective": None if self.objective is None else dict(self.objective),
        }
        return state.to_state(config, self.warm_source, self._ledger)

    @classmethod
    def from_state_dict(cls, state_: Mapping[str, Any]) -> MixtureOptimizer:
        """Rebuild an optimizer from :meth:`state_dict` (possibly after a JSON round trip, and from
        any earlier version's state: :func:`mixopt.optimizer.ledger.migrate`); it proposes exactly
        what the original would have proposed next."""
        migrated, arguments = state.arguments(state_)
        try:
            opt = cls(**arguments)
        except (KeyError, TypeError, ValueError) as err:
            raise state.malformed(err) from None
        opt._wire(state.ledger_of(migrated, opt.space))
        opt.warm_source = state_.get("warm_source")
        return opt
