"""Each task's training loss between two reports: its batches' mean loss, ``loss.<task>``.

A trial's batches each come from one task (the mixture decides which), so the loss of a batch is its
task's; the sums stay on the device (a tensor added to a tensor), read once per report, so CUDA
syncs no more often than the overall loss already makes it.
"""

from __future__ import annotations

from typing import Any


class TaskLosses:
    """Sums of each task's batch losses, and their counts, since the last :meth:`pop`."""

    def __init__(self) -> None:
        self.sums: dict[str, tuple[Any, int]] = {}

    def add(self, task: str, loss: Any) -> None:
        """One batch of ``task`` with loss ``loss`` (a scalar tensor, or a float)."""
        value = loss.detach().float() if hasattr(loss, "detach") else float(loss)
        total, n = self.sums.get(task, (0.0, 0))
        self.sums[task] = (total + value, n + 1)

    def pop(self) -> dict[str, float]:
        """``{"loss.<task>": mean loss of its batches}`` since the last call (tasks with a batch only)."""
        out = {f"loss.{task}": float(total) / n for task, (total, n) in self.sums.items() if n}
        self.sums = {}
        return out
