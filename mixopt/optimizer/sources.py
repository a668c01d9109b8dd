"""A cheap second information source beside trained trials: the GP over (mixture, source).

A *proxy* observation (:meth:`~mixopt.optimizer.MixtureOptimizer.tell_proxy`) scores a mixture
without training it, e.g. the merged task experts of :mod:`mixopt.proxy` (task arithmetic,
arXiv:2212.04089). It is biased (merging is not training) and only partly correlated with what
a trained trial measures, so it cannot be pooled with trained values as if it were one.

**Model.** Each modelled quantity (the composed objective, or another composition of the scores)
gets one GP over ``(x, s)``, ``s`` the source (0 proxy, 1 trained),
with the intrinsic-coregionalisation kernel (ICM; botorch's ``MultiTaskGP``)

    k((x, s), (x', s')) = k_x(x, x') * B[s, s'],

``k_x`` the optimizer's own mixture kernel (:func:`mixopt.optimizer.model.mixture_kernel`),
``B`` a full 2 x 2 positive-semidefinite source covariance with positive correlation (botorch's
``PositiveIndexKernel``, its Beta(2.5, 1.5) prior on the correlation), a constant mean per source
and a noise per source (``HadamardGaussianLikelihood``). With two sources a full-rank ``B`` is
exactly the autoregressive form ``f_train = rho * f_proxy + delta`` of Kennedy & O'Hagan
(Biometrika 2000) with ``delta`` sharing ``k_x``'s lengthscale: ``B = [[v_p, rho v_p], [rho v_p,
rho^2 v_p + v_d]]``. That is why it was chosen over the step-fraction fidelity axis of
:mod:`~mixopt.optimizer.fidelity`: a proxy is not an early point of a learning curve, and a
smooth kernel over a fraction cannot give it its own offset and noise. The per-source mean
absorbs the proxy's constant bias; ``rho`` is learnt from mixtures scored both ways, which is
why a sweep scores the proxy at every trained mixture.

**Use.** The model's output is the trained source only (``output_tasks=[1]``): its posterior
at plain features ``x`` is ``f_train(x)``, so UCB, GP-BUCB's pending points, the posterior-mean
recommendation and :meth:`predict` all speak of trained trials, and the acquisition never
proposes a proxy evaluation (proxies are cheap; the caller scores them where it likes). Not with
``multi_fidelity`` (the source
column would be a second fidelity axis, a model this module does not make). The noise prior is
botorch's per source (LogNormal(-4, 1) in standardised units), not the ``noise_sd`` one of
:func:`~mixopt.optimizer.model.make_gp`: a prior centred on the trained seed noise would be wrong
for the proxy, whose only noise is the experts' seed. ``predict_scores`` and ``predict_joint``
stay on the trained-only per-score GPs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch
from botorch.models import MultiTaskGP
from botorch.models.model import Model
from gpytorch.mlls import ExactMarginalLogLikelihood

from mixopt.optimizer import model as gp
from mixopt.optimizer.ledger import Ledger
from mixopt.optimizer.objective import compose
from mixopt.optimizer.seeding import RandomStreams
from mixopt.space import Proposal, SearchSpace

logger = logging.getLogger("mixopt.optimizer")

PROXY, TRAINED = 0, 1


class SourceGP(MultiTaskGP):
    """The ICM GP over ``(x, s)`` whose output is the trained source (see the module docstring)."""

    def condition_at_mean(self, xh: torch.Tensor) -> Model:
        """Pending points ``xh`` (h, d) hallucinated at the trained source's posterior mean."""
        with torch.no_grad():
            mean = self.posterior(xh).mean  # (h, 1)
        xs = torch.cat([xh, torch.full((*xh.shape[:-1], 1), float(TRAINED), dtype=xh.dtype)], dim=-1)
        return self.condition_on_observations(xs, mean)


def fit_source_gp(
    x: torch.Tensor, s: torch.Tensor, y: torch.Tensor, *, n_weights: int, seed: int
) -> gp.Fitted | None:
    """Fit :class:`SourceGP` to features ``x`` (n, d), sources ``s`` (n,), values ``y`` (n, 1);
    each jitter of ``FIT_ATTEMPTS`` in turn, None (logged) when all fail."""
    xs = torch.cat([x, s.reshape(-1, 1).to(x.dtype)], dim=-1)
    errors: list[str] = []
    for attempt, (_, jitter_value) in enumerate(gp.FIT_ATTEMPTS):
        try:
            with gp.seeded(seed + attempt), gp.jitter(jitter_value):
                model = SourceGP(
                    xs,
                    y,
                    task_feature=-1,
                    covar_module=gp.mixture_kernel(x.shape[-1], n_weights),
                    output_tasks=[TRAINED],
                    all_tasks=[PROXY, TRAINED],
                )
                gp.fit_mll(ExactMarginalLogLikelihood(model.likelihood, model))
                model.eval()
                with torch.no_grad():
                    post = model.posterior(x)
                    if not (torch.isfinite(post.mean).all() and torch.isfinite(post.variance).all()):
                        raise FloatingPointError("the fitted GP predicts non-finite values at the data")
            return gp.Fitted(model, jitter_value, False)
        except Exception as err:  # botorch/gpytorch/linalg errors alike: try the next setting
            errors.append(f"{type(err).__name__}: {err}")
    logger.warning(
        "two-source GP fit on %d observations failed with every setting (%s)", len(y), " | ".join(errors)
    )
    return None


