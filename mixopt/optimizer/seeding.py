"""Random streams, the user's seed mixtures and bounded-Dirichlet draws.

Every random choice of the optimizer is keyed by ``(random_state, what, index)``: the same calls
give the same proposals, in any process, and a restored state continues exactly. The keys are a
:class:`RandomStreams`, an argument of the optimizer: another one (a subclass keying some choices
differently) draws other numbers for those choices, all else equal.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mixopt.space import NEAR_IDENTICAL, Proposal, SearchSpace

logger = logging.getLogger("mixopt.optimizer")

# What a random choice is for; part of its seed, so two kinds of choice never share draws.
TAGS = {"user-seed": 1, "seed": 2, "random": 3, "fit": 4, "acq": 5, "recommend": 6}
# How many bounded-Dirichlet redraws to try before accepting a near-duplicate (tiny spaces only).
MAX_REDRAWS = 200


class RandomStreams:
    """Seeds of the optimizer's random choices, a pure function of their key (:meth:`key`).

    Args:
        random_state: the optimizer's seed.
    """

    def __init__(self, random_state: int) -> None:
        self.random_state = int(random_state)

    def key(self, tag: str, index: int) -> list[int]:
        """The entropy of one random choice: ``[random_state, TAGS[tag], index]``."""
        return [self.random_state % (2**64), TAGS[tag], index]

    def seed(self, tag: str, index: int) -> int:
        """A 63-bit seed for one random choice: ``SeedSequence(key(tag, index))``."""
        entropy = self.key(tag, index)
        return int(np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))

    def rng(self, tag: str, index: int) -> np.random.Generator:
        return np.random.default_rng(self.seed(tag, index))


def alpha_vector(space: SearchSpace, alpha: float | dict[str, float]) -> np.ndarray:
    """The concentration per task, ``(K,)``: one number for all, or task -> number (others 1.0)."""
    return np.array([alpha.get(t, 1.0) if isinstance(alpha, dict) else alpha for t in space.tasks])


def user_seeds(space: SearchSpace, mixtures: Sequence[Any], streams: RandomStreams) -> list[Proposal]:
    """The user's seed mixtures as complete proposals, in order.

    Missing tasks get weight 0; a seed's hyperparameters are its own values, else each
    hyperparameter's ``default``, else a prior draw. Two seeds closer than ``NEAR_IDENTICAL`` are
    the same trial: an error, since the second would teach the GP nothing.
    """
    out: list[Proposal] = []
    for i, mix in enumerate(mixtures):
        where = f"seed_mixtures[{i}]"
        if not isinstance(mix, Mapping):
            raise ValueError(f"{where}: a seed mixture is a dict task -> weight, got {mix!r}")
        w = space.check_mixture(mix, where, partial=True)
        hyper = space.default_or_sample(streams.rng("user-seed", i))
        for n in space.hyperparameters:
            if n in mix:
                hyper[n] = space.check_hyperparameter(n, mix[n], where)
        p = space.proposal(w, hyper)
        for j, q in enumerate(out):
            if space.distance(p, q) < NEAR_IDENTICAL:
                raise ValueError(
                    f"seed_mixtures[{j}] and seed_mixtures[{i}] are the same trial "
                    f"({p}); remove one or give them different hyperparameters"
                )
        out.append(p)
    return out


def draw(space: SearchSpace, alpha: np.ndarray, rng: np.random.Generator, taken_x: np.ndarray) -> Proposal:
    """A bounded-Dirichlet(``alpha``) mixture with prior hyperparameters, away from every taken point.

    ``taken_x``: ``(m, dim)`` features of the pending and told proposals. Bounds are honoured by
    construction (:func:`mixopt.space.bounded_dirichlet`).
    """
    p: Proposal = {}
    for _ in range(MAX_REDRAWS):
        p = space.proposal(space.sample_mixture(rng, alpha), space.sample_hyperparameters(rng))
        if (
            not len(taken_x)
            or space.feature_distances(space.encode(p)[None], taken_x).min() >= NEAR_IDENTICAL
        ):
            return p
    logger.warning(
        "no draw distinct from the %d pending/told proposals after %d tries: the search space is "
        "nearly exhausted; proposing a near-duplicate",
        len(taken_x),
        MAX_REDRAWS,
    )
    return p
