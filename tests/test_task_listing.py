"""``mixopt tasks`` gives the row counts of a dataset task whose data is a local folder of Parquet files,
as the rows the task reads (counted by streaming them)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from typer.testing import CliRunner

from mixopt.cli import app
from mixopt.config import load_experiment
from mixopt.data import iter_rows


def sts_table(n: int, offset: int) -> pa.Table:
    return pa.table(
        {
            "sentence1": [f"a man plays guitar {offset + i}" for i in range(n)],
            "sentence2": [f"someone plays music {offset + i}" for i in range(n)],
            "score": [float((offset + i) * 7 % 26) / 5.0 for i in range(n)],
        }
    )


def test_row_counts_of_local_parquet_folders(tmp_path: Path) -> None:
    split = tmp_path / "by_split" / "data"
    split.mkdir(parents=True)
    pq.write_table(sts_table(40, 0), split / "train-00000-of-00002.parquet")
    pq.write_table(sts_table(25, 40), split / "train-00001-of-00002.parquet")
    pq.write_table(sts_table(12, 100), split / "validation-00000-of-00001.parquet")
    plain = tmp_path / "plain"
    plain.mkdir()
    pq.write_table(sts_table(30, 0), plain / "part-a.parquet")
    pq.write_table(sts_table(31, 30), plain / "part-b.parquet")
    exp = {
        "name": "listing",
        "tasks": [
            {"name": "s", "kind": "sts", "dataset": str(tmp_path / "by_split"), "dev_split": "validation"},
            {"name": "p", "kind": "sts", "dataset": str(plain), "dev_fraction": 0.25},
        ],
        "trainer": {"target": "trainers.analytic:train", "steps": 10},
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    r = CliRunner().invoke(app, ["tasks", str(tmp_path / "exp.yaml")])
    assert r.exit_code == 0, r.output
    assert "rows unknown" not in r.stdout
    config = load_experiment(tmp_path / "exp.yaml")
    for task, expected in (("s", {"train": 65, "dev": 12}), ("p", None)):
        t = config.task(task)
        streamed = {
            "train": sum(1 for _ in iter_rows(t.train_file, "sts")),
            "dev": sum(1 for _ in iter_rows(t.dev_file, "sts")),
        }
        if expected is not None:
            assert streamed == expected
        assert streamed["train"] + streamed["dev"] == (77 if task == "s" else 61)
        for role, n in streamed.items():
            source = t.train_file if role == "train" else t.dev_file
            assert f"  {role}: {source} — {n} rows" in r.stdout, (task, role, n, r.stdout)