def source_correlation(fitted: gp.Fitted) -> float:
    """The fitted correlation between the sources, ``B[0, 1] / sqrt(B[0, 0] B[1, 1])``."""
    b = fitted.model.covar_module.kernels[-1].covar_matrix.to_dense().detach()
    return float(b[PROXY, TRAINED] / torch.sqrt(b[PROXY, PROXY] * b[TRAINED, TRAINED]))


class SourceModels:
    """Fits and caches the two-source GPs over the ledger's trained and proxy observations."""

    def __init__(self, ledger: Ledger, space: SearchSpace, streams: RandomStreams) -> None:
        self.ledger, self.space, self.streams = ledger, space, streams
        self._key: tuple[int, int] = (-1, -1)
        self._fits: dict[tuple[str, ...], gp.Fitted | None] = {}

    def active(self, multi_fidelity: bool) -> bool:
        return bool(self.ledger.proxy) and not multi_fidelity

    def _rows(self, weights: Mapping[str, float], own: bool) -> list[tuple[Proposal, int, float]]:
        """(proposal, source, value) of the objective (``own``) or of the composition ``weights``."""
        led = self.ledger
        rows: list[tuple[Proposal, int, float]] = []
        if own:
            rows += [(led.proposal(i), TRAINED, v) for i, v in led.successes()]
            rows += [(p, PROXY, v) for p, v, _ in led.proxy]
        else:
            rows += [
                (led.proposal(i), TRAINED, v)
                for i, s in led.scored()
                if (v := compose(weights, s)) is not None
            ]
            rows += [(p, PROXY, v) for p, _, s in led.proxy if s and (v := compose(weights, s)) is not None]
        return rows

    def _fit(self, key: tuple[str, ...], rows: list[tuple[Proposal, int, float]]) -> gp.Fitted | None:
        data = (len(self.ledger.history), len(self.ledger.proxy))
        if data != self._key:
            self._key, self._fits = data, {}
        if key not in self._fits:
            if sum(1 for _, s, _ in rows if s == TRAINED) < gp.MIN_OBSERVATIONS:
                self._fits[key] = None
            else:
                x = torch.tensor(np.array([self.space.encode(p) for p, _, _ in rows]), dtype=torch.float64)
                s = torch.tensor([s for _, s, _ in rows], dtype=torch.float64)
                y = torch.tensor([[v] for _, _, v in rows], dtype=torch.float64)
                seed = self.streams.seed("fit", (data[0] * 7919 + data[1]) * len(gp.FIT_ATTEMPTS))
                self._fits[key] = fit_source_gp(x, s, y, n_weights=self.space.n_tasks, seed=seed)
        return self._fits[key]

    def fitted(self, weights: Mapping[str, float], *, own: bool) -> gp.Fitted | None:
        """The trained source's GP for the composition ``weights`` (the objective when ``own``)."""
        return self._fit(
            ("objective", *sorted(f"{k}={v!r}" for k, v in weights.items()), str(own)),
            self._rows(weights, own),
        )


def corner_mixtures(space: SearchSpace) -> list[dict[str, float]]:
    """Per task, the mixture within the bounds nearest to its one-hot (the one-hot itself when
    the bounds allow it): where a task's expert is trained. The Euclidean projection of ``e_k``
    onto ``{lo <= w <= hi, sum w = 1}`` is ``clip(e_k - tau, lo, hi)`` for the ``tau`` that makes
    it sum to 1 (found by bisection: the sum decreases in ``tau``)."""
    lo, hi = space.lower, space.upper
    out = []
    for k in range(space.n_tasks):
        e = np.eye(space.n_tasks)[k]
        a, b = -1.0, 1.0
        for _ in range(200):
            mid = (a + b) / 2
            a, b = (mid, b) if np.clip(e - mid, lo, hi).sum() > 1 else (a, mid)
        w = np.clip(e - b, lo, hi)
        out.append(dict(zip(space.tasks, (float(x) for x in w / w.sum()))))
    return out
