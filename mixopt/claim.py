"""One writer at a time: a claim file, created atomically, held while its writer lives.

Two processes that would write the same place (two drivers of one sweep, two soups into one
``--out``) must not both go ahead: each would report success and one's work would be lost under
the other's. The writer holds a claim file: created with ``O_CREAT | O_EXCL`` (one creator wins,
also on a shared filesystem), holding the pid, the host, the start time and what the holder is
doing; a heartbeat thread touches it every :data:`HEARTBEAT_S` seconds. A claim is stale, and is
taken over, when its pid is no longer running on this host, or when its heartbeat is older than
:data:`STALE_S` (a writer on another host that died, or was SIGKILLed with its machine).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HEARTBEAT_S = 10.0
# Several missed heartbeats: a writer that lives touches the file every HEARTBEAT_S seconds even
# while the machine is loaded (the thread only calls os.utime).
STALE_S = 120.0


@dataclass
class Holder:
    """Who holds a claim (what its file says), and how long ago its heartbeat was.

    ``pid`` is -1 for a file whose creator has not written it yet (or died before it did)."""

    pid: int
    host: str
    since: str
    age: float
    doing: str = "run"
    ino: int = 0  # the claim file's inode when read: a takeover moves aside only that file

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


class Held(RuntimeError):
    """The claim is held by a live process: :attr:`holder` says which."""

    def __init__(self, path: Path, holder: Holder) -> None:
        super().__init__(f"{path} is held by pid {holder.pid} on {holder.host} (since {holder.since})")
        self.path, self.holder = path, holder


class Contended(RuntimeError):
    """Other processes kept taking the claim over while this one tried: nothing was taken."""


def read_holder(path: Path) -> Holder | None:
    """What the claim file at ``path`` says; None when there is none."""
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


class Claim:
    """The claim file ``path``; :meth:`acquire`, then :meth:`release` (idempotent)."""

    def __init__(self, path: Path, doing: str = "run") -> None:
        self.path = Path(path)
        self.doing = doing  # what the file says its holder is doing
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False

    def acquire(self) -> Holder | None:
        """Take the claim; return the stale holder taken over (None: the claim was free).

        Raises :class:`Held` while a live process holds it, :class:`Contended` when the file kept
        changing hands during three tries.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        stale: Holder | None = None
        for _ in range(3):
            if self._create():
                break
            holder = read_holder(self.path)
            if holder is None:
                continue  # released between our create and read: try again
            if holder.alive():
                raise Held(self.path, holder)
            # Move the stale file aside under a name of our own: of two processes taking it over,
            # one renames it and the other finds it gone, then one of them creates the new claim.
            # A process that moved aside a claim other than the one it judged stale (another
            # takeover's fresh claim, made between its read and its rename) puts it back.
            aside = self.path.with_name(f".{self.path.name}.stale-{os.getpid()}")
            try:
                os.replace(self.path, aside)
            except FileNotFoundError:
                continue
            if aside.stat().st_ino != holder.ino:
                os.replace(aside, self.path)
                continue
            aside.unlink()
            stale = holder
        else:
            raise Contended(f"could not take {self.path}; try again")
        self.held = True
        self._thread = threading.Thread(target=self._beat, name="mixopt-claim-heartbeat", daemon=True)
        self._thread.start()
        return stale

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
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
        holder = read_holder(self.path)
        if holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname():
            self.path.unlink(missing_ok=True)
        self.held = False
