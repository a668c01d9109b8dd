"""Checkpoint retention (``storage_keep``): keep what a soup or the verification can still use.

Each trial writes a full checkpoint (1.23 GB for EmbeddingGemma-300m in fp32) and the soup reads
a handful, so a sweep keeps, among one sweep's trial runs in MLflow:

- ``top``: the N best of the soup's candidates (finished search trials and the recommended
  mixture's verification runs, with their checkpoint present) by ``objective``, highest first,
  ties by start time: the order :func:`mixopt.soup.selection.select_ingredients` ranks in, so
  ``mixopt soup --runs topK`` (K <= N) picks what it would pick with every checkpoint kept;
- ``verify``: every verification run of the recommended mixture (the soup's other candidates).
  The baseline arm's checkpoints are neither soup candidates
  nor read by the verification (it compares objectives), so they go;
- ``pin``: the trials named by trial id or MLflow run id;
- with ``sweep.log_checkpoints`` (``Keep.logged_first``), every checkpoint whose copy in MLflow's
  artifact store is not yet confirmed whole (tag ``mixopt.checkpoint_logged``, set only once every
  file's SHA-256 there matches the disk's: :class:`mixopt.tracking.writer.CheckpointUploader`);
  and, in any case, a checkpoint whose upload failed (tag ``mixopt.checkpoint_upload_failure``):
  deleting it would leave it nowhere.

Every other finished trial's checkpoint is deleted and its run tagged
``mixopt.checkpoint_pruned=true``; the run and its metrics stay. Objectives never change once
recorded, so a checkpoint outside the top N stays outside it as trials are added: the decision
is recomputed from MLflow after every trial (and on ``--resume``, and by ``mixopt gc``) and
never needs a checkpoint back.

Deleting is one atomic ``rename`` of the checkpoint folder to a tombstone ``.pruned-<run id>``
in the sweep's storage folder, then the tag, then ``rmtree`` of the tombstone: the checkpoint
path is whole or absent, never half-deleted. A kill in between leaves a tombstone, which the next
prune of the sweep (``--resume``, ``mixopt gc``) tags and removes first. Only folders inside the
sweep's storage folder are ever deleted.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixopt.human import human_bytes
from mixopt.sweep.progress import warn
from mixopt.tracking import store
from mixopt.tracking.tags import (
    CHECKPOINT,
    CHECKPOINT_LOGGED,
    CHECKPOINT_PRUNED,
    CHECKPOINT_UPLOAD_FAILURE,
    ROLE,
    ROLE_SWEEP,
    STAGE,
    STATE_PATH,
    STATUS,
    TRIAL_ID,
    VERIFY_ARM,
)

TOMBSTONE = ".pruned-"
_RUN_ID = re.compile(r"[0-9a-f]{32}")
RECOMMENDED_ARM = "recommended"
# Writes the tags of one run (the sweep's SweepTracker.set_tags, or gc's retried client call).
SetTags = Callable[[str, Mapping[str, str]], None]


@dataclass(frozen=True)
class Keep:
    """What to keep (``storage_keep``): see the module docstring."""

    top: int
    verify: bool = True
    pin: tuple[str, ...] = ()
    # sweep.log_checkpoints: delete a checkpoint only once its copy in MLflow is confirmed whole.
    logged_first: bool = False

    @classmethod
    def from_config(cls, cfg: Any, top: int | None = None, logged_first: bool = False) -> Keep:
        """From a :class:`mixopt.config.KeepConfig` (None: keep only ``top``, with verify on);
        ``top`` overrides its ``top`` (``mixopt gc --keep N``); ``logged_first``: the sweep's
        ``sweep.log_checkpoints``."""
        if cfg is None:
            if top is None:
                raise ValueError("no storage_keep and no --keep: nothing says how many to keep")
            return cls(top, logged_first=logged_first)
        return cls(top if top is not None else cfg.top, cfg.verify, tuple(cfg.pin), logged_first)


@dataclass(frozen=True)
class Pruned:
    run_id: str
    trial_id: str
    path: Path
    bytes: int


@dataclass
class Outcome:
    """One prune of one sweep: what was kept (run id -> why) and what was (or would be) deleted."""

    kept: dict[str, str] = field(default_factory=dict)
    pruned: list[Pruned] = field(default_factory=list)
    # Tombstones a killed prune left, finished now: (run id, bytes).
    finished: list[tuple[str, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(p.bytes for p in self.pruned) + sum(b for _, b in self.finished)


def disk_bytes(path: Path | str) -> int:
    """Bytes of the files under ``path`` (links not followed; 0 when it does not exist)."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # removed meanwhile
                pass
    return total


