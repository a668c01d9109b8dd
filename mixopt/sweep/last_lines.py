"""The sweep's last lines: the recommendation with its interval, how much evidence it rests on, and
what the verification measured of it.

The interval is the reported posterior's (:meth:`MixtureOptimizer.predictive`: the GP with its
hyperparameters integrated, whose coverage bench/calibration.py measures, bench/RESULTS.md,
"Calibration"). Where the evidence is thin (fewer than ``FEW_TRIALS`` trials) a line says so and
how many seeds of the recommended mixture would halve the interval: ``r`` more trials at one
mixture with noise sd ``s`` turn a posterior sd ``p`` into ``(1 / p^2 + r / s^2)^(-1/2)``, so halving
it takes ``r = 3 s^2 / p^2``. After the verification, the recommended arm's mean over its seeds
is set beside the prediction re-made with the verification's pooled seed sd as evidence of the
noise (its two arms: ``2 (n - 1)`` degrees of freedom).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from scipy import stats

from mixopt.optimizer.recommendation import RecommendationRecord

if TYPE_CHECKING:
    from mixopt.optimizer import MixtureOptimizer

# Below this many trials the prediction is said to rest on few trials (bench/RESULTS.md,
# "Calibration": at 6 trials the interval is wide, from 12 it covers near its nominal rate).
FEW_TRIALS = 12
Z95 = 1.959964


def seeds_to_halve(sd_pred: float, noise_sd: float) -> int:
    """Trials at the recommended mixture that would halve its posterior sd (module docstring)."""
    return max(1, math.ceil(3.0 * (noise_sd / sd_pred) ** 2)) if sd_pred > 0 else 1


def recommendation_lines(record: RecommendationRecord, tasks: list[str]) -> list[str]:
    """The recommended mixture and its prediction, and a line when the evidence is thin."""
    weights = ", ".join(f"{t}={record.proposal[t]:.3f}" for t in tasks)
    hps = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in record.proposal.items()
        if k not in tasks
    )
    if record.source != "posterior_mean" or record.sd_pred is None:
        pred = f"observed {record.mean_pred:.4f}; too few results for the GP"
        return [
            f"recommended (the best observed trial): {weights}" + (f"; {hps}" if hps else "") + f" ({pred})"
        ]
    lo, hi = record.mean_pred - Z95 * record.sd_pred, record.mean_pred + Z95 * record.sd_pred
    pred = f"predicted {record.mean_pred:.4f} ± {record.sd_pred:.4f}, 95% {lo:.4f}..{hi:.4f}"
    if record.trials is not None:
        pred += f", from {record.trials} trials"
    noise = record.noise_sd
    if noise is not None:
        pred += f"; trial noise sd {noise:.4f}"
        if record.noise_sd_range is not None:
            pred += f" (95% {record.noise_sd_range[0]:.4f}..{record.noise_sd_range[1]:.4f})"
    out = [
        f"recommended (GP posterior-mean maximiser): {weights}" + (f"; {hps}" if hps else "") + f" ({pred})"
    ]
    if record.trials is not None and record.trials < FEW_TRIALS:
        more = ""
        if noise is not None:
            r = seeds_to_halve(record.sd_pred, noise)
            more = (
                f"; {r} seed{'s' if r != 1 else ''} of the recommended mixture (verify.seeds: {r}) would bring "
                f"± {record.sd_pred:.4f} to about ± {record.sd_pred / 2:.4f}, and more search trials "
                "(optimizer.max_trials) would narrow it elsewhere too"
            )
        out.append(
            f"the prediction rests on {record.trials} trials (fewer than {FEW_TRIALS}): the trial noise and the "
            f"landscape are barely measured, so the interval is wide{more}"
        )
    return out


def verified_lines(
    record: RecommendationRecord, values: Sequence[float], seed_sd: float | None, opt: MixtureOptimizer | None
) -> tuple[list[str], dict[str, Any]]:
    """The recommended arm's mean over its verification seeds (``values``) beside the prediction
    re-made with the verification's pooled ``seed_sd``; the lines and what ``recommended.json``
    records of it (nothing below 2 seeds)."""
    n = len(values)
    if n < 2 or seed_sd is None or record.source != "posterior_mean":
        return [], {}
    mean = math.fsum(values) / n
    se = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1) / n)
    half = float(stats.t.ppf(0.975, n - 1)) * se
    doc: dict[str, Any] = {"recommended_mean": mean, "recommended_se": se}
    pred_mean, pred_sd = record.mean_pred, record.sd_pred
    how = ""
    if opt is not None:
        try:
            m, s = opt.predictive(objective=record.objective, seed_sd=(seed_sd, 2 * (n - 1))).predict(
                [record.proposal]
            )
            pred_mean, pred_sd = float(m[0]), float(s[0])
            how = " (its noise informed by the verification's seed sd)"
            doc["prediction_with_seed_sd"] = {"mean": pred_mean, "sd": pred_sd}
        except (RuntimeError, ValueError):
            pass
    assert pred_sd is not None
    gap = mean - pred_mean
    z = gap / math.hypot(pred_sd, se) if pred_sd > 0 or se > 0 else 0.0
    verdict = "within" if abs(z) <= Z95 else "OUTSIDE"
    doc["prediction_z"] = z
    line = (
        f"recommended mixture on the {n} verification seeds: {mean:.4f} ± {half:.4f} (95%); predicted "
        f"{pred_mean:.4f} ± {pred_sd:.4f}{how}: {gap:+.4f}, {verdict} the 95% interval of the difference ({z:+.1f} sd)"
    )
    return [line], doc
