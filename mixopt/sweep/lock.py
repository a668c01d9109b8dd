"""One driver per sweep: a lock file in the sweep's storage folder, held while the driver lives.

Two ``mixopt sweep X.yaml --resume`` of one sweep would both train into the same MLflow runs and
checkpoint folders. The driver that runs a sweep (a new one, or a resumed one) holds
``<storage>/driver.lock``: created with ``O_CREAT | O_EXCL`` (one creator wins, also on a shared
filesystem), holding the pid, the host and the start time; a heartbeat thread touches it every
:data:`HEARTBEAT_S` seconds. A lock is stale, and is taken over with a line saying so, when its
pid is no longer running on this host, or when its heartbeat is older than :data:`STALE_S`
(a driver on another host that died, or was SIGKILLed with its machine).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mixopt.sweep.common import SweepError

LOCK_FILE = "driver.lock"
HEARTBEAT_S = 10.0
# Several missed heartbeats: a driver that lives touches the file every HEARTBEAT_S seconds even
# while the machine is loaded (the thread only calls os.utime).
STALE_S = 120.0


@dataclass
class Holder:
    """Who holds a lock (what its file says), and how long ago its heartbeat was."""

    pid: int
    host: str
    since: str
    age: float
    doing: str = "run"
    ino: int = 0  # the lock file's inode when read: a takeover moves aside only that file

    def alive(self) -> bool:
        if self.age > STALE_S:
            return False
        if self.host != socket.gethostname():
            return True  # another host's pid cannot be checked: its heartbeat says it lives
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # a process of another user has that pid
        return True

    def why_stale(self) -> str:
        if self.age > STALE_S:
            return f"no heartbeat for {self.age:.0f}s"
        return "no longer running"


def _read(path: Path) -> Holder | None:
    try:
        st = path.stat()
        data = json.loads(path.read_text())
        age = time.time() - st.st_mtime
        doing = str(data.get("doing", "run"))
        return Holder(int(data["pid"]), str(data["host"]), str(data["since"]), age, doing, st.st_ino)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # Half-written by a creator killed between create and write: judge it by its age alone.
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        age = time.time() - st.st_mtime
        return Holder(-1, "?", "?", age if age > STALE_S else 0.0, ino=st.st_ino)


class SweepLock:
    """The lock of one sweep's storage folder; :meth:`acquire`, then :meth:`release` (idempotent)."""

    def __init__(self, storage: Path, sweep_id: str, doing: str = "run") -> None:
        self.path = Path(storage) / LOCK_FILE
        self.sweep_id = sweep_id
        self.doing = doing  # "run" or "resumed": what the lock's file says its holder is doing
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False

    def acquire(self, say=print) -> None:
        """Take the lock, or raise SweepError naming the driver that holds it. A stale lock is
        taken over and ``say`` gets one line naming it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                break
            holder = _read(self.path)
            if holder is None:
                continue  # released between our create and read: try again
            if holder.alive() and holder.pid < 0:
                raise SweepError(
                    f"sweep {self.sweep_id} is being started by another driver (its lock {self.path} "
                    "is not written yet); try again in a minute"
                )
            if holder.alive():
                raise SweepError(
                    f"sweep {self.sweep_id} is already being {holder.doing} by pid {holder.pid} on "
                    f"{holder.host} (since {holder.since}); wait for it to end, or stop it first "
                    f"(its lock: {self.path})"
                )
            # Move the stale file aside under a name of our own: of two drivers taking it over,
            # one renames it and the other finds it gone, then one of them creates the new lock.
            # A driver that moved aside a lock other than the one it judged stale (another
            # takeover's fresh lock, made between its read and its rename) puts it back.
            aside = self.path.with_name(f".{LOCK_FILE}.stale-{os.getpid()}")
            try:
                os.replace(self.path, aside)
            except FileNotFoundError:
                continue
            if aside.stat().st_ino != holder.ino:
                os.replace(aside, self.path)
                continue
            aside.unlink()
            say(
                f"[mixopt] sweep {self.sweep_id}: taking over the lock of pid {holder.pid} on "
                f"{holder.host} ({holder.why_stale()}; since {holder.since})"
            )
        else:
            raise SweepError(f"sweep {self.sweep_id}: could not take its lock {self.path}; try again")
        self.held = True
        self._thread = threading.Thread(target=self._beat, name="mixopt-lock-heartbeat", daemon=True)
        self._thread.start()

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        with os.fdopen(fd, "w") as f:
            json.dump(
                {"pid": os.getpid(), "host": socket.gethostname(), "since": since, "doing": self.doing}, f
            )
            f.flush()
            os.fsync(f.fileno())
        return True

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass  # a full or unreachable disk: the next beat tries again

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        holder = _read(self.path)
        if holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname():
            self.path.unlink(missing_ok=True)
        self.held = False