def _local(uri: str) -> Path | None:
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    return None if "://" in uri else Path(uri)


def _inside(path: Path, root: Path) -> bool:
    try:
        p, r = path.resolve(), root.resolve()
    except OSError:
        return False
    return p != r and p.is_relative_to(r)


def _is_candidate(run: Any) -> bool:
    """A run the soup may select: a search trial, or a verification run of the recommended arm."""
    tags = run.data.tags
    if (tags.get(STAGE) or "search") != "verify":
        return True
    return (tags.get(VERIFY_ARM) or run.data.params.get("verify.arm")) == RECOMMENDED_ARM


def decide(runs: Iterable[Any], keep: Keep) -> tuple[dict[str, str], list[Any]]:
    """Which finished trial runs keep their checkpoint (run id -> why) and which lose it.

    ``runs``: one sweep's trial runs. Considered are runs with ``mixopt.status=FINISHED``, a
    ``mixopt.checkpoint`` folder that exists and no ``mixopt.checkpoint_pruned`` tag; the rest
    (running, failed, stopped early, already pruned) are left as they are. Pure: reads the runs.
    """
    present = []
    for run in runs:
        tags = run.data.tags
        if tags.get(STATUS) != "FINISHED" or tags.get(CHECKPOINT_PRUNED) == "true":
            continue
        path = _local(tags.get(CHECKPOINT) or "")
        if path is None or not str(path) or not path.is_dir():
            continue
        present.append(run)
    kept: dict[str, str] = {}
    pins = set(keep.pin)
    for run in present:
        if run.info.run_id in pins or run.data.tags.get(TRIAL_ID) in pins:
            kept[run.info.run_id] = "pinned"
        elif keep.verify and run.data.tags.get(STAGE) == "verify" and _is_candidate(run):
            kept[run.info.run_id] = "a verification run of the recommended mixture"
    ranked = []
    for run in present:
        value = run.data.metrics.get("objective")
        if _is_candidate(run) and value is not None and math.isfinite(value):
            ranked.append(run)
    # The soup's order: objective, highest first; equal values by start time (its stable sort).
    ranked.sort(key=lambda r: (-r.data.metrics["objective"], r.info.start_time or 0))
    for i, run in enumerate(ranked[: keep.top]):
        kept.setdefault(run.info.run_id, f"#{i + 1} by objective")
    for run in present:
        tags = run.data.tags
        if tags.get(CHECKPOINT_UPLOAD_FAILURE):
            kept.setdefault(run.info.run_id, "its copy into MLflow failed: the disk holds the only one")
        elif keep.logged_first and tags.get(CHECKPOINT_LOGGED) != "true":
            kept.setdefault(run.info.run_id, "its copy into MLflow is not confirmed whole yet")
    return kept, [r for r in present if r.info.run_id not in kept]


def finish_tombstones(storage: Path, set_tags: SetTags, dry_run: bool = False) -> list[tuple[str, int]]:
    """Tag and remove the tombstones a killed prune left in ``storage``: (run id, bytes) each."""
    done = []
    if not storage.is_dir():
        return done
    for stone in sorted(storage.glob(TOMBSTONE + "*")):
        run_id = stone.name[len(TOMBSTONE) :]
        if not _RUN_ID.fullmatch(run_id):  # not a tombstone of ours: leave it alone
            continue
        size = disk_bytes(stone)
        if not dry_run:
            set_tags(run_id, {CHECKPOINT_PRUNED: "true"})
            shutil.rmtree(stone, ignore_errors=True)
        done.append((run_id, size))
    return done


def prune_sweep(
    client: store.Client,
    experiment_id: str,
    parent_id: str,
    storage: Path,
    keep: Keep,
    set_tags: SetTags,
    dry_run: bool = False,
) -> Outcome:
    """Apply ``keep`` to sweep run ``parent_id`` (storage folder ``storage``): finish the tombstones
    of a killed prune, then delete each checkpoint :func:`decide` drops (see the module docstring
    for the order that keeps it atomic). ``dry_run``: decide and measure, delete and tag nothing."""
    out = Outcome()
    out.finished = finish_tombstones(storage, set_tags, dry_run)
    runs = store.trial_runs(client, experiment_id, parent_id)
    out.kept, drop = decide(runs, keep)
    for run in drop:
        run_id, trial_id = run.info.run_id, run.data.tags.get(TRIAL_ID, "?")
        path = _local(run.data.tags[CHECKPOINT])
        assert path is not None  # decide() keeps local paths only
        if not _inside(path, storage):
            out.notes.append(
                f"{trial_id} (run {run_id}): checkpoint {path} is outside the sweep's storage {storage}; "
                "left in place"
            )
            continue
        size = disk_bytes(path)
        if not dry_run:
            stone = storage / f"{TOMBSTONE}{run_id}"
            if stone.exists():
                shutil.rmtree(stone)
            os.replace(path, stone)  # one rename: the checkpoint is whole or absent
            set_tags(run_id, {CHECKPOINT_PRUNED: "true"})
            shutil.rmtree(stone, ignore_errors=True)
        out.pruned.append(Pruned(run_id, trial_id, path, size))
    return out


