"""A cheap second information source beside trained trials: the GP over (mixture, source).

A *proxy* observation (:meth:`~mixopt.optimizer.MixtureOptimizer.tell_proxy`) scores a mixture
without training it, e.g. the merged task experts of :mod:`mixopt.proxy` (task arithmetic,
arXiv:2212.04089). It is biased (merging is not training) and only partly correlated with what
a trained trial measures, so it cannot be pooled with trained values as if it were one.

**Model.** Each modelled quantity (one score of the composite surrogate, or the composed
objective of the single one) gets one GP over ``(x, s)``, ``s`` the source (0 proxy, 1 trained),
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
proposes a proxy evaluation (proxies are cheap; the caller scores them where it likes). The
composite surrogate's parts are independent per score (:class:`SumGP` composes them as
:class:`~mixopt.optimizer.composite.ComposedGP` does). Not with ``multi_fidelity`` (the source
column would be a second fidelity axis, a model this module does not make). The noise prior is
botorch's per source (LogNormal(-4, 1) in standardised units), not the ``noise_sd`` one of
:func:`~mixopt.optimizer.model.make_gp`: a prior centred on the trained seed noise would be wrong
for the proxy, whose only noise is the experts' seed. ``predict_scores`` and ``predict_joint``
stay on the trained-only per-score GPs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from botorch.models import MultiTaskGP
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultivariateNormal
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


class SumGP(Model):
    """``sum_k c_k f_k`` of independent one-output models: mean ``sum c_k mu_k``, covariance
    ``sum c_k^2 Sigma_k``."""

    def __init__(self, parts: list[tuple[Model, float]]) -> None:
        super().__init__()
        self.parts = parts

    @property
    def num_outputs(self) -> int:
        return 1

    def condition_at_mean(self, xh: torch.Tensor) -> SumGP:
        return SumGP([(gp.condition_at_mean(m, xh), c) for m, c in self.parts])

    def posterior(self, X, output_indices=None, observation_noise=False, posterior_transform=None, **kw):  # type: ignore[no-untyped-def,override]
        if posterior_transform is not None:
            raise ValueError("SumGP is already composed: give no posterior_transform")
        mean, cov = None, None
        for m, c in self.parts:
            mvn = m.posterior(X).mvn
            mu, sig = c * mvn.mean, c * c * mvn.covariance_matrix
            mean, cov = (mu, sig) if mean is None else (mean + mu, cov + sig)
        assert mean is not None and cov is not None
        cov = cov + 1e-12 * torch.eye(cov.shape[-1], dtype=cov.dtype)
        return GPyTorchPosterior(MultivariateNormal(mean, cov))


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
    model = fitted.model
    if isinstance(model, SumGP):
        raise ValueError("a composed model has one correlation per score")
    b = model.covar_module.kernels[-1].covar_matrix.to_dense().detach()
    return float(b[PROXY, TRAINED] / torch.sqrt(b[PROXY, PROXY] * b[TRAINED, TRAINED]))


class SourceModels:
    """Fits and caches the two-source GPs over the ledger's trained and proxy observations."""

    def __init__(self, ledger: Ledger, space: SearchSpace, streams: RandomStreams) -> None:
        self.ledger, self.space, self.streams = ledger, space, streams
        self._key: tuple[int, int] = (-1, -1)
        self._fits: dict[tuple[str, ...] | str, gp.Fitted | None] = {}

    def active(self, multi_fidelity: bool) -> bool:
        return bool(self.ledger.proxy) and not multi_fidelity

    def _rows(
        self, weights: Mapping[str, float], name: str | None, own: bool
    ) -> list[tuple[Proposal, int, float]]:
        """(proposal, source, value) of one score (``name``) or of the composition (``None``)."""
        led = self.ledger
        rows: list[tuple[Proposal, int, float]] = []
        if name is None:
            if own:
                rows += [(led.proposal(i), TRAINED, v) for i, v in led.successes()]
                rows += [(p, PROXY, v) for p, v, _ in led.proxy]
            else:
                rows += [
                    (led.proposal(i), TRAINED, v)
                    for i, s in led.scored()
                    if (v := compose(weights, s)) is not None
                ]
                rows += [
                    (p, PROXY, v) for p, _, s in led.proxy if s and (v := compose(weights, s)) is not None
                ]
            return rows
        rows += [(led.proposal(i), TRAINED, s[name]) for i, s in led.scored() if name in s]
        rows += [(p, PROXY, s[name]) for p, _, s in led.proxy if s and name in s]
        return rows

    def _fit(self, key: tuple[str, ...] | str, rows: list[tuple[Proposal, int, float]]) -> gp.Fitted | None:
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

    def fitted(self, weights: Mapping[str, float], *, composite: bool, own: bool) -> gp.Fitted | None:
        """The trained source's GP for the composition ``weights``: one GP per positively
        weighted score, summed (``composite``), or one on the composed values."""
        if not composite:
            return self._fit(
                ("objective", *sorted(f"{k}={v!r}" for k, v in weights.items()), str(own)),
                self._rows(weights, None, own),
            )
        parts = []
        for name, c in weights.items():
            if c <= 0:
                continue
            fitted = self._fit(name, self._rows(weights, name, own))
            if fitted is None:
                return None
            parts.append((fitted, c))
        jitters = [f.jitter for f, _ in parts if f.jitter is not None]
        model = SumGP([(f.model, c) for f, c in parts])
        return gp.Fitted(model, max(jitters) if jitters else None, False)

    def correlations(self, names: Sequence[str]) -> dict[str, float]:
        """Per score already fitted, the fitted source correlation (for reports)."""
        return {n: source_correlation(f) for n in names if (f := self._fits.get(n)) is not None}


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
