"""The data check reads a user's local dataset files whole, names their file, row and column, and
prints row counts that are true (issue 29, case 9)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from typer.testing import CliRunner

from mixopt.cli import app
from mixopt.config import load_experiment
from mixopt.synth import SynthSpec, synthesize

N = 400
MASK64 = (1 << 64) - 1


def _holdout_reference(i: int, fraction: float, seed: int = 0x6D69786F7074) -> bool:
    """The documented dev hold-out rule (splitmix64 of ``i ^ seed`` mapped to [0, 1)), with Python ints."""
    x = ((i ^ seed) + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    x ^= x >> 31
    return (x >> 11) * 2.0**-53 < fraction


def _qa_rows(n: int = N) -> dict[str, list]:
    return {
        "question": [f"which word is number {i}" for i in range(n)],
        "accepted_answer": [f"the word number {i} is w{i}" for i in range(n)],
    }


def _experiment(tmp_path: Path, dataset: Path, **task) -> Path:
    exp = {
        "name": "own_data",
        "tasks": [
            {
                "name": "qa",
                "kind": "retrieval",
                "dataset": str(dataset),
                "dev_fraction": 0.25,
                "columns": {"query": "question", "positive": "accepted_answer"},
                **task,
            }
        ],
        # One task: a searched hyperparameter gives the sweep something to optimise.
        "search": {"hyperparameters": {"rate": {"type": "float", "low": 1.0, "high": 20.0}}},
        "trainer": {"target": "trainers.analytic:train", "steps": 10},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def _validate_data(path: Path) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["validate", str(path), "--data"])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stderr


def test_null_at_row_300_of_a_local_parquet_dataset_is_caught_naming_the_users_column(
    tmp_path: Path,
) -> None:
    rows = _qa_rows()
    rows["accepted_answer"][300] = None  # 0-based index 300: the file's 301st row
    data = tmp_path / "qa.parquet"
    pq.write_table(pa.table(rows), data)
    code, err = _validate_data(_experiment(tmp_path, data))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(data) in lines[0] and "row 301" in lines[0]
    assert "column 'accepted_answer'" in lines[0] and lines[0].startswith("task qa: ")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_dev_row_count_printed_is_the_true_count(tmp_path: Path) -> None:
    data = tmp_path / "qa.parquet"
    pq.write_table(pa.table(_qa_rows()), data)
    code, err = _validate_data(_experiment(tmp_path, data))
    assert code == 0, err
    dev = sum(_holdout_reference(i, 0.25) for i in range(N))
    assert dev > 50  # more than the head the old check stopped at
    assert f"dev score rests on qa {dev} rows" in err


def test_cut_off_line_in_a_dataset_jsonl_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "qa.jsonl"
    rows = _qa_rows()
    lines = [json.dumps({k: v[i] for k, v in rows.items()}) for i in range(N)]
    lines[250] = lines[250][:20]  # a write cut off mid-line: line 251
    data.write_text("\n".join(lines) + "\n")
    code, err = _validate_data(_experiment(tmp_path, data))
    assert code == 2, err
    assert err.strip().splitlines() == [err.strip()], err
    assert f"{data}:251: invalid JSON" in err and "Traceback" not in err


def test_head_mode_says_its_counts_are_partial(tmp_path: Path) -> None:
    from mixopt.sweep.checks import HEAD_ROWS, check_data

    data = tmp_path / "data"
    synthesize(data, n_tasks=1, seed=0, spec=SynthSpec(n_train=64, n_dev=80), with_model=False)
    text = yaml.safe_dump(
        {
            "name": "head",
            "tasks": [{"name": "retrieval_0", "kind": "retrieval", "path": str(data / "retrieval_0")}],
            "trainer": {"target": "trainers.analytic:train"},
            "storage": str(tmp_path / "runs"),
        }
    )
    (tmp_path / "exp.yaml").write_text(text)
    exp = load_experiment(tmp_path / "exp.yaml")
    dev_lines = sum(
        1 for line in (data / "retrieval_0" / "dev.jsonl").read_text().splitlines() if line.strip()
    )
    assert dev_lines == 80
    assert (
        check_data(exp, mode="full", use_cache=False).dev_rows_line()
        == "dev score rests on retrieval_0 80 rows"
    )
    head = check_data(exp, mode="head", use_cache=False).dev_rows_line()
    assert head.startswith(f"dev score rests on retrieval_0 {HEAD_ROWS}+ rows") and "first 50 rows" in head


def test_sweep_refuses_a_bad_row_past_the_head_of_a_local_dataset(tmp_path: Path) -> None:
    """The sweep's own check, before any trial: no MLflow run, no checkpoint, one line."""
    rows = _qa_rows()
    rows["accepted_answer"][300] = None
    data = tmp_path / "qa.parquet"
    pq.write_table(pa.table(rows), data)
    r = CliRunner().invoke(app, ["sweep", str(_experiment(tmp_path, data))])
    assert r.exit_code == 2, r.output
    assert "row 301" in r.stderr and "column 'accepted_answer'" in r.stderr
    assert not (tmp_path / "mlflow.db").exists()