def prune_during_sweep(
    tracker: Any, storage: Path, cfg: Any, verbose: bool, log_checkpoints: bool = False
) -> Outcome | None:
    """The sweep's prune (after each trial, when ``--resume`` reopens it, and once its uploads are
    done): :func:`prune_sweep` of the tracker's open sweep run with ``storage_keep`` ``cfg`` (and
    ``sweep.log_checkpoints``: ``Keep.logged_first``), a line per checkpoint deleted.

    A failure (a busy file, an unreachable store) is a warning, never the sweep's end: the
    checkpoints stay and the next trial's prune decides again. None when it failed.
    """
    try:
        out = prune_sweep(
            tracker.client,
            tracker.experiment_id,
            tracker.parent_id,
            storage,
            Keep.from_config(cfg, logged_first=log_checkpoints),
            tracker.set_tags,
        )
    except Exception as e:
        warn(
            f"storage_keep: could not prune checkpoints in {storage} ({type(e).__name__}: {e}); they stay for now"
        )
        return None
    if verbose:
        for line in describe(out):
            print(f"[mixopt] storage_keep: {line}", flush=True)
    return out


@dataclass(frozen=True)
class SweepGC:
    """``mixopt gc``'s account of one sweep run: its outcome, or why it was left alone."""

    run_id: str
    storage: Path | None
    outcome: Outcome | None
    skipped: str | None = None


def gc_experiment(
    client: store.Client, experiment_name: str, keep: Keep, dry_run: bool = False
) -> list[SweepGC]:
    """``mixopt gc``: :func:`prune_sweep` on every sweep of the experiment that no driver runs.

    A sweep whose MLflow run is still RUNNING is skipped (its driver may be alive; a killed one
    is pruned by ``mixopt sweep --resume``). Raises LookupError when there is no such experiment.
    """
    experiment = store.experiment_by_name(client, experiment_name)
    if experiment is None:
        raise LookupError(f"no MLflow experiment named {experiment_name!r} at {client.tracking_uri}")
    eid = experiment.experiment_id
    sweeps = store.search_all(
        client, [eid], f"tags.`{ROLE}` = '{ROLE_SWEEP}'", ["attributes.start_time ASC"], "search sweeps"
    )

    def set_tags(run_id: str, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            store.retry(lambda k=k, v=v: client.set_tag(run_id, k, v), "set tag")

    out = []
    for sweep in sweeps:
        run_id = sweep.info.run_id
        state = sweep.data.tags.get(STATE_PATH)
        if sweep.info.status == "RUNNING":
            out.append(
                SweepGC(
                    run_id,
                    None,
                    None,
                    "still running (if its driver was killed, `mixopt sweep --resume` prunes it)",
                )
            )
            continue
        if not state:
            out.append(SweepGC(run_id, None, None, f"no {STATE_PATH} tag: its storage folder is unknown"))
            continue
        storage = Path(state).parent
        outcome = prune_sweep(client, eid, run_id, storage, keep, set_tags, dry_run)
        out.append(SweepGC(run_id, storage, outcome))
    return out


def describe(outcome: Outcome, verb: str = "pruned") -> list[str]:
    """One line per checkpoint deleted (or, with ``verb='would prune'``, to be deleted)."""
    lines = [
        f"{verb} {p.trial_id} (run {p.run_id}): {human_bytes(p.bytes)} at {p.path}" for p in outcome.pruned
    ]
    lines += [f"finished the interrupted prune of run {r}: {human_bytes(b)}" for r, b in outcome.finished]
    return lines + list(outcome.notes)


__all__ = [
    "Keep",
    "Outcome",
    "Pruned",
    "SweepGC",
    "decide",
    "describe",
    "disk_bytes",
    "finish_tombstones",
    "gc_experiment",
    "prune_sweep",
    "prune_during_sweep",
]
