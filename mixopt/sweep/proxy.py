"""The merged-experts proxy in a sweep (``optimizer.proxy: {kind: merged_experts}``).

The optimizer's seed mixtures end with one expert per task (the bounds' nearest mixture to the
task's one-hot, :func:`mixopt.optimizer.sources.corner_mixtures`): ordinary trials, tagged
``mixopt.stage=expert``. The searcher proposes nothing else until every expert has finished
(its next proposal should already know the proxy). Then the trainer's ``merged_scorer`` (the
trainer contract, :mod:`mixopt.trial`) scores the task-arithmetic merge of the experts, in
memory, at every trained mixture and at each new proposal before it is trained; each score is
told to the optimizer (``tell_proxy``: the GPs become two-source, :mod:`mixopt.optimizer.sources`)
and recorded as a run of its own kind (``mixopt.kind=proxy``, nested under the sweep, no
checkpoint). The experts' mixtures are scored too: there the merge *is* the expert (proxy =
trained), which pins the proxy source's GP at the corners; bench/proxy.py part (b) compared
both ways (``--no-expert-pairs``) and leaving them out was not better.

Once four trained (non-expert) mixtures have a proxy score, the proxy's Spearman correlation
with them is printed; below ``min_correlation`` the proxy is dropped (one warning, its
observations forgotten by the optimizer) and the sweep goes on with trained trials alone.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from mixopt.config import Experiment
from mixopt.optimizer import MixtureOptimizer
from mixopt.optimizer.sources import corner_mixtures
from mixopt.proxy.merge import mixture_coefficients
from mixopt.sweep.progress import warn
from mixopt.tracking.tags import CHECKPOINT, PROPOSAL, STAGE, STATUS
from mixopt.trial import TrainerError, load_trainer

MIN_PAIRS = 4


def check_proxy(exp: Experiment) -> None:
    """Refuse ``optimizer.proxy`` where it cannot work, before anything is recorded (one line)."""
    if exp.optimizer.proxy is None:
        return
    if exp.multi_fidelity:
        raise ValueError(
            "optimizer.proxy needs the single-fidelity GP: set optimizer.multi_fidelity: false (and "
            "sweep.early_stopping off), or remove optimizer.proxy"
        )
    trainer = load_trainer(exp.trainer.target)
    if trainer.merged_scorer is None:
        raise TrainerError(
            f"optimizer.proxy: the trainer {exp.trainer.target!r} has no merged_scorer(experts, tasks, "
            "options) to score merged experts in memory (mixopt.trial); remove optimizer.proxy"
        )


class SweepProxy:
    """The proxy's part of one sweep: which trials are experts, the scorer, the counts."""

    def __init__(self, exp: Experiment, tracker: Any, verbose: bool) -> None:
        self.exp, self.tracker, self.verbose = exp, tracker, verbose
        self.min_correlation = exp.optimizer.proxy.min_correlation if exp.optimizer.proxy else 0.5
        self.names = exp.task_names
        self.scorer: Any = None
        self.corners: list[dict[str, float]] = []
        self.count, self.seconds = 0, 0.0
        self.off = False  # dropped (low correlation) or impossible (an expert failed)
        self.reported = False

    def _corners(self, opt: MixtureOptimizer) -> list[dict[str, float]]:
        if not self.corners:
            self.corners = corner_mixtures(opt.space)
        return self.corners

    def is_expert(self, opt: MixtureOptimizer, proposal: dict[str, Any]) -> bool:
        w = np.array([proposal[t] for t in self.names])
        return any(np.abs(w - np.array([c[t] for t in self.names])).max() < 1e-9 for c in self._corners(opt))

    def stage(self, opt: MixtureOptimizer, proposal: dict[str, Any]) -> str:
        return "expert" if self.is_expert(opt, proposal) else "search"

    def waiting(self, opt: MixtureOptimizer) -> bool:
        """Whether the next proposal must wait: every expert asked and one still running, or
        finished and not yet recorded with its checkpoint (Tune's callback records it after the
        searcher is told). Builds the scorer when the experts are all there."""
        if self.off or self.scorer is not None:
            return False
        corners = self._corners(opt)
        asked = [p for p, _ in opt.history] + opt.pending
        if sum(1 for p in asked if self.is_expert(opt, p)) < len(corners):
            return False
        if any(self.is_expert(opt, p) for p in opt.pending):
            return True
        if any(v is None and self.is_expert(opt, p) for p, v in opt.history):
            self.off = True
            warn("proxy off: an expert trial failed, so there is nothing to merge; trained trials only")
            return False
        runs = [r for r in self.tracker.trial_runs() if r.data.tags.get(STAGE) == "expert"]
        paths = []
        for corner in corners:
            run = next(
                (
                    r
                    for r in runs
                    if r.data.tags.get(STATUS) == "FINISHED"
                    and r.data.tags.get(CHECKPOINT)
                    and _close(json.loads(r.data.tags[PROPOSAL]), corner, self.names)
                ),
                None,
            )
            if run is None:
                return True
            paths.append(run.data.tags[CHECKPOINT])
        trainer = load_trainer(self.exp.trainer.target)
        self.scorer = trainer.merged_scorer(paths, self.exp.tasks, self.exp.trainer.options)
        return False

    def before_trial(self, opt: MixtureOptimizer, proposal: dict[str, Any]) -> None:
        """Once the scorer exists: score the trained mixtures not yet scored (the experts'
        included) and ``proposal`` (about to be trained), then the correlation check (on the
        trained mixtures that are not experts: at an expert the two agree by construction)."""
        if self.off or self.scorer is None or self.is_expert(opt, proposal):
            return
        scored = [p for p, _, _ in opt.proxy_history]
        todo = [p for p, v in opt.history if v is not None]
        for p in [*todo, proposal]:
            if p not in scored:
                self._score(opt, p)
                scored.append(p)
        self._check(opt)

    def _score(self, opt: MixtureOptimizer, proposal: dict[str, Any]) -> None:
        mixture = {t: float(proposal[t]) for t in self.names}
        t0 = time.perf_counter()
        result = self.scorer(mixture_coefficients(mixture, self._corners(opt)))
        seconds = time.perf_counter() - t0
        scores = {t: float(result.task_scores[t]) for t in self.names}
        opt.tell_proxy(proposal, scores=scores)
        self.count += 1
        self.seconds += seconds
        metrics = {"objective": float(result.objective), **{f"score.{t}": v for t, v in scores.items()}}
        self.tracker.record_proxy(f"proxy-{self.count:03d}", proposal, self.names, metrics, seconds)

    def _check(self, opt: MixtureOptimizer) -> None:
        if self.reported:
            return
        proxy = [(p, v) for p, v, _ in opt.proxy_history]
        pairs = [
            (next(pv for pp, pv in proxy if pp == p), v)
            for p, v in opt.history
            if v is not None and not self.is_expert(opt, p) and any(pp == p for pp, _ in proxy)
        ]
        if len(pairs) < MIN_PAIRS:
            return
        self.reported = True
        rho = float(spearmanr([a for a, _ in pairs], [b for _, b in pairs])[0])
        if self.verbose:
            print(
                f"[mixopt] proxy: Spearman {rho:.2f} with {len(pairs)} trained trials "
                f"(min_correlation {self.min_correlation:g})",
                flush=True,
            )
        if not rho >= self.min_correlation:  # NaN (constant values) counts as too low
            self.off = True
            n = opt.drop_proxy()
            warn(
                f"proxy dropped: its Spearman correlation with trained trials is {rho:.2f} < "
                f"optimizer.proxy.min_correlation {self.min_correlation:g}; {n} proxy scores forgotten, "
                "trained trials only from now on"
            )

    def summary(self, trial_runs: list[Any]) -> tuple[str, dict[str, float]]:
        """The summary line and the parent run's metrics: proxy evaluations and trials, with costs."""
        trial_s = sum(
            (r.info.end_time - r.info.start_time) / 1000.0
            for r in trial_runs
            if r.info.end_time and r.info.start_time
        )
        line = (
            f"proxy: {self.count} evaluations in {self.seconds:.1f} s; {len(trial_runs)} trials in "
            f"{trial_s:.1f} s" + (" (proxy dropped)" if self.off else "")
        )
        return line, {
            "proxy_evaluations": float(self.count),
            "proxy_seconds": self.seconds,
            "trial_seconds": trial_s,
        }


def _close(proposal: dict[str, Any], corner: dict[str, float], names: list[str]) -> bool:
    return all(abs(float(proposal.get(t, float("nan"))) - corner[t]) < 1e-9 for t in names)
