"""The optimizer's defaults, written once: :class:`MixtureOptimizer`'s signature and the
experiment config (``mixopt.config.OptimizerConfig``, ``WarmStartConfig``) both read them here.

Importing this module loads neither torch nor botorch (``mixopt.config`` must start without them).
"""

from __future__ import annotations

# Dirichlet seed trials before the GP. Fewer seeds leave more of the budget to the GP, too few
# leave its first fit blind on some tasks; bench/RESULTS.md, "Mixture optimizer", holds the
# measurements behind the count.
N_SEEDS = 7
# Concentration of the seed draws: 1 is uniform on the simplex.
DIRICHLET_ALPHA = 1.0
# UCB exploration weight in a(x) = mu(x) + beta * sigma(x) (the EmbeddingGemma paper's form).
BETA = 2.0
RANDOM_STATE = 0
# The last proposals of a sweep with a known budget maximise the posterior mean (beta = 0).
EXPLOIT_LAST = 2
# Warm start: a reused trial is dropped when more than this share of its data came from tasks
# the new sweep no longer has (its value says little about the renormalised rest).
WARM_MAX_REMOVED = 0.25
# The multi-fidelity GP's fitted fidelity scale s^p s'^p on the mixture term: off unless asked.
FIDELITY_SCALE = False
