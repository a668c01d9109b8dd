"""A cheap proxy for a trained trial: merged task experts, scored by the trainer's own evaluation.

A mixture's finetuned model is approximately the task-arithmetic merge of experts finetuned on
single tasks (arXiv:2212.04089, arXiv:2505.16066, arXiv:2602.04937), so a mixture can be scored in
the time of one evaluation, with no training. ``bench/proxy.py`` measures how well the proxy ranks
mixtures against trained trials (bench/RESULTS.md, "Merged-experts proxy").

- :mod:`~mixopt.proxy.merge`: the streamed float64 merge ``theta0 + sum_k c_k (theta_k - theta0)``
  into memory, and the coefficients of a mixture given the experts' own mixtures.

The scoring of a merge is the trainer's: its optional ``merged_scorer`` hook (:mod:`mixopt.trial`;
the embedding trainer's is :mod:`trainers.merged`, its own evaluation on merged weights, one
architecture loaded once, nothing written).
"""
