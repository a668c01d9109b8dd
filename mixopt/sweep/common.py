"""Small parts the sweep's modules share: its errors and summary, the state file.

It imports no other module of the sweep, so that every one of them can import it.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixopt import atomic
from mixopt.config import STORAGE_URI_MESSAGE, Experiment
from mixopt.data import DataError
from mixopt.optimizer.recommendation import RecommendationRecord

if TYPE_CHECKING:
    from mixopt.optimizer import MixtureOptimizer


class SweepError(RuntimeError):
    """A sweep that cannot start (bad data, nothing to resume...); nothing has been run."""


class SweepInterrupted(SweepError):
    """The sweep stopped before its end and ``--resume`` continues it (its MLflow run is marked
    KILLED): Ctrl-C, SIGTERM, a trial's infrastructure failure, an error of the driver.

    ``exit_code``: the shell's code for a signal (128 + its number: 130 SIGINT, 143 SIGTERM), else 1.
    """

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cluster scheduler's pre-emption), raised in the driver's main thread so that it
    takes the path Ctrl-C takes: trials and the sweep run marked KILLED, ``--resume`` continues."""


class SweepFailed(SweepError):
    """The sweep ran and cannot give an answer (a trial hit bad data); its MLflow run is FAILED."""


class StorageFull(SweepError):
    """The driver cannot write under ``storage`` (disk full, quota): the sweep run is marked KILLED,
    and ``--resume`` continues it once there is space. ``reason``: what could not be written, and why."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class InfrastructureFailed(SweepInterrupted):
    """A trial failed for the infrastructure (no space, a dead worker, out of memory), not for its
    mixture: the sweep stopped, its run is marked KILLED, and ``--resume`` runs that trial again."""


# OS errors that say the storage, not the trial, is at fault: no space left, or the quota spent.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def in_chain(err: BaseException, match: Callable[[BaseException], bool]) -> BaseException | None:
    """The first exception of ``err``'s chain (itself, then its causes and contexts) that ``match``es."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if match(e):
            return e
        e = e.__cause__ or e.__context__
    return None


def no_space(err: BaseException) -> OSError | None:
    """The out-of-space OSError in ``err``'s chain, or None."""
    found = in_chain(err, lambda e: isinstance(e, OSError) and e.errno in NO_SPACE)
    return found if isinstance(found, OSError) else None


# Kinds of trial failure (the FAILURE_KIND tag of mixopt.tracking.tags).
DATA, INFRASTRUCTURE, TRIAL = "data", "infrastructure", "trial"


def out_of_memory(err: BaseException) -> BaseException | None:
    """The out-of-memory error in ``err``'s chain: Python's ``MemoryError`` (an allocation the
    operating system refused), or an accelerator's (``torch.OutOfMemoryError``); else None."""
    return in_chain(err, lambda e: isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError")


def failure_kind(err: BaseException) -> str:
    """Whether an exception raised in a trial blames the data, the infrastructure, or the trial.

    The chain is walked (a trainer re-raises a DataError as TrialFailed ``from None``, which still
    keeps it as the context): a :class:`mixopt.data.DataError` anywhere is bad data; an out-of-space
    OSError or an out-of-memory error is the infrastructure (the machine, not the mixture: the
    sweep stops and ``--resume`` runs the trial again); anything else is the trial's own failure.
    """
    if no_space(err) is not None or out_of_memory(err) is not None:
        return INFRASTRUCTURE
    return DATA if in_chain(err, lambda e: isinstance(e, DataError)) is not None else TRIAL


def storage_full(err: OSError, path: Path | str | None = None) -> StorageFull:
    """The one line for an out-of-space error: what could not be written, and what to do."""
    where = err.filename or path or "storage"
    reason = f"cannot write {where}: {err.strerror or os.strerror(err.errno or 0)}"
    return StorageFull(f"{reason}; free space there, then continue the sweep with --resume", reason)


def storage_full_in(err: BaseException, storage: Path) -> StorageFull | None:
    """The one-line error for a full disk anywhere in ``err``'s chain (Tune wraps what its loop
    raised, a callback's state save or its own experiment files), or None."""
    found = in_chain(err, lambda e: isinstance(e, StorageFull))
    if isinstance(found, StorageFull):
        return found
    full = no_space(err)
    return storage_full(full, storage) if full is not None else None


def one_line(e: BaseException) -> str:
    """``Type: first line of the message`` (a :class:`SweepError`'s message alone)."""
    if isinstance(e, StorageFull):
        return e.reason
    lines = str(e).strip().splitlines()
    if isinstance(e, SweepError):
        return lines[0] if lines else type(e).__name__
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


@dataclass
class SweepSummary:
    parent_run_id: str
    experiment_name: str
    tracking_uri: str
    storage_dir: Path
    finished: int = 0
    failed: int = 0
    best: tuple[dict[str, Any], float] | None = None
    idle_fraction: float | None = None
    wall_seconds: float = 0.0
    trials: list[dict[str, Any]] = field(default_factory=list)
    # The recommendation (the one the verification tested, if it ran), and the verification.
    recommended: RecommendationRecord | None = None
    verification: Any = None

    experiment_id: str = ""


def top_weights(proposal: Mapping[str, Any], tasks: list[str], n: int = 3) -> str:
    ws = sorted(((proposal[t], t) for t in tasks), reverse=True)[:n]
    return " ".join(f"{t}={w:.2f}" for w, t in ws)


class State:
    """The optimizer and its on-disk state file, saved after every change."""

    def __init__(self, optimizer: MixtureOptimizer, path: Path):
        self.optimizer, self.path = optimizer, path

    def save(self) -> None:
        """Raises :class:`StorageFull` (one line, naming the file) when the disk has no room."""
        try:
            atomic.write_text(self.path, json.dumps(self.optimizer.state_dict()))
        except OSError as e:
            if e.errno in NO_SPACE:
                raise storage_full(e, self.path) from None
            raise


def storage_dir(exp: Experiment, parent_id: str) -> Path:
    if "://" in exp.storage:  # refused by the config already; an Experiment built by hand too
        raise SweepError(STORAGE_URI_MESSAGE.format(storage=exp.storage))
    return (Path(exp.storage) / exp.name / f"sweep-{parent_id[:8]}").resolve()
