"""Task rows from Hugging Face datasets: a hub id, a ``save_to_disk`` directory, or data files.

A task names its data with ``dataset:`` (see :class:`mixopt.config.TaskConfig`); this module turns
one split of it into the same typed rows (:mod:`mixopt.data`) a JSONL task folder gives.

Sources, and how they are read (never converted whole into memory):

- a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``: memory-mapped
  Arrow (``datasets.load_from_disk``), read in batches;
- data files (``.parquet``, ``.jsonl``/``.json``, ``.csv``; a path or a glob) or another local
  directory: ``load_dataset(<builder>, data_files=..., streaming=True)``, read batch by batch;
- a hub id (``owner/name``): ``load_dataset(id, subset, split=..., streaming=True)`` (or
  downloaded and memory-mapped with ``streaming: false``).

Rows come out in the split's own order, so every trial reads the same rows in the same order and
the trainer's seeded shuffle buffer alone decides the training order.

Columns follow sentence-transformers' conventions (no mapping needed; :data:`mixopt.data.CONVENTIONS`,
the names a task's files take too):

===================== ======================================================================
kind                  columns
===================== ======================================================================
retrieval             ``anchor`` | ``query``; ``positive``; optional ``negative`` /
                      ``negative_1`` … ``negative_n`` (strings) or ``negatives`` (a list)
sts                   ``sentence1``, ``sentence2``, ``score`` (0–1, or 0–5: divided by 5)
classification,       ``text`` | ``sentence``; ``label`` (string, integer or ``ClassLabel``,
clustering            whose names become the labels)
pair_classification   ``sentence1``, ``sentence2``, ``label`` (0/1 or bool)
===================== ======================================================================

(mixopt's own field names — ``query``, ``text1``, ``text2``, ``text`` — are recognised too.) Any
field can be mapped explicitly with ``columns: {query: question, positive: answer}``.

Dev data is a second split (``dev_split``) or a **seeded hold-out** of the train split
(``dev_fraction``): row ``i`` of the split is a dev row iff ``u(i) < dev_fraction`` where ``u`` is
the splitmix64 hash of ``i`` mixed with a fixed seed, mapped to [0, 1). The two parts are disjoint,
their union is the split, and the assignment depends on neither the trial seed nor the reading
order of other rows.

``datasets`` and ``pyarrow`` are imported where a dataset source is read: :mod:`mixopt.config`
imports this module, and ``mixopt --help`` or ``mixopt validate`` must not wait seconds for them.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixopt.data import CONVENTIONS, DataError, Row, negative_columns, parse_row, scan_jsonl

# The hold-out must not depend on any trial seed: one fixed seed for every experiment.
HOLDOUT_SEED = 0x6D69786F7074
# STS scores: rows scanned to decide the scale of a streamed split (an Arrow split scans all).
SCALE_SCAN_ROWS = 10_000
BATCH_ROWS = 1024

DATA_FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
_SAVE_TO_DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")

# Fields that must be present; retrieval "negatives" is optional.
FIELDS: dict[str, tuple[str, ...]] = {
    "retrieval": ("query", "positive", "negatives"),
    "sts": ("text1", "text2", "score"),
    "classification": ("text", "label"),
    "clustering": ("text", "label"),
    "pair_classification": ("text1", "text2", "label"),
}


def is_local_reference(dataset: str) -> bool:
    """Whether ``dataset:`` names local data (a path or glob) rather than a hub id. Touches no network."""
    if dataset.startswith(("/", "./", "../", "~")) or any(c in dataset for c in "*?["):
        return True
    if Path(dataset).suffix.lower() in DATA_FILE_BUILDERS:
        return True
    return Path(dataset).exists()


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (Steele et al. 2014) on uint64 arrays; wraps modulo 2**64."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def holdout_mask(indices: np.ndarray, fraction: float, seed: int = HOLDOUT_SEED) -> np.ndarray:
    """``True`` where row ``indices[j]`` belongs to the dev hold-out: ``u(i) < fraction``, ``u`` in [0, 1)."""
    h = splitmix64(np.asarray(indices, dtype=np.uint64) ^ np.uint64(seed))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53 < fraction


@dataclass(frozen=True)
class DatasetSplit:
    """One split of a dataset as a source of typed rows of ``kind``; hashable, picklable, lazy.

    ``part`` selects the rows of a ``dev_fraction`` hold-out: ``"all"`` (no hold-out), ``"train"``
    (rows outside it) or ``"dev"`` (rows inside it). ``columns`` maps a row field to one column
    (or, for retrieval ``negatives``, several). ``max_rows`` caps the rows read (dev sets).
    """

    dataset: str
    kind: str
    split: str = "train"
    subset: str | None = None
    columns: tuple[tuple[str, tuple[str, ...]], ...] = ()
    part: str = "all"
    dev_fraction: float = 0.0
    score_scale: float | None = None
    streaming: bool = True
    max_rows: int | None = None

    def __str__(self) -> str:
        s = f"dataset {self.dataset!r}"
        if self.subset:
            s += f" (subset {self.subset!r})"
        s += f" split {self.split!r}"
        if self.part != "all":
            s += f" ({self.part} part of a {self.dev_fraction:g} hold-out)"
        return s

    # ------------------------------------------------------------------ opening

    @property
    def local(self) -> bool:
        return is_local_reference(self.dataset)

    def open(self) -> Any:
        """The ``datasets.Dataset`` (memory-mapped) or ``IterableDataset`` (streamed) of this split."""
        return _open(self.dataset, self.subset, self.split, self.streaming)

    def num_rows(self) -> int | None:
        """Rows of this split (after the hold-out), or None where a streamed split does not say."""
        ds = self.open()
        n = _known_rows(ds, self.split)
        if n is None and self.local:
            n = _parquet_rows(self.dataset, self.subset, self.split)
        if n is None:
            return None
        if self.part != "all":
            inside = int(holdout_mask(np.arange(n), self.dev_fraction).sum())
            n = inside if self.part == "dev" else n - inside
        return n if self.max_rows is None else min(n, self.max_rows)

    # ------------------------------------------------------------------ columns

    def resolve_columns(self, ds: Any = None) -> dict[str, tuple[str, ...]]:
        """Field -> column(s) of this split; DataError naming the columns it has and what it needs."""
        ds = ds if ds is not None else self.open()
        have = _column_names(ds)
        mapped = dict(self.columns)
        out: dict[str, tuple[str, ...]] = {}
        problems: list[str] = []
        for field, columns in mapped.items():
            missing = [c for c in columns if c not in have]
            if missing:
                problems.append(f"columns: {field}: no column {missing[0]!r}")
            out[field] = columns
        for field in FIELDS[self.kind]:
            if field in out:
                continue
            if field == "negatives":
                out[field] = negative_columns(have)
                continue
            found = [c for c in CONVENTIONS[self.kind][field] if c in have]
            if len(found) > 1:
                problems.append(
                    f"{field}: ambiguous, both {found[0]!r} and {found[1]!r} are present "
                    f"(choose one with columns: {{{field}: ...}})"
                )
            elif not found:
                names = " or ".join(repr(c) for c in CONVENTIONS[self.kind][field])
                problems.append(f"{field}: no column {names} (map one with columns: {{{field}: ...}})")
            else:
                out[field] = (found[0],)
        if problems:
            needs = ", ".join(
                f"{f}: {'|'.join(CONVENTIONS[self.kind].get(f, ('negative', 'negative_1..n', 'negatives')))}"
                for f in FIELDS[self.kind]
            )
            raise DataError(
                f"{self}: {'; '.join(problems)}. It has columns {have}; a {self.kind} task needs {needs}"
            )
        return out

    # ------------------------------------------------------------------ rows

    def iter_rows(self, kind: Any = None) -> Iterator[Row]:
        """Stream the validated rows of this split (in the split's order) as :mod:`mixopt.data` rows.

        A bad row raises :class:`DataError` naming the split, the row (1-based, in the split's
        order) and the user's column; a file the reader cannot parse names ``file:line`` where it can.
        """
        try:
            with _quiet_logs():
                ds = self.open()
                cols = self.resolve_columns(ds)
                names = _label_names(ds, cols.get("label", (None,))[0])
                _check_label_type(self, ds, cols)
                scale = self._scale(ds, cols) if self.kind == "sts" else 1.0
        except DataError:
            raise
        except Exception as e:  # pyarrow / datasets parse errors: one line, not their traceback
            raise self._read_error(e) from None
        called = {f: ", ".join(cs) for f, cs in cols.items() if cs}
        wanted = sorted({c for cs in cols.values() for c in cs})
        index = 0
        produced = 0
        for batch in self._batches(ds.select_columns(wanted)):
            n = len(batch[wanted[0]])
            keep = np.ones(n, dtype=bool)
            if self.part != "all":
                inside = holdout_mask(np.arange(index, index + n), self.dev_fraction)
                keep = inside if self.part == "dev" else ~inside
            for j in np.flatnonzero(keep):
                where = f"{self}: row {index + int(j) + 1}"
                try:
                    obj = self._record(batch, int(j), cols, names, scale)
                    row = parse_row(obj, self.kind, called)
                except ValueError as e:
                    raise DataError(f"{where}: {e}") from None
                yield row
                produced += 1
                if self.max_rows is not None and produced >= self.max_rows:
                    return
            index += n

    def _batches(self, ds: Any) -> Iterator[Mapping[str, list]]:
        """The split's batches; a reader's error (a cut-off JSON line, a corrupt file) as one DataError."""
        it = iter(ds.iter(batch_size=BATCH_ROWS))
        while True:
            try:
                with _quiet_logs():
                    batch = next(it)
            except StopIteration:
                return
            except Exception as e:
                raise self._read_error(e) from None
            yield batch

    def _read_error(self, e: BaseException) -> DataError:
        """One line for a reader's failure: ``file:line`` for a bad line of local JSON Lines files."""
        if self.local:
            for f in sorted(glob.glob(str(Path(self.dataset).expanduser()))):
                if Path(f).suffix.lower() == ".jsonl":
                    try:
                        scan_jsonl(Path(f))
                    except DataError as bad:
                        return DataError(f"{self}: {bad}")
        return DataError(
            f"{self}: cannot read it: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        )

    def _record(
        self,
        batch: Mapping[str, list],
        j: int,
        cols: dict[str, tuple[str, ...]],
        names: Sequence[str] | None,
        scale: float,
    ) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for field, columns in cols.items():
            if field == "negatives":
                negatives: list[Any] = []
                for c in columns:
                    v = batch[c][j]
                    if isinstance(v, list):
                        negatives.extend(v)
                    elif v is not None:
                        negatives.append(v)
                obj[field] = negatives
                continue
            v = batch[columns[0]][j]
            if v is None:
                continue
            if field == "label":
                v = _label_value(self, v, names, columns[0])
            elif field == "score" and isinstance(v, (int, float)) and not isinstance(v, bool):
                v = v / scale
            obj[field] = v
        return obj

    def _scale(self, ds: Any, cols: dict[str, tuple[str, ...]]) -> float:
        if self.score_scale is not None:
            return float(self.score_scale)
        return _auto_scale(self.dataset, self.subset, self.split, self.streaming, cols["score"][0])


# ---------------------------------------------------------------------- helpers


def _column_names(ds: Any) -> list[str]:
    names = ds.column_names
    if names is None:  # a streamed split without features: peek at the first row
        first = next(iter(ds.take(1)), None)
        names = list(first) if first else []
    return list(names)


def _known_rows(ds: Any, split: str) -> int | None:
    try:
        return len(ds)
    except TypeError:
        pass
    info = getattr(ds, "info", None)
    splits = getattr(info, "splits", None) or {}
    s = splits.get(split) if hasattr(splits, "get") else None
    n = getattr(s, "num_examples", None)
    return int(n) if n else None


def _parquet_rows(dataset: str, subset: str | None, split: str) -> int | None:
    """Rows of a split's local Parquet files, from their footers (no data read); None for other files.

    ``dataset`` is the files (a path or a glob), or a folder whose files ``datasets`` assigns to
    splits by their names (``train-*.parquet``, ``data/validation-*``...): its own resolution of the
    folder names the split's files.
    """
    import pyarrow.parquet as pq

    path = Path(dataset).expanduser()
    if path.is_dir():
        import datasets

        try:
            with _quiet_logs():
                builder = datasets.load_dataset_builder(str(path), subset)
            files = list((builder.config.data_files or {}).get(split) or [])
        except Exception:  # not a folder of data files datasets can read: the count stays unknown
            return None
    else:
        files = sorted(glob.glob(str(path)))
    if not files or any(Path(str(f)).suffix.lower() != ".parquet" for f in files):
        return None
    return sum(int(pq.ParquetFile(str(f)).metadata.num_rows) for f in files)


def _label_names(ds: Any, column: str | None) -> list[str] | None:
    import datasets

    features = getattr(ds, "features", None)
    if column is None or not features or column not in features:
        return None
    f = features[column]
    return list(f.names) if isinstance(f, datasets.ClassLabel) else None


def _check_label_type(split: DatasetSplit, ds: Any, cols: dict[str, tuple[str, ...]]) -> None:
    """A float label column is refused before any row is read (its values would be unique classes)."""
    import datasets

    features = getattr(ds, "features", None)
    column = cols.get("label", (None,))[0]
    if column is None or not features or column not in features:
        return
    f = features[column]
    if isinstance(f, datasets.ClassLabel):
        return
    dtype = getattr(f, "dtype", None)
    ok = (
        ("string", "large_string", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
        if split.kind != "pair_classification"
        else ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
    )
    if dtype not in ok:
        need = (
            "0/1 or a bool" if split.kind == "pair_classification" else "a string, an integer or a ClassLabel"
        )
        raise DataError(
            f"{split}: column {column!r} holds {dtype or type(f).__name__} values; "
            f"a {split.kind} label must be {need}"
        )


def _label_value(split: DatasetSplit, v: Any, names: Sequence[str] | None, column: str) -> Any:
    if split.kind == "pair_classification":
        if isinstance(v, bool) or v in (0, 1):
            return int(v)
        raise ValueError(f"column {column!r}: a pair_classification label must be 0 or 1, got {v!r}")
    if names is not None and isinstance(v, int) and not isinstance(v, bool):
        if not 0 <= v < len(names):
            raise ValueError(f"column {column!r}: label {v} is not a class of {names}")
        return names[v]
    return v


def _classify_error(reference: str, e: BaseException) -> str:
    """One line for a failed load: offline / not found / anything else."""
    text = f"{type(e).__name__}: {e}".splitlines()[0]
    low = text.lower()
    if (
        isinstance(e, ConnectionError)
        or "offline" in low
        or "couldn't reach" in low
        or "connection" in low
        or "resolve" in low
    ):
        return (
            f"cannot reach the Hugging Face Hub for {reference!r} (offline: HF_HUB_OFFLINE is set or there "
            "is no network). Download it where there is network "
            "(datasets.load_dataset(...).save_to_disk(DIR)) and give DIR as `dataset:`"
        )
    if type(e).__name__ in ("DatasetNotFoundError", "FileNotFoundError", "RepositoryNotFoundError"):
        return f"no dataset {reference!r} (not on the Hub and not a local path): {text}"
    return f"cannot load {reference!r}: {text}"


def _saved_empty(path: Path, split: str) -> bool:
    """Whether a ``save_to_disk`` directory (or its ``split``) holds no Arrow shard, i.e. no rows."""
    state = path / "state.json"
    if not state.exists() and (path / "dataset_dict.json").exists():
        state = path / split / "state.json"
    if not state.exists():
        return False
    try:
        return not json.loads(state.read_text()).get("_data_files", [None])
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """datasets logs a failed load or parse, huggingface_hub each retry, before raising: the raised
    error becomes our one line, so their logs are silenced meanwhile."""
    import datasets  # noqa: F401  (its import sets its loggers' levels: import it first)

    logs = [logging.getLogger(name) for name in ("datasets", "huggingface_hub")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


@functools.lru_cache(maxsize=32)
def _open(dataset: str, subset: str | None, split: str, streaming: bool) -> Any:
    import datasets

    datasets.disable_progress_bars()
    with _quiet_logs():
        return _load(dataset, subset, split, streaming)


def _load(dataset: str, subset: str | None, split: str, streaming: bool) -> Any:
    import datasets

    where = f"dataset {dataset!r}" + (f" (subset {subset!r})" if subset else "") + f" split {split!r}"
    path = Path(dataset).expanduser()
    try:
        if path.is_dir() and any((path / m).exists() for m in _SAVE_TO_DISK_MARKERS):
            if _saved_empty(path, split):
                # datasets cannot load a saved split of zero rows (no Arrow shard): say what it is.
                raise DataError(f"{where}: has no rows (the saved dataset is empty)")
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DataError(f"{where}: no split {split!r}; the dataset has splits {sorted(loaded)}")
                return loaded[split]
            if split != "train":
                raise DataError(
                    f"{where}: the directory holds a single saved Dataset, which has no split {split!r} "
                    "(use split: train and dev_fraction, or save a DatasetDict)"
                )
            return loaded
        if is_local_reference(dataset) and not path.is_dir():
            files = sorted(glob.glob(str(path))) if any(c in dataset for c in "*?[") else [str(path)]
            files = [f for f in files if Path(f).is_file()]
            if not files:
                raise DataError(f"{where}: no such file or directory")
            suffixes = {Path(f).suffix.lower() for f in files}
            builders = {DATA_FILE_BUILDERS.get(s) for s in suffixes}
            if None in builders or len(builders) != 1:
                raise DataError(
                    f"{where}: data files must all be one of {sorted(DATA_FILE_BUILDERS)}, got {sorted(suffixes)}"
                )
            if split != "train":
                raise DataError(
                    f"{where}: data files form a single 'train' split (use dev_fraction for dev rows)"
                )
            return datasets.load_dataset(builders.pop(), data_files=files, split="train", streaming=streaming)
        return datasets.load_dataset(
            str(path) if path.is_dir() else dataset, subset, split=split, streaming=streaming
        )
    except DataError:
        raise
    except Exception as e:  # datasets/huggingface_hub raise many types; the user needs one line
        if isinstance(e, ValueError) and "split" in str(e).lower() and "unknown" in str(e).lower():
            raise DataError(f"{where}: {str(e).splitlines()[0]}") from None
        raise DataError(f"{where}: {_classify_error(dataset, e)}") from None


@functools.lru_cache(maxsize=32)
def _auto_scale(dataset: str, subset: str | None, split: str, streaming: bool, column: str) -> float:
    """5 if the split's largest score exceeds 1 (a 0–5 scale, as STS-B), else 1 (sentence-transformers' rule).

    An Arrow split is scanned whole (a memory-mapped column max); a streamed one on its first
    ``SCALE_SCAN_ROWS`` rows.
    """
    ds = _open(dataset, subset, split, streaming)
    top = -math.inf
    seen = 0
    for batch in ds.select_columns([column]).iter(batch_size=BATCH_ROWS):
        values = [v for v in batch[column] if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if values:
            top = max(top, max(values))
        seen += len(batch[column])
        if not hasattr(ds, "__len__") and seen >= SCALE_SCAN_ROWS:
            break
    return 5.0 if top > 1.0 else 1.0
