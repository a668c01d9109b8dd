"""One driver per sweep: a claim file in the sweep's storage folder, held while the driver lives.

Two ``mixopt sweep X.yaml --resume`` of one sweep would both train into the same MLflow runs and
checkpoint folders. The driver that runs a sweep (a new one, or a resumed one) holds
``<storage>/driver.lock``, a :class:`mixopt.claim.Claim` (created with ``O_EXCL``, pid, host and
start time, a heartbeat; a dead driver's lock is taken over with a line saying so).
"""

from __future__ import annotations

from pathlib import Path

from mixopt.claim import STALE_S, Claim, Contended, Held
from mixopt.sweep.common import SweepError

LOCK_FILE = "driver.lock"
__all__ = ["LOCK_FILE", "STALE_S", "SweepLock"]


class SweepLock:
    """The lock of one sweep's storage folder; :meth:`acquire`, then :meth:`release` (idempotent)."""

    def __init__(self, storage: Path, sweep_id: str, doing: str = "run") -> None:
        self.path = Path(storage) / LOCK_FILE
        self.sweep_id = sweep_id
        # "run" or "resumed": what the lock's file says its holder is doing
        self.claim = Claim(self.path, doing)

    def acquire(self, say=print) -> None:
        """Take the lock, or raise SweepError naming the driver that holds it. A stale lock is
        taken over and ``say`` gets one line naming it."""
        try:
            stale = self.claim.acquire()
        except Held as e:
            holder = e.holder
            if holder.pid < 0:
                raise SweepError(
                    f"sweep {self.sweep_id} is being started by another driver (its lock {self.path} "
                    "is not written yet); try again in a minute"
                ) from None
            raise SweepError(
                f"sweep {self.sweep_id} is already being {holder.doing} by pid {holder.pid} on "
                f"{holder.host} (since {holder.since}); wait for it to end, or stop it first "
                f"(its lock: {self.path})"
            ) from None
        except Contended:
            raise SweepError(
                f"sweep {self.sweep_id}: could not take its lock {self.path}; try again"
            ) from None
        if stale is not None:
            say(
                f"[mixopt] sweep {self.sweep_id}: taking over the lock of pid {stale.pid} on "
                f"{stale.host} ({stale.why_stale()}; since {stale.since})"
            )

    @property
    def held(self) -> bool:
        return self.claim.held

    def release(self) -> None:
        self.claim.release()
