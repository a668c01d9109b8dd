from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixopt.config import experiment_from_dict
from mixopt.data import ClassificationRow, DataError, RetrievalRow, STSRow, iter_rows
from mixopt.sweep.checks import check_data, file_stats
from mixopt.sweep.common import SweepError


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_good_rows_of_each_kind(tmp_path: Path) -> None:
    r = write_lines(
        tmp_path / "r.jsonl",
        [
            json.dumps({"query": "q1", "positive": "p1", "negatives": ["n1", "n2"]}),
            "",  # blank lines are skipped
            json.dumps({"query": "q2", "positive": "p2"}),
        ],
    )
    assert list(iter_rows(r, "retrieval")) == [
        RetrievalRow("q1", "p1", ("n1", "n2")),
        RetrievalRow("q2", "p2", ()),
    ]
    s = write_lines(tmp_path / "s.jsonl", [json.dumps({"text1": "a", "text2": "b", "score": 3})])
    assert list(iter_rows(s, "sts")) == [STSRow("a", "b", 3.0)]
    c = write_lines(tmp_path / "c.jsonl", [json.dumps({"text": "t", "label": 2})])
    assert list(iter_rows(c, "classification")) == [ClassificationRow("t", "2")]


def test_teacher_embeddings_ride_along(tmp_path: Path) -> None:
    row = {
        "query": "q",
        "positive": "p",
        "negatives": ["n"],
        "teacher": {"query": [1, 0], "positive": [0.5, 0.5], "negatives": [[0, 1]]},
    }
    (got,) = iter_rows(write_lines(tmp_path / "r.jsonl", [json.dumps(row)]), "retrieval")
    assert set(got.teacher) == {"query", "positive", "negatives"}
    for field, want in (("query", [1.0, 0.0]), ("positive", [0.5, 0.5])):
        assert got.teacher[field].dtype == np.float32 and got.teacher[field].tolist() == want
    assert [v.tolist() for v in got.teacher["negatives"]] == [[0.0, 1.0]]


BAD_ROWS = [
    ("retrieval", {"query": "q"}, "missing field(s) ['positive']"),
    ("retrieval", {"query": "q", "positive": 3}, "'positive' must be a string"),
    ("retrieval", {"query": "  ", "positive": "p"}, "'query' is empty"),
    ("retrieval", {"query": "q", "positive": "p", "negatives": "n"}, "'negatives' must be a list"),
    ("retrieval", {"query": "q", "positive": "p", "negatives": [""]}, "'negatives[0]' is empty"),
    ("retrieval", {"query": "q", "positive": "p", "extra": 1}, "unknown field(s) ['extra']"),
    ("sts", {"text1": "a", "text2": "b", "score": "high"}, "'score' must be a finite number"),
    ("sts", {"text1": "a", "text2": "b"}, "missing field(s) ['score']"),
    ("classification", {"text": "t", "label": True}, "'label' must be"),
    ("classification", {"text": "t", "label": 1, "teacher": {"label": [1.0]}}, "not a text field"),
    (
        "retrieval",
        {"query": "q", "positive": "p", "teacher": {"query": [1, 2], "positive": [1]}},
        "different lengths",
    ),
    ("retrieval", {"query": "q", "positive": "p", "teacher": {"query": [1, "x"]}}, "finite numbers"),
    ("retrieval", {"query": "q", "positive": "p", "teacher": {"query": [1, 1e39]}}, "finite (float32)"),
    ("retrieval", {"query": "q", "positive": "p", "teacher": {"query": [[1], [2]]}}, "finite numbers"),
]


@pytest.mark.parametrize("kind,row,message", BAD_ROWS, ids=[m for _, _, m in BAD_ROWS])
def test_bad_row_names_file_and_line(tmp_path: Path, kind: str, row: dict, message: str) -> None:
    good = {
        "retrieval": {"query": "q", "positive": "p"},
        "sts": {"text1": "a", "text2": "b", "score": 1},
        "classification": {"text": "t", "label": "x"},
    }[kind]
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(good), json.dumps(good), json.dumps(row)])
    with pytest.raises(DataError) as info:
        list(iter_rows(path, kind))
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)


def test_bad_json_names_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", ['{"text": "a", "label": "x"}', '{"text": "b", "label": '])
    with pytest.raises(DataError, match=rf"^{path}:2: invalid JSON"):
        list(iter_rows(path, "classification"))


def test_readers_stream(tmp_path: Path) -> None:
    # A bad row far down the file is not reached when only the first rows are consumed: the
    # reader does not load (or validate) the whole file up front.
    lines = [json.dumps({"text": f"t{i}", "label": "x"}) for i in range(1000)] + ["{not json"]
    path = write_lines(tmp_path / "big.jsonl", lines)
    it = iter_rows(path, "classification")
    assert [next(it).text for _ in range(3)] == ["t0", "t1", "t2"]
    with pytest.raises(DataError, match=":1001:"):
        file_stats(path, "classification")


def test_parquet(tmp_path: Path) -> None:
    table = pa.table({"query": ["q1", "q2"], "positive": ["p1", None], "negatives": [["n"], []]})
    pq.write_table(table, tmp_path / "train.parquet")
    with pytest.raises(DataError, match=r"train.parquet:row 2: missing field\(s\) \['positive'\]"):
        list(iter_rows(tmp_path / "train.parquet", "retrieval"))
    pq.write_table(pa.table({"text1": ["a"], "text2": ["b"], "score": [0.5]}), tmp_path / "s.parquet")
    assert list(iter_rows(tmp_path / "s.parquet", "sts")) == [STSRow("a", "b", 0.5)]


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        list(iter_rows(tmp_path / "nope.jsonl", "sts"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert list(iter_rows(empty, "sts")) == [] and file_stats(empty, "sts").rows == 0
    # The data check before any trial refuses a file with no rows, naming it.
    good = write_lines(
        tmp_path / "train.jsonl", [json.dumps({"text1": "a", "text2": "b", "score": s}) for s in (1, 2)]
    )
    exp = experiment_from_dict(
        {
            "name": "empty",
            "tasks": [{"name": "s", "kind": "sts", "train": str(good), "dev": str(empty)}],
            "trainer": {"target": "trainers.analytic:train"},
            "storage": str(tmp_path / "runs"),
        }
    )
    with pytest.raises(SweepError, match=rf"{empty}: the file has no rows"):
        check_data(exp, use_cache=False)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        list(iter_rows(tmp_path / "x.csv", "sts"))
