"""The MLflow store's reads (mixopt.tracking.store) on a real sqlite store.

Runs are created here with the real MLflow client, following the sweep's conventions; the
expected answers are written out by hand from what was created.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mixopt.tracking import store
from mixopt.tracking.tags import PARENT, ROLE, STATE_PATH, TRIAL_ID


@pytest.fixture()
def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/mlflow.db"


def _sweep(client: MlflowClient, eid: str, n_trials: int) -> tuple[str, list[str]]:
    parent = client.create_run(eid, tags={ROLE: "sweep"}).info.run_id
    trials = [
        client.create_run(eid, tags={ROLE: "trial", PARENT: parent, TRIAL_ID: f"t{i}"}).info.run_id
        for i in range(n_trials)
    ]
    return parent, trials


def test_reads_of_sweeps_trials_and_prefixes(uri: str, tmp_path: Path) -> None:
    assert store.resolve_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert not store.store_exists(uri)  # and asking did not create it
    assert not (tmp_path / "mlflow.db").exists()
    client = store.connect(uri)
    eid = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    assert store.store_exists(uri)
    assert store.newest_sweep(client, [eid]) is None
    old, old_trials = _sweep(client, eid, 2)
    time.sleep(0.01)  # start times in milliseconds: the second sweep starts later
    new, new_trials = _sweep(client, eid, 3)
    client.create_run(eid, tags={ROLE: "soup"})

    assert store.experiment_by_name(client, "e").experiment_id == eid
    assert store.experiment_by_name(client, "nope") is None
    assert eid in store.experiment_ids(client)
    assert store.newest_sweep(client, [eid]).info.run_id == new
    assert [r.info.run_id for r in store.newest_sweeps(client, [eid], 20)] == [new, old]
    assert store.newest_sweeps(client, [], 5) == []
    assert {r.info.run_id for r in store.trial_runs(client, eid, new)} == set(new_trials)
    assert {r.info.run_id for r in store.trial_runs(client, eid)} == set(old_trials + new_trials)
    assert store.trial_run(client, eid, new, "t2").info.run_id == new_trials[2]
    assert store.trial_run(client, eid, old, "t2") is None
    assert store.newest_run_tagged(client, [eid], TRIAL_ID, "t0").info.run_id == new_trials[0]
    assert len(store.search_all(client, [eid])) == 2 + 2 + 3 + 1
    some = new_trials[1]
    assert [r.info.run_id for r in store.runs_with_prefix(client, eid, some[:31])] == [some]
    assert store.experiment_name_of_run(client, some) == "e"


def test_a_missing_run_is_reported_at_once_not_retried(uri: str, caplog: pytest.LogCaptureFixture) -> None:
    client = store.connect(uri)
    client.search_experiments()
    with caplog.at_level("WARNING", logger="mixopt.tracking"), pytest.raises(MlflowException) as err:
        store.get_run(client, "0123456789abcdef0123456789abcdef")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


def test_retry_retries_transient_errors_and_gives_up_on_permanent_ones() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("database is locked")
        return "ok"

    assert store.retry(flaky, "flaky", base_delay=0.001) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(OSError):
        store.retry(flaky, "flaky", base_delay=0.001, permanent=lambda e: True)
    assert len(calls) == 1


def test_recorded_state_from_the_state_file_else_the_artifact(uri: str, tmp_path: Path) -> None:
    client = store.connect(uri)
    eid = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    parent, _ = _sweep(client, eid, 0)
    assert store.recorded_state(client, client.get_run(parent)) is None
    client.log_text(parent, json.dumps({"from": "artifact"}), "optimizer_state.json")
    assert store.recorded_state(client, client.get_run(parent)) == {"from": "artifact"}
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps({"from": "file"}))
    client.set_tag(parent, STATE_PATH, str(state_file))
    assert store.recorded_state(client, client.get_run(parent)) == {"from": "file"}
    assert store.recorded_optimizer_state(uri, "e") == ({"from": "file"}, parent)
    state_file.unlink()  # gone: the artifact again
    assert store.recorded_optimizer_state(uri, "e") == ({"from": "artifact"}, parent)
    assert store.artifact_text(client, parent, "config.yaml") is None
    with pytest.raises(LookupError, match="recorded no config.yaml"):
        store.recorded_experiment(uri, "e")
