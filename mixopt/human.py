"""Figures as a person reads them on the console: a duration, a number of bytes."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``45s``, ``14m``, ``2h05m``: whole seconds under a minute, whole minutes under an hour."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def human_bytes(n: float) -> str:
    """``1.23 GB``, ``4.50 MB``, ``812 B`` (decimal units, as disks are sold)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
