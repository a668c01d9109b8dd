"""Mixture optimizer: Dirichlet seed mixtures, then GP-UCB on the bounded simplex, behind ask/tell.

The EmbeddingGemma recipe (arXiv:2509.20354, sec. "Model souping"): start from hand-picked and
Dirichlet-sampled mixtures, then let a Gaussian process over the mixture weights with an
upper-confidence-bound acquisition propose the next ones. Usable alone, with no Ray and no MLflow::

    opt = MixtureOptimizer(["retrieval_0", "sts_1", "classification_2"])
    for proposal in opt.ask(4):          # {"retrieval_0": 0.21, "sts_1": 0.52, ...}
        opt.tell(proposal, scores=dev_scores(proposal))   # {"retrieval_0": 0.61, "sts_1": ...}
    best_proposal, best_value = opt.best()
    opt.recommend(objective={"retrieval_0": 2, "sts_1": 1})  # another composition, no new trial

The package is an orchestrator over small parts, each usable and testable alone:

- :mod:`.optimizer`: :class:`MixtureOptimizer` (ask, tell, cancel, warm start, recommend, state)
  wires the parts below; :mod:`.views` holds its read-only queries (history, best, predict,
  predict_scores, predict_joint) and :mod:`.state` its state dict, both as functions of its parts;
  :mod:`.recommendation` the recommendation as a sweep records it.
- :mod:`.objective`: the objective as weights over score names (a weighted mean, default the
  plain mean over the tasks), the checks on told scores, and how a warm start's scores are
  recomposed.
- :mod:`.policy`: what to propose next. The user's seed mixtures first, then bounded-Dirichlet
  draws until ``max(n_seeds, len(seed_mixtures))`` proposals are out (``n_seeds`` defaults to 7;
  bench/RESULTS.md, "Mixture optimizer", holds the measurements behind it), then GP-UCB, and with
  a known ``budget`` its last ``exploit_last`` proposals (origin ``"exploit"``) maximise the
  posterior mean, one at a time: a sweep's answer is a trained checkpoint, so the budget ends on
  the mixture the GP believes best rather than on an exploratory probe. Fallbacks, never a crash:
  fewer than 2 successful observations, a GP that cannot be fitted, a failed acquisition ->
  a bounded-Dirichlet draw, origin ``"random"``.
- :mod:`.seeding`: random streams (every choice keyed by ``(random_state, what, index)``), user
  seeds, bounded-Dirichlet draws (:func:`mixopt.space.bounded_dirichlet` honours the bounds).
- :mod:`.model`: the GP. A botorch ``SingleTaskGP`` in float64, ``Standardize``d outcomes,
  Matern-5/2 with one lengthscale shared by the K weights times an ARD Matern over the
  hyperparameters (Hvarfner et al., arXiv:2402.02229, priors); an optional noise prior centred
  on a known seed-to-seed sd; the multi-fidelity kernel; the fit with retry.
- :mod:`.surrogate` and :mod:`.fidelity`: the GP over the ledger's observations (full-fidelity
  values, and with ``multi_fidelity`` each trial's partial curve at its fractions of the step
  budget), cached until the data changes.
- :mod:`.calibrated`: the posterior the optimizer *reports* (``predict``, ``predict_scores``,
  ``predict_joint``, ``predictive``, the recommendation's mean and sd, ``noise_sd``): the same
  kernel with its hyperparameters integrated over a grid instead of fitted, on the trained
  full-fidelity values, so that its intervals hold at a dozen trials (bench/RESULTS.md,
  "Calibration").
- :mod:`.acquisition`: UCB as the paper writes it, ``a(x) = mu(x) + beta * sigma(x)`` (botorch's
  UCB given ``beta ** 2``), and the posterior mean for :meth:`MixtureOptimizer.recommend`, both
  maximised by one routine: a few hundred sampled starts (bounded-Dirichlet draws, perturbations
  of the best observations, sparse draws, vertices and edges of the polytope, where sparse and
  capped optima lie), SLSQP on ``{sum_k w_k = 1, lo_k <= w_k <= hi_k}`` from the best of them,
  exact projection onto the polytope (:func:`mixopt.space.project_capped_simplex`).
- :mod:`.ledger`: asked, pending, told, partial and stopped trials; the versioned state dict.
- :mod:`.defaults` and :mod:`.checks`: the defaults and argument checks, shared with
  ``mixopt.config`` (neither loads torch).

**Features.** The K weights (stretched so the simplex spans about a unit cube, see
:mod:`mixopt.space`), float/log/int hyperparameters in [0, 1], categoricals one-hot (held fixed
per start during SLSQP; ints rounded after it).

**Batches and asynchronous workers: GP-BUCB** (Desautels, Krause & Burdick, arXiv:1206.6402).
Every pending proposal (asked, not yet told, including those already chosen in the same
``ask(n)``) is added to the GP as a *hallucinated* observation equal to its posterior mean. That
leaves the mean unchanged and collapses the sd around pending points, so their exploration bonus
is gone and the next proposal goes elsewhere; the GP's hyperparameters are fitted on real
observations only. Candidates closer than ``mixopt.space.NEAR_IDENTICAL`` (1% of the mixture
moved, or 1% of a hyperparameter's range) to any pending or told point are rejected outright, so
concurrent workers never receive the same or a near-identical mixture. ``ask(2)`` and
``ask(1); ask(1)`` return the same proposals.

**Failed trials** (``tell(p, None)``) are kept as *permanently pending* points: hallucinated at the
posterior mean and excluded within the same radius. Not imputing a number (e.g. the worst value)
is deliberate: a failure says nothing about the objective (a preempted worker, an OOM at one
batch size), and a fake extreme value would distort the standardisation and the fitted
lengthscales for the whole space.

**Per-score observations.** A trial measures one score per task (and perhaps on held-out sets);
``tell(p, scores=...)`` keeps them, and the objective is their weighted mean under ``objective``
(default: the plain mean over the tasks). One GP models the composed objective and proposes;
``recommend(objective=...)`` answers for other weights from the recorded trials alone, with one
GP on their recomposed values, and ``predict_scores`` / ``predict_joint`` report each score's own
posterior. A warm start recomposes each reused trial's scores under the new composition; scores
it never measured (a task added) start unobserved.

**Two posteriors.** Proposals come from the *proposal GP*, its hyperparameters at their most
probable values (MAP), as BO needs them. What the optimizer *reports* comes from the reported
posterior (:mod:`.calibrated`): with a dozen noisy trials the MAP noise sd falls far below the seed
spread and the MAP GP's interval at its own maximiser is a fraction of the real error, while the
integrated one covers near its nominal rate. Multi-fidelity partial values shape the proposals and
the recommended location; the reported posterior rests on trained full-fidelity values only.

**Recommendation.** ``best()`` is the best *observed* trial, biased upward by seed noise (the
winner's curse). ``recommend()`` returns the maximiser of the proposal GP's posterior mean over the
same space, with the reported posterior's mean and sd there; ``noise_sd()`` is the reported
posterior's median trial-noise sd in objective units (the seed-to-seed spread, when every trial
has its own trainer seed).

**Multi-fidelity** (``multi_fidelity=True``; config ``optimizer.multi_fidelity``, which a sweep
turns on by default when early stopping is enabled). Trials report the objective at intermediate
steps, and a scheduler (ASHA) stops some early. With the option on, those partial results count,
as in multi-fidelity BO over mixtures (ADMIRE-BayesOpt, arXiv:2508.11551): the GP is fitted over
``(x, s)``, ``s`` the fraction of the step budget a value was measured at
(:func:`mixopt.optimizer.model.make_mf_gp`). Proposals, hallucinations, ``recommend()`` and
``predict()`` are at ``s = 1``. ``fidelity_scale=True`` adds a fitted scale ``s^p s'^p`` to the
mixture term, for learning curves that rank mixtures early as they do at the end. With the option
off (the default), partial values are recorded in the state but not modelled, and a stopped trial
is only taken (never proposed again). With it on, :meth:`MixtureOptimizer.should_stop` is
model-based early stopping (the sweep's ``early_stopping.method: gp``). ``bench/multifidelity.py``
measures the policies (bench/RESULTS.md, "Multi-fidelity").

**Reproducible and resumable.** Every random choice is keyed by ``(random_state, what, index)``
and the GP fit depends only on the observations, so the same calls give the same proposals, and
``from_state_dict(json.loads(json.dumps(opt.state_dict())))`` continues exactly as the original.

Imports are lazy, so that ``mixopt.config`` can read :mod:`.defaults` and :mod:`.checks` without
loading torch and botorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["MixtureOptimizer", "Recommendation"]

if TYPE_CHECKING:
    from mixopt.optimizer.optimizer import MixtureOptimizer
    from mixopt.optimizer.policy import Recommendation


def __getattr__(name: str) -> Any:
    if name == "MixtureOptimizer":
        from mixopt.optimizer.optimizer import MixtureOptimizer

        return MixtureOptimizer
    if name == "Recommendation":
        from mixopt.optimizer.policy import Recommendation

        return Recommendation
    raise AttributeError(f"module 'mixopt.optimizer' has no attribute {name!r}")
