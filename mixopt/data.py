"""Task data: one folder per task with ``train`` and ``dev`` splits, JSON Lines or Parquet.

Row kinds (one JSON object per line):

- retrieval / pairs: ``{"query": str, "positive": str, "negatives": [str, ...]}`` (negatives optional)
- STS: ``{"text1": str, "text2": str, "score": number}``
- classification and clustering: ``{"text": str, "label": str | int}``
- pair classification: ``{"text1": str, "text2": str, "label": 0 | 1}`` (1: the texts match)

A row may name its fields as sentence-transformers' datasets do (``anchor``/``positive``/``negative``,
``sentence1``/``sentence2``/``score`` or ``label``, ``sentence``/``label``: :data:`CONVENTIONS`),
or as a task's ``columns:`` maps them (:class:`MappedFile`).

A task may instead read a Hugging Face dataset (:mod:`mixopt.datasets`); :func:`iter_rows` takes
either a file path or such a *row source* (any object with an ``iter_rows(kind)`` method) and
yields the same typed rows.

Training rows: clustering rows train as classification rows (same-label texts are pairs), and
pair-classification rows with label 1 train as retrieval pairs ``(text1, text2)`` (label-0 rows are
not used for training): :class:`TrainingRows` applies that view, :data:`TRAINING_KIND` names it.

Any row may carry teacher embeddings for distillation under ``"teacher"``: a mapping from a text
field of the row to its embedding (``{"query": [...], "positive": [...], "negatives": [[...], ...]}``
for retrieval; ``text1``/``text2`` for STS; ``text`` for classification). All teacher vectors in a
file must have one length.

Readers stream: a JSONL file is read line by line and a Parquet file batch by batch, so a 10 GB file
is never loaded whole. Every row is validated; a bad row raises :class:`DataError` naming
``file:line`` (``file:row N`` for Parquet) and what is wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

# A teacher embedding: float32 ``[D]``.
Vector = np.ndarray


class DataError(ValueError):
    """A bad data file or row; the message starts with ``file:line:``."""


@dataclass(frozen=True)
class RetrievalRow:
    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    teacher: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class STSRow:
    text1: str
    text2: str
    score: float
    teacher: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ClassificationRow:
    text: str
    label: str
    teacher: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PairClassificationRow:
    text1: str
    text2: str
    label: int  # 1: the texts are a matching pair (duplicate, paraphrase), 0: they are not
    teacher: Mapping[str, Any] | None = None


Row = Union[RetrievalRow, STSRow, ClassificationRow, PairClassificationRow]

# Kind of the rows the trainer sees for a task of each kind (see the module docstring).
TRAINING_KIND = {
    "retrieval": "retrieval",
    "sts": "sts",
    "classification": "classification",
    "clustering": "classification",
    "pair_classification": "retrieval",
}

# kind -> field -> the column names it is read from without a ``columns:`` mapping, in files and
# datasets alike: sentence-transformers' names first, then mixopt's own.
CONVENTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "retrieval": {"query": ("anchor", "query"), "positive": ("positive",)},
    "sts": {"text1": ("sentence1", "text1"), "text2": ("sentence2", "text2"), "score": ("score",)},
    "classification": {"text": ("text", "sentence"), "label": ("label",)},
    "clustering": {"text": ("text", "sentence"), "label": ("label",)},
    "pair_classification": {
        "text1": ("sentence1", "text1"),
        "text2": ("sentence2", "text2"),
        "label": ("label",),
    },
}

_FIELDS: dict[str, dict[str, str]] = {
    # field -> "text" | "texts" | "number" | "label" | "binary"
    "retrieval": {"query": "text", "positive": "text", "negatives": "texts"},
    "sts": {"text1": "text", "text2": "text", "score": "number"},
    "classification": {"text": "text", "label": "label"},
    "clustering": {"text": "text", "label": "label"},
    "pair_classification": {"text1": "text", "text2": "text", "label": "binary"},
}
_REQUIRED = {
    "retrieval": ("query", "positive"),
    "sts": ("text1", "text2", "score"),
    "classification": ("text", "label"),
    "clustering": ("text", "label"),
    "pair_classification": ("text1", "text2", "label"),
}


def _kind_name(kind: Any) -> str:
    name = getattr(kind, "value", kind)
    if name not in _FIELDS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {sorted(_FIELDS)}")
    return name


def _vector(value: Any, what: str) -> Vector:
    """A teacher embedding as a float32 array, checked in one vectorised pass.

    A 3072-dim vector as a tuple of Python floats costs ~100 KB and a Python loop per row; as
    float32 12 KB and one C conversion.
    """
    if not isinstance(value, list) or not value:
        raise ValueError(f"{what} must be a non-empty list of numbers")
    array = np.asarray(value)
    if array.ndim != 1 or array.dtype.kind not in "iuf":  # strings, None, nested lists, all-bool
        bad = next((x for x in value if isinstance(x, bool) or not isinstance(x, (int, float))), value[0])
        raise ValueError(f"{what} must contain only finite numbers, found {bad!r}")
    with np.errstate(over="ignore"):  # overflow becomes inf, rejected below
        array = array.astype(np.float32)
    finite = np.isfinite(array)  # also catches values beyond float32's range
    if not finite.all():
        raise ValueError(
            f"{what} must contain only finite (float32) numbers, found {value[int(np.argmin(finite))]!r}"
        )
    return array


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{what} is empty")
    return value


def parse_row(obj: Any, kind: Any, columns: Mapping[str, str] | None = None) -> Row:
    """Validate one decoded row of a task of ``kind``; raise ValueError saying what is wrong.

    ``columns`` maps a row field to the user's column it was read from (a dataset task's
    ``columns:``), so a message names the column the user can find in their data.
    """
    kind = _kind_name(kind)

    def called(field: str) -> str:
        name, _, item = field.partition("[")  # "negatives[2]": the third of the negatives
        if columns and name in columns:
            where = f"column {columns[name]!r}" + (f" ({name})" if columns[name] != name else "")
            return where + (f" item [{item}" if item else "")
        return f"field {field!r}"

    if not isinstance(obj, dict):
        raise ValueError(f"a row must be a JSON object, got {type(obj).__name__}")
    fields = _FIELDS[kind]
    unknown = sorted(set(obj) - set(fields) - {"teacher"})
    if unknown:
        raise ValueError(
            f"unknown field(s) {unknown} for a {kind} row; expected {sorted(fields)} (+ 'teacher')"
        )
    missing = [f for f in _REQUIRED[kind] if f not in obj or obj[f] is None]
    if missing and columns:
        raise ValueError(f"{', '.join(called(f) for f in missing)}: missing or null in a {kind} row")
    if missing:
        raise ValueError(f"missing field(s) {missing} for a {kind} row")

    teacher = obj.get("teacher")
    if teacher is not None:
        if not isinstance(teacher, dict):
            raise ValueError("field 'teacher' must map text fields to embeddings")
        text_fields = [f for f, t in fields.items() if t in ("text", "texts")]
        for f, v in teacher.items():
            if f not in text_fields:
                raise ValueError(f"teacher embedding for {f!r}, which is not a text field of a {kind} row")
            if fields[f] == "texts":
                if not isinstance(v, list):
                    raise ValueError(f"teacher[{f!r}] must be a list of embeddings")
                teacher[f] = tuple(_vector(e, f"teacher[{f!r}][{i}]") for i, e in enumerate(v))
                if len(teacher[f]) != len(obj.get(f) or []):
                    raise ValueError(
                        f"teacher[{f!r}] has {len(teacher[f])} embeddings for {len(obj.get(f) or [])} texts"
                    )
            else:
                teacher[f] = _vector(v, f"teacher[{f!r}]")
        dims = {len(v) for f, v in teacher.items() if fields[f] == "text"}
        dims |= {len(e) for f, v in teacher.items() if fields[f] == "texts" for e in v}
        if len(dims) > 1:
            raise ValueError(f"teacher embeddings have different lengths {sorted(dims)}")

    if kind == "retrieval":
        negatives = obj.get("negatives") or []
        if not isinstance(negatives, list):
            raise ValueError(
                f"{called('negatives')} must be a list of strings, got {type(negatives).__name__}"
            )
        return RetrievalRow(
            query=_text(obj["query"], called("query")),
            positive=_text(obj["positive"], called("positive")),
            negatives=tuple(_text(n, called(f"negatives[{i}]")) for i, n in enumerate(negatives)),
            teacher=teacher,
        )
    if kind == "sts":
        score = obj["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError(f"{called('score')} must be a finite number, got {score!r}")
        return STSRow(
            _text(obj["text1"], called("text1")), _text(obj["text2"], called("text2")), float(score), teacher
        )
    if kind == "pair_classification":
        label = obj["label"]
        if not (isinstance(label, bool) or (isinstance(label, int) and label in (0, 1))):
            raise ValueError(f"{called('label')} must be 0 or 1 (or a bool), got {label!r}")
        return PairClassificationRow(
            _text(obj["text1"], called("text1")), _text(obj["text2"], called("text2")), int(label), teacher
        )
    label = obj["label"]
    if (
        isinstance(label, bool)
        or not isinstance(label, (str, int))
        or (isinstance(label, str) and not label.strip())
    ):
        raise ValueError(f"{called('label')} must be a non-empty string or an integer, got {label!r}")
    return ClassificationRow(_text(obj["text"], called("text")), str(label), teacher)


def _iter_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                ) from None
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from None


def scan_jsonl(path: Path) -> int:
    """Decode every line of a JSON Lines file (no row checks); DataError at the first bad line. Returns the rows."""
    return sum(1 for _ in _iter_jsonl(path))


def _iter_parquet(path: Path, batch_size: int = 4096) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq  # only Parquet tasks need it; every trainer and check imports this module

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a readable Parquet file: {e}") from None
    row = 0
    for batch in pf.iter_batches(batch_size=batch_size):
        for obj in batch.to_pylist():
            row += 1
            # Parquet fills absent optional columns with nulls: drop them so validation sees "missing".
            yield f"{path}:row {row}", {k: v for k, v in obj.items() if v is not None}


def negative_columns(names: Iterable[str]) -> tuple[str, ...]:
    """The columns a retrieval row's negatives are read from: ``negative``, ``negatives`` (a list),
    ``negative_1`` … ``negative_n`` (in number order)."""
    names = list(names)
    numbered = sorted(
        (c for c in names if c.startswith("negative_") and c[len("negative_") :].isdigit()),
        key=lambda c: int(c[len("negative_") :]),
    )
    return tuple([c for c in ("negative", "negatives") if c in names] + numbered)


def resolve_columns(
    names: Iterable[str], kind: str, mapped: Mapping[str, tuple[str, ...]] = {}
) -> dict[str, tuple[str, ...]]:
    """Field -> the column(s) of ``names`` it is read from: the ``columns:`` mapping, else the one
    name of :data:`CONVENTIONS` present (retrieval ``negatives``: :func:`negative_columns`).

    A field none of whose names is present is left out (the row check says it is missing); a field
    two of whose names are present raises ValueError (ambiguous).
    """
    names = list(names)
    out: dict[str, tuple[str, ...]] = {}
    for field in _FIELDS[kind]:
        if field in mapped:
            out[field] = tuple(mapped[field])
        elif field == "negatives":
            found = negative_columns(names)
            if found:
                out[field] = found
        else:
            found = [c for c in CONVENTIONS[kind][field] if c in names]
            if len(found) > 1:
                raise ValueError(
                    f"{field}: ambiguous, both {found[0]!r} and {found[1]!r} are present "
                    f"(choose one with columns: {{{field}: ...}})"
                )
            if found:
                out[field] = (found[0],)
    return out


def _renamed(
    obj: dict[str, Any], kind: str, cols: Mapping[str, tuple[str, ...]]
) -> tuple[dict[str, Any], dict[str, str] | None]:
    """A file row with its columns as the fields they are read from, and field -> column for the
    messages (None when every column is the field's own name)."""
    used = {c for cs in cols.values() for c in cs}
    unknown = sorted(set(obj) - used - {"teacher"})
    if unknown:
        names = ", ".join(
            f"{f}: {'|'.join(CONVENTIONS[kind].get(f, ('negative', 'negatives', 'negative_1..n')))}"
            for f in _FIELDS[kind]
        )
        raise ValueError(
            f"unknown field(s) {unknown} for a {kind} row; a {kind} row has {names} (+ 'teacher'), "
            "or map a column with the task's columns: {field: column}"
        )
    out: dict[str, Any] = {}
    for field, columns in cols.items():
        if field == "negatives":
            negatives: list[Any] = []
            for c in columns:
                v = obj.get(c)
                if c == "negatives" and v is not None and not isinstance(v, list):
                    negatives = v  # not a list: the row check names it
                    break
                negatives.extend(v if isinstance(v, list) else [] if v is None else [v])
            out[field] = negatives
        elif columns[0] in obj:
            out[field] = obj[columns[0]]
    teacher = obj.get("teacher")
    if isinstance(teacher, dict):  # keyed by the file's column names or by the fields
        back = {cs[0]: f for f, cs in cols.items() if f != "negatives"}
        out["teacher"] = {back.get(k, k): v for k, v in teacher.items()}
    elif teacher is not None:
        out["teacher"] = teacher
    renamed = any(cs != (f,) for f, cs in cols.items())
    return out, ({f: ", ".join(cs) for f, cs in cols.items()} if renamed else None)


def iter_rows(path: Any, kind: Any, columns: Mapping[str, tuple[str, ...]] = {}) -> Iterator[Row]:
    """Stream validated rows of a ``.jsonl`` or ``.parquet`` file, or of a row source, of a task of ``kind``.

    A file's columns are read by name (:data:`CONVENTIONS`: sentence-transformers' or mixopt's),
    or as ``columns`` maps them (field -> column(s)). A row source (a
    :class:`mixopt.datasets.DatasetSplit`, a :class:`TrainingRows`, a :class:`MappedFile`) is
    anything with an ``iter_rows(kind)`` method; it validates its own rows.
    """
    if hasattr(path, "iter_rows"):
        yield from path.iter_rows(kind)
        return
    kind = _kind_name(kind)
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file")
    if path.suffix == ".parquet":
        source = _iter_parquet(path)
    elif path.suffix in (".jsonl", ".json"):
        source = _iter_jsonl(path)
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl or .parquet")
    teacher_dim: int | None = None
    resolved: dict[tuple[str, ...], dict[str, tuple[str, ...]]] = {}  # a row's column names -> fields
    for where, obj in source:
        try:
            if not isinstance(obj, dict):
                raise ValueError(f"a row must be a JSON object, got {type(obj).__name__}")
            keys = tuple(sorted(k for k in obj if k != "teacher"))
            if keys not in resolved:
                resolved[keys] = resolve_columns(keys, kind, columns)
            fields, called = _renamed(obj, kind, resolved[keys])
            row = parse_row(fields, kind, called)
        except ValueError as e:
            raise DataError(f"{where}: {e}") from None
        if row.teacher:
            dim = _teacher_dim(row.teacher)
            if teacher_dim is None:
                teacher_dim = dim
            elif dim != teacher_dim:
                raise DataError(
                    f"{where}: teacher embeddings have length {dim}, earlier rows had {teacher_dim}"
                )
        yield row


def _teacher_dim(teacher: Mapping[str, Any]) -> int:
    for v in teacher.values():
        if isinstance(v, tuple):  # a list field's vectors
            if v:
                return len(v[0])
            continue
        return len(v)
    return 0


@dataclass(frozen=True)
class MappedFile:
    """A task's data file read with its ``columns:`` mapping (field -> column(s)); a row source.

    Stands where the file's path would (``str``, ``os.fspath``), so listings and messages name the file.
    """

    path: Path
    columns: tuple[tuple[str, tuple[str, ...]], ...]

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    def iter_rows(self, kind: Any) -> Iterator[Row]:
        return iter_rows(self.path, kind, dict(self.columns))


@dataclass(frozen=True)
class TrainingRows:
    """The training view of a task's train rows: rows of ``TRAINING_KIND[kind]`` (module docstring).

    ``source`` is a file path or a row source; ``kind`` the task's kind.
    """

    source: Any
    kind: str

    def __str__(self) -> str:
        return str(self.source)

    def iter_rows(self, kind: Any = None) -> Iterator[Row]:
        for row in iter_rows(self.source, self.kind):
            if isinstance(row, PairClassificationRow):
                if row.label != 1:
                    continue
                teacher = row.teacher
                if teacher:
                    teacher = {{"text1": "query", "text2": "positive"}[k]: v for k, v in teacher.items()}
                yield RetrievalRow(row.text1, row.text2, (), teacher)
            else:
                yield row


def training_rows(source: Any, kind: Any) -> Any:
    """The source the trainer streams for a task of ``kind``: ``source`` itself or a :class:`TrainingRows` view."""
    kind = _kind_name(kind)
    return source if TRAINING_KIND[kind] == kind else TrainingRows(source, kind)
