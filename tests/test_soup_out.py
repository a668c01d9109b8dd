"""Where a soup is written: one soup at a time, and readable by the team.

Two ``mixopt soup`` into one new ``--out`` at once: one soup is written, the other says so.

Two real `mixopt soup` processes are started together on one recorded sweep (real MLflow sqlite
store, checkpoints written by the tiny Gemma3 trainer's saver), both greedy so that each spends
seconds between checking ``--out`` and renaming its soup into place. Exactly one succeeds; the
other exits non-zero with one line and logs no soup run, so no MLflow run names a folder that holds
another's soup. The folder's marker, its checksums (verified with hashlib) and the one soup run agree.

A soup's files and folders get ``0666 & ~umask`` and ``0777 & ~umask``, computed here by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from mixopt.cli import app
from mixopt.synth import SynthSpec, synthesize

REPO = Path(__file__).resolve().parents[1]
TASKS = ["retrieval_0", "sts_1", "classification_2"]


def record_sweep(uri: str, name: str, checkpoints: list[Path], artifacts: Path) -> list[str]:
    """A finished sweep as the sweep records it: a parent run and a trial run per checkpoint."""
    client = MlflowClient(uri)
    eid = client.create_experiment(name, artifact_location=str(artifacts))
    parent = client.create_run(eid, tags={"mixopt.role": "sweep"}).info.run_id
    ids = []
    for i, ckpt in enumerate(checkpoints):
        tags = {
            "mixopt.role": "trial",
            "mlflow.parentRunId": parent,
            "mixopt.trial_id": f"trial-{i:03d}",
            "mixopt.status": "FINISHED",
            "mixopt.checkpoint": str(ckpt),
            "mixopt.proposal": json.dumps({t: round((i + 1 + k) / 10, 2) for k, t in enumerate(TASKS)}),
        }
        run = client.create_run(eid, run_name=f"trial-{i:03d}", tags=tags).info.run_id
        client.log_metric(run, "objective", 0.5 + 0.1 * i)
        client.set_terminated(run)
        ids.append(run)
    client.set_terminated(parent)
    return ids


@pytest.mark.slow
def test_two_soups_into_one_new_folder_at_once_one_wins_the_other_says_so(tmp_path: Path) -> None:
    from mixopt.one_trial import one_trial_main
    from trainers.embedding import train

    data = tmp_path / "data"
    synthesize(data, n_tasks=3, seed=0, spec=SynthSpec(n_train=64, n_dev=64))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = {
        "name": "racing",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data / t)} for t in TASKS],
        "trainer": {
            "target": "trainers.embedding:train",
            "steps": 2,
            "model": str(data / "model"),
            "matryoshka_dims": [64, 32],
            "max_seq_length": 32,
            "cpu_threads": 1,
        },
        "tracking": {"uri": uri},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    checkpoints = []  # trained by the trainer's own one-trial command: its prompts, its checksums
    for i in range(3):
        assert one_trial_main(train, [str(path), str(tmp_path / "runs" / f"trial-{i:03d}")], "embedding") == 0
        checkpoints.append(tmp_path / "runs" / f"trial-{i:03d}" / "model")
    record_sweep(uri, "racing", checkpoints, tmp_path / "artifacts")
    out = tmp_path / "soup"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "mixopt.cli", "soup", str(path), "--runs", "all", "--method", "greedy"]
    procs = [
        subprocess.Popen(
            cmd + ["--out", str(out)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    winner = next(r for r in results if r[0] == 0)
    loser = next(r for r in results if r[0] != 0)
    lines = loser[2].strip().splitlines()
    assert len(lines) == 1, loser[2]
    assert f"--out {out} is being written by another soup" in lines[0] or f"{out} already exists" in lines[0]
    assert "Traceback" not in loser[2]

    client = MlflowClient(uri)
    eid = client.get_experiment_by_name("racing").experiment_id
    soups = client.search_runs([eid], "tags.`mixopt.role` = 'soup'")
    assert len(soups) == 1, "the soup that lost logged a run"
    assert soups[0].data.tags["mixopt.checkpoint"] == str(out.resolve())
    assert f"MLflow run {soups[0].info.run_id}" in winner[1]
    manifest = json.loads((out / "mixopt_checksums.json").read_text())
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no claim, no temp


def _modes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]}


def test_a_soup_follows_the_umask(tmp_path: Path) -> None:
    data = tmp_path / "data"
    synthesize(data, n_tasks=3, seed=0, spec=SynthSpec(n_train=64, n_dev=16))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    record_sweep(uri, "perm", [data / "model", data / "model"], tmp_path / "artifacts")
    old = os.umask(0o027)
    try:
        out = tmp_path / "soup"
        result = CliRunner().invoke(
            app, ["soup", "--experiment", "perm", "--tracking-uri", uri, "--runs", "all", "--out", str(out)]
        )
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    # What mkdir/open give under umask 027: the reference, by hand.
    expected = {k: (0o777 if (out / k).is_dir() else 0o666) & ~0o027 for k in _modes(out)}
    assert _modes(out) == expected
