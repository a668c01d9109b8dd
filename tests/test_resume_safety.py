"""Resume without losing or mixing anything (issue 29, cases 2, 3, 4): one driver per sweep (a lock),
a YAML changed between start and resume, SIGTERM as a scheduler's pre-emption; and the issue's
closing sequence: SIGTERM, resume, SIGKILL during the resume, resume again.

Real parts throughout: drivers are real `mixopt sweep` processes on a local Ray, MLflow is a
sqlite store, trials run the analytic trainer, except in the closing sequence, which trains the tiny real\nGemma3 encoder so that its checkpoints' checksums can be verified by the soup.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from mixopt.cli import app
from mixopt.sweep.common import SweepError
from mixopt.sweep.lock import LOCK_FILE, STALE_S, SweepLock
from mixopt.sweep.resume import config_changes, next_config_name

TASKS = ["retrieval_0", "sts_1", "classification_2"]


def write_experiment(tmp_path: Path, data_dir: Path, name: str = "exp.yaml", **over) -> Path:
    exp = {
        "name": "resume_safety",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data_dir / t)} for t in TASKS],
        "search": {"bounds": {"retrieval_0": {"min": 0.05}}},
        "optimizer": {"n_seeds": 2, "max_trials": 5, "max_concurrent": 1, "random_state": 0},
        "trainer": {"target": "trainers.analytic:train", "steps": 20, "seconds_per_step": 0.15},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
        "verify": {"seeds": 0},
    }
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            exp.setdefault(section, {})[field] = value
        else:
            exp[section] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


# --------------------------------------------------------------------------- config changes


def test_config_changes_name_the_yaml_paths_that_differ() -> None:
    recorded = {
        "tasks": [{"name": "a", "path": "/d/a"}, {"name": "b", "path": "/d/b"}],
        "search": {"bounds": {"a": {"min": 0.05}}, "hyperparameters": {}},
        "trainer": {"target": "t:train", "rate": 10.0, "steps": 20},
    }
    current = {
        "tasks": [{"name": "a", "path": "/d/a"}, {"name": "b", "path": "/e/b"}],
        "search": {"bounds": {"a": {"min": 0.1}}, "hyperparameters": {}},
        "trainer": {"target": "t:train", "rate": 20.0, "steps": 20, "noise": 0.1},
    }
    assert config_changes(recorded, current) == [
        "tasks[1].path",
        "search.bounds.a.min",
        "trainer.rate",
        "trainer.noise",
    ]
    three = {**current, "tasks": current["tasks"] + [{"name": "c", "path": "/d/c"}]}
    assert config_changes(current, three) == ["tasks"]
    assert config_changes(recorded, recorded) == []
    assert [next_config_name(n) for n in ("config.yaml", "config-2.yaml", "config-9.yaml")] == [
        "config-2.yaml",
        "config-3.yaml",
        "config-10.yaml",
    ]


def test_allow_config_change_without_resume_is_refused_writing_nothing(
    tmp_path: Path, data_dir: Path
) -> None:
    path = write_experiment(tmp_path, data_dir)
    code, out, err = cli("sweep", str(path), "--allow-config-change")
    assert code == 2
    assert err.strip().splitlines() == [
        "--allow-config-change applies to --resume only (a new sweep records the YAML as it is)"
    ]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- the lock


def _holder_process() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _write_lock(storage: Path, pid: int, host: str, since: str = "2026-01-01 00:00:00") -> Path:
    storage.mkdir(parents=True, exist_ok=True)
    path = storage / LOCK_FILE
    path.write_text(json.dumps({"pid": pid, "host": host, "since": since, "doing": "resumed"}))
    return path


def test_a_lock_held_by_a_live_driver_refuses_with_its_pid_host_and_time(tmp_path: Path) -> None:
    # The holder: a second real process that takes the lock and keeps it.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from mixopt.sweep.lock import SweepLock; "
            "SweepLock(sys.argv[1], 'abcd1234', 'resumed').acquire(); print('held', flush=True); "
            "time.sleep(120)",
            str(tmp_path / "sweep"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = (tmp_path / "sweep" / LOCK_FILE).read_bytes()
        lines: list[str] = []
        with pytest.raises(SweepError) as err:
            SweepLock(tmp_path / "sweep", "abcd1234", "resumed").acquire(say=lines.append)
        since = json.loads(before)["since"]
        assert str(err.value) == (
            f"sweep abcd1234 is already being resumed by pid {holder.pid} on {socket.gethostname()} "
            f"(since {since}); wait for it to end, or stop it first (its lock: {tmp_path / 'sweep' / LOCK_FILE})"
        )
        assert lines == []
        assert (tmp_path / "sweep" / LOCK_FILE).read_bytes() == before  # not touched
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_drivers_lock_is_taken_over_with_a_line(tmp_path: Path) -> None:
    dead = _holder_process()
    dead.kill()
    dead.wait()  # a pid that no longer runs on this host
    path = _write_lock(tmp_path, dead.pid, socket.gethostname())
    lines: list[str] = []
    lock = SweepLock(tmp_path, "abcd1234", "resumed")
    lock.acquire(say=lines.append)
    assert lines == [
        f"[mixopt] sweep abcd1234: taking over the lock of pid {dead.pid} on {socket.gethostname()} "
        "(no longer running; since 2026-01-01 00:00:00)"
    ]
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no stale copy left beside it


def test_another_hosts_lock_is_trusted_while_its_heartbeat_is_fresh_then_taken_over(tmp_path: Path) -> None:
    path = _write_lock(tmp_path, 12345, "other-host")
    with pytest.raises(SweepError, match=r"already being resumed by pid 12345 on other-host"):
        SweepLock(tmp_path, "abcd1234").acquire(say=lambda line: None)
    old = time.time() - STALE_S - 60
    os.utime(path, (old, old))  # its driver stopped beating
    lines: list[str] = []
    lock = SweepLock(tmp_path, "abcd1234")
    lock.acquire(say=lines.append)
    assert len(lines) == 1 and re.fullmatch(
        r"\[mixopt\] sweep abcd1234: taking over the lock of pid 12345 on other-host "
        r"\(no heartbeat for \d+s; since 2026-01-01 00:00:00\)",
        lines[0],
    ), lines
    lock.release()


def test_a_live_pid_with_a_stale_heartbeat_is_taken_over(tmp_path: Path) -> None:
    """A pid reused by an unrelated process after the driver died: the heartbeat tells."""
    other = _holder_process()
    try:
        path = _write_lock(tmp_path, other.pid, socket.gethostname())
        old = time.time() - STALE_S - 60
        os.utime(path, (old, old))
        lines: list[str] = []
        lock = SweepLock(tmp_path, "abcd1234")
        lock.acquire(say=lines.append)
        assert "no heartbeat for" in lines[0]
        lock.release()
    finally:
        other.kill()
        other.wait()


def test_a_lock_file_not_yet_written_is_a_driver_starting_until_it_is_stale(tmp_path: Path) -> None:
    path = tmp_path / LOCK_FILE
    path.write_text("")  # created with O_EXCL, its creator not yet past the write
    with pytest.raises(
        SweepError, match=r"is being started by another driver \(its lock .* is not written yet\)"
    ):
        SweepLock(tmp_path, "abcd1234").acquire(say=lambda line: None)
    old = time.time() - STALE_S - 60
    os.utime(path, (old, old))  # its creator died there
    lock = SweepLock(tmp_path, "abcd1234")
    lock.acquire(say=lambda line: None)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()


# --------------------------------------------------------------------------- real drivers


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("RAY_ADDRESS", None)
    return env


class Driver:
    """A real `mixopt sweep` process, its output in files (a full pipe would block it)."""

    def __init__(self, tmp_path: Path, path: Path, *args: str, tag: str) -> None:
        self.out = tmp_path / f"{tag}.out"
        self.err = tmp_path / f"{tag}.err"
        cmd = [sys.executable, "-m", "mixopt.cli", "sweep", str(path), *args]
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=out, stderr=err)

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def wait_for(self, text: str, count: int = 1, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.out.read_text().count(text) < count:
            assert self.proc.poll() is None, f"the driver ended first:\n{self.output()[-4000:]}"
            assert time.monotonic() < deadline, f"no {text!r} in time:\n{self.output()[-4000:]}"
            time.sleep(0.3)

    def finish(self, timeout: float = 300) -> int:
        return self.proc.wait(timeout=timeout)


def _runs(uri: str) -> tuple[MlflowClient, list, list]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("resume_safety")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mixopt.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("mixopt.role") == "trial"]
    return client, parents, trials


def _snapshot(uri: str, storage: Path) -> tuple:
    """Everything a refused resume must leave as it was: every run, the sweep's artifacts, the files."""
    client, parents, trials = _runs(uri)
    runs = sorted(
        (
            r.info.run_id,
            r.info.status,
            r.info.end_time,
            sorted(r.data.tags.items()),
            sorted(r.data.params.items()),
        )
        for r in parents + trials
    )
    artifacts = sorted(a.path for a in client.list_artifacts(parents[0].info.run_id))
    files = sorted(
        (str(p.relative_to(storage)), p.stat().st_mtime_ns) for p in storage.rglob("*") if p.is_file()
    )
    return runs, artifacts, files


