"""The Tune Searcher over the MixtureOptimizer: ask on suggest, tell on completion."""

from __future__ import annotations

import json
import math
from pathlib import Path

from mixopt.config import Experiment
from mixopt.sweep.common import State, atomic_write
from mixopt.sweep.progress import Printer
from mixopt.tracking import SweepTracker, mixture_params


def search_seed(base: int, trial_id: str) -> int:
    """Trial ``trial-NNN`` trains with seed ``base + NNN``: every trial draws its own seed noise,
    so the GP's noise term absorbs it instead of the optimizer climbing one seed's landscape."""
    return base + int(trial_id.rsplit("-", 1)[-1])


def make_searcher(
    state: State,
    tracker: SweepTracker,
    exp: Experiment,
    n_to_run: int,
    reruns: list[tuple[str, str, dict]],
    next_index: int,
    printer: Printer,
):
    from ray.tune.search import Searcher

    class MixtureSearcher(Searcher):
        """Tune Searcher over the MixtureOptimizer: ask on suggest, tell on completion.

        Trials still running are pending in the optimizer, so the next worker to free up gets a
        proposal away from them at once (asynchronous, no batch barrier).
        """

        def __init__(self) -> None:
            super().__init__(metric="objective", mode="max")
            self.issued = 0
            self.index = next_index
            self.live: dict[str, tuple[str, str, dict]] = {}

        def suggest(self, tune_trial_id: str) -> dict | None:
            if self.issued >= n_to_run:
                return Searcher.FINISHED
            opt = state.optimizer
            if reruns:
                trial_id, run_id, proposal = reruns.pop(0)
                origin = "rerun"
                try:
                    first_origin = opt.origin(proposal)
                except ValueError:  # a run MLflow has and the saved state does not
                    first_origin = origin
                tracker.restart_trial(
                    run_id,
                    mixture_params(proposal, exp.task_names)
                    | {"origin": first_origin, "seed": str(search_seed(exp.trainer.seed, trial_id))},
                )
            else:
                proposal = opt.ask(1)[0]
                state.save()
                trial_id = f"trial-{self.index:03d}"
                self.index += 1
                origin = opt.origin(proposal)
                run_id = tracker.start_trial(
                    trial_id, proposal, exp.task_names, origin, search_seed(exp.trainer.seed, trial_id)
                )
            self.issued += 1
            self.live[tune_trial_id] = (trial_id, run_id, proposal)
            printer.started(trial_id, origin, proposal)
            seed = search_seed(exp.trainer.seed, trial_id)
            return {"proposal": proposal, "trial_id": trial_id, "run_id": run_id, "seed": seed}

        def on_trial_complete(
            self, tune_trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            trial_id, run_id, proposal = self.live.pop(tune_trial_id)
            value = None
            if not error and result is not None:
                v = result.get("objective")
                value = float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None
            # Saved by the callback once MLflow has recorded the trial's end (Tune calls it next), so
            # "told in the saved state" always implies "closed in MLflow".
            state.optimizer.tell(proposal, value)

        # Tune checkpoints its search algorithm with the experiment. The optimizer state is the
        # searcher's whole memory (the driver also saves it after every ask and tell, which is what
        # --resume reads), so save/restore write and read that same state.
        def save(self, checkpoint_path: str) -> None:
            atomic_write(Path(checkpoint_path), json.dumps(state.optimizer.state_dict()))

        def restore(self, checkpoint_path: str) -> None:
            from mixopt.optimizer import MixtureOptimizer

            state.optimizer = MixtureOptimizer.from_state_dict(json.loads(Path(checkpoint_path).read_text()))

    return MixtureSearcher()
