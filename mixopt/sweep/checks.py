"""What the sweep checks before any trial runs: the data, the trainer's model path, the concurrency.

A sweep spends GPU-hours; reading every data row once costs seconds to minutes, so by default every
row of every task's data is streamed and validated (``--data-check full``): files, local datasets
and hub datasets alike (a hub dataset is then streamed whole); ``--data-check head`` reads the
first :data:`HEAD_ROWS` rows of each, and the row counts it prints say so. A file that passed is
remembered by its size and modification time (a small JSON cache next to the sweep's
checkpoints), so a second sweep over the same files does not read them again.

Refused (one line each, nothing written): a malformed row (``file:line: ...``), a file with no rows,
a train file with one row, a classification task whose train split has one label, a dev split of
fewer than :data:`MIN_DEV_ROWS` rows (its score is 0 or 1), a ``trainer.model`` that looks like a
path and does not exist, a model the trainer cannot take (its ``check_model`` hook, which reads the
model's config files and names the trainer that can), ``trainer.matryoshka_dims`` that do not start
at that local model's embedding dimension, a local model folder whose tokenizer does not load, a task
whose text is more than half unknown to the tokenizer. Warned: dev labels never seen in train (those
rows always score wrong),
constant STS dev scores (Spearman is undefined; the task scores 0), a dev split of fewer than
:data:`FEW_DEV_ROWS` rows, ``max_concurrent`` above what the machine or cluster can run, a task
whose text is more than 5 % unknown to the tokenizer (:mod:`mixopt.tokens`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixopt import atomic
from mixopt.config import Experiment
from mixopt.data import ClassificationRow, DataError, STSRow, iter_rows
from mixopt.sweep.common import SweepError
from mixopt.tokens import share_problems, share_warnings, shares_line, task_unknown_shares, tokenizer_problem
from mixopt.trial import load_trainer

HEAD_ROWS = 50
# A dev score from one row is 0 or 1 (a retrieval query with one candidate always scores 1.0).
MIN_DEV_ROWS = 2
# Below this a dev score moves in steps of more than 0.1: a warning, the optimizer chases noise.
FEW_DEV_ROWS = 10
# Distinct labels kept per file in the cache; more than this and the label checks are skipped.
MAX_LABELS = 10_000
CACHE_FILE = ".mixopt-data-check.json"
CACHE_VERSION = 2


@dataclass
class FileStats:
    """What the checks need from one file: its row count, its labels or whether its scores vary."""

    rows: int
    labels: list[str] | None = None  # classification: distinct labels (None: more than MAX_LABELS)
    scores_vary: bool | None = None  # STS: at least two distinct gold scores
    complete: bool = True  # False: reading stopped at the head, the file may have more rows

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "labels": self.labels,
            "scores_vary": self.scores_vary,
            "complete": self.complete,
        }


@dataclass
class DataReport:
    """The result of :func:`check_data`: dev rows per task and the warnings to show."""

    dev_rows: dict[str, int] = field(default_factory=dict)
    partial: set[str] = field(default_factory=set)  # tasks whose dev rows were read only in part
    # task -> (share of <unk> tokens, tokens) in a sample of its train rows (mixopt.tokens)
    unknown: dict[str, tuple[float, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    cache_file: Path | None = None
    cache: dict[str, Any] | None = None  # to write once the sweep starts (see save_cache)

    def save_cache(self) -> None:
        """Remember the files that passed (written only when the sweep goes ahead: bad input writes nothing)."""
        if self.cache_file is None or self.cache is None:
            return
        try:
            atomic.write_text(self.cache_file, json.dumps({"version": CACHE_VERSION, "files": self.cache}))
        except OSError:
            pass  # a read-only storage only costs the next sweep a re-read

    def unknown_line(self) -> str | None:
        """The unknown-token share per task, or None when the tokenizer is not local or has no <unk>."""
        return shares_line(self.unknown) if self.unknown else None

    def dev_rows_line(self) -> str:
        line = "dev score rests on " + ", ".join(
            f"{t} {n}{'+' if t in self.partial else ''} rows" for t, n in self.dev_rows.items()
        )
        if self.partial:
            line += f" (+: --data-check head read only the first {HEAD_ROWS} rows; 'full' counts them all)"
        return line


def file_stats(path: Path, kind: Any, head: int | None = None) -> FileStats:
    """Stream the rows of ``path`` (all of them, or the first ``head``); raise DataError on a bad one."""
    n = 0
    labels: set[str] | None = set()
    first_score: float | None = None
    vary = False
    for row in iter_rows(path, kind):
        n += 1
        if isinstance(row, ClassificationRow) and labels is not None:
            labels.add(row.label)
            if len(labels) > MAX_LABELS:
                labels = None
        elif isinstance(row, STSRow):
            first_score = row.score if first_score is None else first_score
            vary = vary or row.score != first_score
        if head is not None and n >= head:
            break
    complete = head is None or n < head
    kind_name = getattr(kind, "value", kind)
    return FileStats(
        rows=n,
        labels=sorted(labels) if kind_name == "classification" and labels is not None else None,
        scores_vary=vary if kind_name == "sts" else None,
        complete=complete,
    )


def cache_path(exp: Experiment) -> Path:
    return Path(exp.storage).expanduser().resolve() / CACHE_FILE


def _cache_key(path: Path, kind: Any, mode: str) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{path.resolve()}|{getattr(kind, 'value', kind)}|{mode}|{st.st_size}|{st.st_mtime_ns}"


def _load_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data.get("files", {}) if data.get("version") == CACHE_VERSION else {}


def check_data(exp: Experiment, mode: str = "full", use_cache: bool = True) -> DataReport:
    """Check every task file of ``exp`` before any trial; raise SweepError listing every problem.

    ``mode``: ``full`` streams every row, ``head`` the first :data:`HEAD_ROWS`. Files that pass are
    cached by (path, size, mtime); :meth:`DataReport.save_cache` writes the cache.
    """
    if mode not in ("full", "head"):
        raise ValueError(f"data check mode {mode!r}: choose full or head")
    cache_file = cache_path(exp)
    cache = _load_cache(cache_file) if use_cache else {}
    new_cache: dict[str, Any] = {}
    problems: list[str] = []
    report = DataReport()
    for t in exp.tasks:
        stats: dict[str, FileStats] = {}
        for split, f in (("train", t.train_file), ("dev", t.dev_file)):
            is_file = isinstance(f, Path)
            key = _cache_key(f, t.kind, mode) if is_file else None
            if key is not None and key in cache:
                stats[split] = FileStats(**cache[key])
            else:
                head = HEAD_ROWS if mode == "head" else None
                try:
                    stats[split] = file_stats(f, t.kind, head)
                except DataError as e:
                    problems.append(f"task {t.name}: {e}")
                    if not is_file:
                        break  # a dataset's train and dev parts usually fail alike: one line per task
                    continue
            if key is not None:
                new_cache[key] = stats[split].to_json()
        found = _task_problems(t, stats, report)
        # A dataset's train and dev parts come from one split and usually fail alike: one line a task.
        problems += found[:1] if t.dataset else found
    problems += model_problems(exp)
    if not problems and (tokenizer := tokenizer_problem(exp.trainer.knobs.model)) is not None:
        problems.append(tokenizer)
    if problems:
        raise SweepError("\n".join(problems))
    report.unknown = task_unknown_shares(exp)
    if share_problems(report.unknown):
        raise SweepError("\n".join(share_problems(report.unknown)))
    report.warnings += share_warnings(report.unknown)
    if use_cache and not new_cache.items() <= cache.items():
        report.cache_file, report.cache = cache_file, {**cache, **new_cache}
    return report


def _task_problems(t: Any, stats: Mapping[str, FileStats], report: DataReport) -> list[str]:
    problems = []
    train, dev = stats.get("train"), stats.get("dev")
    kind = t.kind.value
    if train is not None:
        if train.rows == 0:
            problems.append(f"task {t.name}: {t.train_file}: the file has no rows")
        elif train.rows == 1:
            problems.append(
                f"task {t.name}: {t.train_file}: only one row; a trial needs at least 2 to train on"
            )
        if kind == "classification" and train.labels is not None and len(train.labels) == 1:
            problems.append(
                f"task {t.name}: {t.train_file}: every row has the label {train.labels[0]!r}; "
                "a classification task needs at least 2 labels"
            )
    if dev is None:
        return problems
    report.dev_rows[t.name] = dev.rows
    if not dev.complete:
        report.partial.add(t.name)
    if dev.rows == 0:
        problems.append(f"task {t.name}: {t.dev_file}: the file has no rows")
    elif dev.rows < MIN_DEV_ROWS:
        problems.append(
            f"task {t.name}: {t.dev_file}: {dev.rows} dev row; a score from fewer than {MIN_DEV_ROWS} "
            "rows is 0 or 1 (noise the optimizer would chase); give the dev split more rows"
        )
    elif dev.rows < FEW_DEV_ROWS:
        report.warnings.append(
            f"task {t.name}: the dev score rests on {dev.rows} rows; it moves in steps of "
            f"{1 / dev.rows:.2g} and the optimizer will chase that noise"
        )
    if kind == "classification" and train is not None and train.labels and dev.labels:
        unseen = sorted(set(dev.labels) - set(train.labels))
        if unseen:
            report.warnings.append(
                f"task {t.name}: dev labels never seen in train: {unseen[:5]}"
                + (f" (+{len(unseen) - 5} more)" if len(unseen) > 5 else "")
                + "; those dev rows can never be classified right"
            )
    if kind == "sts" and dev.rows >= MIN_DEV_ROWS and dev.scores_vary is False:
        report.warnings.append(
            f"task {t.name}: every gold score in {t.dev_file} is the same; Spearman is undefined and "
            "the task scores 0 whatever the model"
        )
    return problems


def looks_like_path(value: str) -> bool:
    """A model given as a filesystem path rather than a Hugging Face id (``org/name``)."""
    if "://" in value:
        return False
    if value.startswith(("/", "./", "../", "~")) or os.sep != "/" and os.sep in value:
        return True
    parts = value.split("/")
    # "data/synthetic/model" is a path; "google/embeddinggemma-300m" is an id unless ./google exists.
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).is_dir())


def model_problems(exp: Experiment) -> list[str]:
    """``trainer.model`` that looks like a path and is not a directory, a model the trainer cannot
    take (its ``check_model`` hook, from the model's config alone), or ``trainer.matryoshka_dims``
    that does not start at the local model's embedding dimension (every trial would fail)."""
    knobs = exp.trainer.knobs
    model = knobs.model
    if model is None:
        return []
    is_path = looks_like_path(model)
    path = Path(model).expanduser()
    if is_path and not path.is_dir():
        what = "is a file, not a model directory" if path.exists() else "no such directory"
        return [
            f"trainer.model: {model}: {what} (a local model is a directory with config.json; "
            "a Hugging Face id is 'org/name')"
        ]
    trainer = load_trainer(exp.trainer.target)
    problem = trainer.check_model(model) if trainer.check_model is not None else None
    if problem:
        return [f"trainer.model: {problem}"]
    if not is_path:
        return []
    if knobs.matryoshka_dims is not None:
        return _dims_problems(knobs.matryoshka_dims, path)
    field = trainer.options.model_fields.get("matryoshka_dims")
    default = field.default if field is not None else None
    return _dims_problems(default, path, "(the trainer's default)") if isinstance(default, list) else []


def model_dim(path: Path) -> tuple[int, Path] | None:
    """The embedding dimension of a local model directory and the config file it was read from.

    A sentence-transformers directory embeds in its last Dense layer's ``out_features`` (its
    transformer's ``hidden_size`` when it has none); a bare transformer in its ``hidden_size`` (the
    trainer adds EmbeddingGemma's Dense pair, which ends where it starts). None when the JSON does
    not say: the trainer checks again when it loads the weights.
    """
    try:
        modules_file = path / "modules.json"
        if modules_file.exists():
            modules = json.loads(modules_file.read_text())
            dense = [m for m in modules if str(m.get("type", "")).endswith(".Dense")]
            if dense:
                cfg_file = path / dense[-1]["path"] / "config.json"
                return int(json.loads(cfg_file.read_text())["out_features"]), cfg_file
            path = path / modules[0].get("path", "")
        cfg_file = path / "config.json"
        cfg = json.loads(cfg_file.read_text())
        hidden = cfg.get("hidden_size") or (cfg.get("text_config") or {}).get("hidden_size")
        return (int(hidden), cfg_file) if hidden else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None


def _dims_problems(dims: Sequence[int] | None, model: Path, whose: str = "") -> list[str]:
    if not dims:
        return []  # not given (the trainer's default) or malformed (the trainer's options say so)
    found = model_dim(model)
    if found is None or dims[0] == found[0]:
        return []
    dim, source = found
    fix = [dim, *(d for d in dims[1:] if d < dim)]
    return [
        f"trainer.matryoshka_dims: {dims}{' ' + whose if whose else ''}: the model {model} embeds in "
        f"{dim} dimensions ({source}); "
        f"the first Matryoshka dim must be that full dimension and the rest smaller, e.g. {fix}"
    ]


def trial_slots(exp: Experiment, resources: Mapping[str, float]) -> int:
    """How many trials fit at once in ``resources`` (Ray's resource names: CPU, GPU, custom)."""
    asks = {"CPU": exp.resources.cpus, "GPU": exp.resources.gpus, **exp.resources.custom}
    fits = [int(resources.get(name, 0.0) // amount) for name, amount in asks.items() if amount > 0]
    return max(0, min(fits)) if fits else 0


def local_resources(exp: Experiment) -> dict[str, float]:
    """The resources a local Ray started on this machine would have."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    out = {"CPU": float(cpus)}
    if exp.resources.gpus > 0:
        import torch  # only to count GPUs: `mixopt validate` runs this without loading torch otherwise

        out["GPU"] = float(torch.cuda.device_count())
    return out


def concurrency_warning(exp: Experiment, resources: Mapping[str, float], where: str) -> str | None:
    """A warning when ``optimizer.max_concurrent`` asks for more trials at once than ``resources`` fit."""
    want = exp.optimizer.max_concurrent
    if want is None:
        return None
    slots = trial_slots(exp, resources)
    if want <= slots:
        return None
    have = ", ".join(f"{v:g} {k}" for k, v in sorted(resources.items()) if k in ("CPU", "GPU"))
    ask = f"resources.cpus={exp.resources.cpus:g}" + (
        f", resources.gpus={exp.resources.gpus:g}" if exp.resources.gpus else ""
    )
    return (
        f"optimizer.max_concurrent {want}: {where} has {have} and a trial asks for {ask}, so at most "
        f"{slots} trial{'s' if slots != 1 else ''} can run at a time"
    )