def _sigterm_a_sweep(tmp_path: Path, path: Path, *, after: int = 1) -> tuple[Driver, str]:
    """Start a sweep, SIGTERM it once ``after`` trials finished and another started; (driver, its stderr)."""
    MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_experiments()  # tables made before two processes
    driver = Driver(tmp_path, path, tag="first")
    driver.wait_for(" started (", count=after + 1)
    driver.proc.send_signal(signal.SIGTERM)
    code = driver.finish(timeout=120)
    assert code == 143, driver.output()[-4000:]
    return driver, driver.err.read_text()


@pytest.mark.slow
def test_a_changed_yaml_is_refused_on_resume_unless_allowed_and_then_recorded(
    tmp_path: Path, data_dir: Path
) -> None:
    """Case 3: tasks or search space changed -> refused, keys named, nothing written, still resumable;
    a trainer option changed -> refused without --allow-config-change; with it, config-2.yaml is
    recorded and every trial run says which config it ran under."""
    path = write_experiment(tmp_path, data_dir)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _sigterm_a_sweep(tmp_path, path)
    _, (parent,), trials = _runs(uri)
    parent_id = parent.info.run_id
    assert parent.info.status == "KILLED"
    ran_before = {
        r.data.tags["mixopt.trial_id"] for r in trials if r.data.tags["mixopt.status"] == "FINISHED"
    }
    assert ran_before and all(r.data.tags["mixopt.config"] == "config.yaml" for r in trials)
    storage = tmp_path / "runs"
    before = _snapshot(uri, storage)

    # A task dropped, a bound moved: refused even with --allow-config-change.
    two_tasks = write_experiment(
        tmp_path,
        data_dir,
        "two_tasks.yaml",
        tasks=[{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data_dir / t)} for t in TASKS[:2]],
        search={"bounds": {"retrieval_0": {"min": 0.2}}},
    )
    for extra in ([], ["--allow-config-change"]):
        code, out, err = cli("sweep", str(two_tasks), "--resume", *extra)
        assert code == 2, out + err
        assert err.strip().splitlines() == [
            f"{two_tasks}: cannot resume sweep run {parent_id}: the YAML changes its tasks or search "
            "space (tasks, search.bounds.retrieval_0.min) against its recorded config.yaml; undo the "
            "change to resume it, or start a new sweep without --resume"
        ]
        assert _snapshot(uri, storage) == before

    # A trainer option changed: refused without the flag.
    faster = write_experiment(
        tmp_path,
        data_dir,
        "faster.yaml",
        trainer={"target": "trainers.analytic:train", "steps": 20, "seconds_per_step": 0.15, "rate": 20.0},
    )
    code, out, err = cli("sweep", str(faster), "--resume")
    assert code == 2
    assert err.strip().splitlines() == [
        f"{faster}: cannot resume sweep run {parent_id}: the YAML differs from its recorded config.yaml at "
        "trainer.rate; undo the change, or resume with --allow-config-change to run the remaining "
        "trials under the new values (recorded as a new config)"
    ]
    assert _snapshot(uri, storage) == before

    # With the flag: resumed, the new config recorded, each trial tagged with the config it ran under.
    resumed = Driver(tmp_path, faster, "--resume", "--allow-config-change", tag="resumed")
    assert resumed.finish() == 0, resumed.output()[-4000:]
    assert (
        f"[mixopt] resuming sweep {parent_id} under a changed config (trainer.rate): recorded as "
        "config-2.yaml; trials from now on are tagged mixopt.config=config-2.yaml"
    ) in resumed.out.read_text()
    client, (parent,), trials = _runs(uri)
    assert parent.info.status == "FINISHED" and parent.data.tags["mixopt.config"] == "config-2.yaml"
    recorded = yaml.safe_load(
        Path(client.download_artifacts(parent_id, "config-2.yaml", str(tmp_path))).read_text()
    )
    assert recorded["trainer"]["rate"] == 20.0
    first = yaml.safe_load(
        Path(client.download_artifacts(parent_id, "config.yaml", str(tmp_path))).read_text()
    )
    assert first["trainer"].get("rate", 10.0) == 10.0
    assert sorted(r.data.tags["mixopt.trial_id"] for r in trials) == [f"trial-{i:03d}" for i in range(5)]
    for r in trials:
        expected = "config.yaml" if r.data.tags["mixopt.trial_id"] in ran_before else "config-2.yaml"
        assert r.data.tags["mixopt.config"] == expected, r.data.tags["mixopt.trial_id"]


