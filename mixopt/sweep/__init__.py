"""The sweep: Ray Tune runs the trials the MixtureOptimizer asks for; MLflow records them all.

Flow (driver process)::

    MixtureOptimizer ──ask──► MixtureSearcher.suggest ──► Tune runs run_trial on a worker
          ▲                                                        │ report(step, metrics)
          └──tell── MixtureSearcher.on_trial_complete ◄────────────┘
                    SweepCallback ──► SweepTracker (MLflow, the only writer)

Nothing is lost: the optimizer state is saved (atomically) after every ask and tell, and every
trial has its MLflow run from the moment it is asked. ``--resume`` after a killed driver rebuilds
the optimizer from that state, reconciles it with MLflow (a trial that finished while the state
was being written is told now; a trial that was running is run again in its own MLflow run), and
runs only what is missing, so the sweep ends with exactly ``max_trials`` finished-or-failed trials.

One module per role: :mod:`.driver` (``run_sweep`` and :class:`~.driver.Sweep`, which holds
one sweep's parts: ``start`` or resume, ``search``, ``verify``, ``finish``), :mod:`.tuner` (Ray
and one Tune run of trials), :mod:`.worker` (the trial function run on a Ray worker),
:mod:`.searcher` (the Tune Searchers: over the optimizer, over the verification plan),
:mod:`.callback` (the Tune Callback, the single MLflow writer), :mod:`.warm` (a new sweep's
optimizer: the experiment's, warm-started), :mod:`.stopping` (early stopping), :mod:`.progress` (the terminal), :mod:`.resume` (finding the sweep to resume, checking
the YAML against its recorded config, reconciling a restored optimizer with MLflow), :mod:`.lock`
(one driver per sweep), :mod:`.signals` (SIGTERM ends the sweep as Ctrl-C does), :mod:`.verify` (after the search: the recommended mixture vs a baseline on fresh paired
seeds), :mod:`.recommend` (that stage for a recommendation made after the sweep), :mod:`.checks` (what is checked before any trial) and :mod:`.common` (shared small parts,
importing no other module of the sweep).
"""

from mixopt.sweep.checks import check_data
from mixopt.sweep.common import SweepError, SweepSummary
from mixopt.sweep.driver import Sweep, run_sweep
from mixopt.sweep.worker import run_trial

__all__ = ["Sweep", "SweepError", "SweepSummary", "check_data", "run_sweep", "run_trial"]