@pytest.mark.slow
def test_sigterm_resume_sigkill_during_resume_and_resume_again_ends_with_max_trials(tmp_path: Path) -> None:
    """The issue's closing sequence on the real tiny Gemma3 trainer, with case 2 inside it: while a
    resume runs, a second resume of the same sweep is refused naming the first's pid and host,
    having written nothing. At the end every checkpoint's checksum manifest matches hashlib's digest
    of its files, its run's tag pins that manifest, and the soup of all trials verifies them."""
    import hashlib

    from mixopt.synth import synthesize

    synth = tmp_path / "synth"
    synthesize(synth, n_tasks=3, seed=0)
    path = write_experiment(
        tmp_path,
        synth,
        optimizer={"n_seeds": 2, "max_trials": 6, "max_concurrent": 2, "random_state": 0},
        trainer={
            "target": "trainers.embedding:train",
            "steps": 40,
            "model": str(synth / "model"),
            "matryoshka_dims": [64, 32],
            "batch_size": 16,
            "max_seq_length": 32,
            "cpu_threads": 1,
        },
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = tmp_path / "runs"
    _, err = _sigterm_a_sweep(tmp_path, path)
    assert "Fatal Python error" not in err and "Stack (most recent call first)" not in err
    _, (parent,), trials = _runs(uri)
    parent_id = parent.info.run_id
    assert parent.info.status == "KILLED"
    assert err.strip().splitlines()[-1] == (
        f"{path}: interrupted (SIGTERM): sweep run {parent_id} marked KILLED; continue it with "
        f"`mixopt sweep {path} --resume`"
    )
    assert all(r.info.status != "RUNNING" for r in trials)

    # Resume; while it runs, a second resume is refused.
    first = Driver(tmp_path, path, "--resume", tag="resume1")
    first.wait_for(" started (")
    code, out, err = cli("sweep", str(path), "--resume")
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert re.fullmatch(
        rf"{re.escape(str(path))}: sweep {parent_id} is already being resumed by pid {first.proc.pid} on "
        rf"{re.escape(socket.gethostname())} \(since [\d-]+ [\d:]+\); wait for it to end, or stop it first "
        rf"\(its lock: {re.escape(str(storage))}/.*/{LOCK_FILE}\)",
        line,
    ), line
    # Refused before anything was read beyond the sweep's record: no resume line, the lock still
    # the first's (the runs go on changing under the first resume, so they cannot be compared).
    assert "resuming sweep" not in out
    assert json.loads(next(storage.rglob(LOCK_FILE)).read_text())["pid"] == first.proc.pid

    first.proc.send_signal(signal.SIGKILL)  # the resume dies with no chance to clean up
    first.finish(timeout=60)
    stale = json.loads(next(storage.rglob(LOCK_FILE)).read_text())
    assert stale["pid"] == first.proc.pid

    again = Driver(tmp_path, path, "--resume", tag="resume2")
    assert again.finish() == 0, again.output()[-4000:]
    assert f"taking over the lock of pid {first.proc.pid} on {socket.gethostname()} (no longer running" in (
        again.out.read_text()
    )
    _, (parent,), trials = _runs(uri)
    assert parent.info.status == "FINISHED"
    ids = sorted(r.data.tags["mixopt.trial_id"] for r in trials)
    assert ids == [f"trial-{i:03d}" for i in range(6)]  # exactly max_trials, none duplicated
    assert all(r.info.status in ("FINISHED", "FAILED") for r in trials)
    assert all(r.data.tags["mixopt.status"] in ("FINISHED", "FAILED") for r in trials)
    proposals = {json.dumps(json.loads(r.data.tags["mixopt.proposal"]), sort_keys=True) for r in trials}
    assert len(proposals) == 6
    assert not list(storage.rglob(LOCK_FILE))  # released at the end

    finished = [r for r in trials if r.data.tags["mixopt.status"] == "FINISHED"]
    assert finished
    for r in finished:
        ckpt = Path(r.data.tags["mixopt.checkpoint"])
        manifest = json.loads((ckpt / "mixopt_checksums.json").read_text())
        for name, digest in manifest["files"].items():
            assert hashlib.sha256((ckpt / name).read_bytes()).hexdigest() == digest, (ckpt, name)
        pinned = hashlib.sha256((ckpt / "mixopt_checksums.json").read_bytes()).hexdigest()
        assert r.data.tags["mixopt.checkpoint_checksums"] == pinned
    code, out, err = cli("soup", str(path), "--runs", "all", "--out", str(tmp_path / "soup"))
    assert code == 0, out + err
    assert "checksums" not in err, err  # no ingredient without (or failing) its checksums
    assert (tmp_path / "soup" / "mixopt_checksums.json").is_file()
