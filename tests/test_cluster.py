"""Multi-node Ray on one machine: two raylets started with ``ray start``, a sweep joined with --address.

The head (1 CPU, custom resource ``head_slot``) and a second node (1 CPU, ``worker_slot``) are two
separate raylets on 127.0.0.1, each with its own temp dir, exactly as on two machines except that
the "shared filesystem" is the local disk. ``mixopt sweep EXP --address 127.0.0.1:PORT`` runs four
real tiny trials (trainers.embedding on the synthetic tasks), two at a time; since each node has one
CPU and each trial asks for one, the two concurrent trials must land on different nodes. Then:

- every trial's MLflow run names the Ray node it ran on, and the set of those nodes is the set of
  node ids that ``ray status -v`` reports for the two raylets;
- every checkpoint lies under ``<storage>/<experiment>/sweep-<parent run id[:8]>/trial-NNN`` and
  loads with sentence-transformers (the peer library) into unit-norm embeddings;
- ``mixopt soup EXP --runs top3`` reads them from there, and its weights are the element-wise mean
  of the three best trials' weights as sentence-transformers loads them.

The cluster is torn down whatever happens: SIGTERM to each ``ray start --block`` (which stops its
own daemons), then SIGKILL to anything left in the process sessions this test created. ``ray stop``
is never used: it kills every Ray process on the machine, other users' included.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from mixopt.synth import SynthSpec, synthesize

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process-session teardown reads /proc"),
]

TASKS = ["retrieval_0", "sts_1", "classification_2"]
EXPERIMENT = "cluster_test"


def _ray_cli() -> str:
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        pytest.fail("the `ray` command is not installed next to this Python nor on PATH; run `make setup`")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return f"({path} unreadable)"


def _session_members(sids: set[int]) -> list[int]:
    """Pids of live processes whose session id is one of ``sids`` (the sessions this test started)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) in sids:
                out.append(int(entry))
        except (ProcessLookupError, PermissionError):
            continue
    return out


def _stop_sessions(procs: list[subprocess.Popen], grace: float = 30.0) -> None:
    """SIGTERM the session leaders, wait, then SIGKILL whatever is left in their sessions."""
    sids = {p.pid for p in procs}
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    # Ray workers run in their own process groups but stay in the session: sweep them by session id.
    for _ in range(50):
        left = [pid for pid in _session_members(sids) if pid != os.getpid()]
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _run(cmd: list[str], env: dict[str, str], cwd: Path, log: Path, timeout: float) -> tuple[int, str]:
    """Run ``cmd`` in its own session with output to ``log``; kill the whole session on timeout."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_sessions([proc], grace=5)
            pytest.fail(f"{' '.join(cmd[:4])} ran past {timeout:.0f}s; its output:\n{_tail(log)}")
        finally:
            if proc.poll() is None:
                _stop_sessions([proc], grace=5)
    return code, log.read_text(errors="replace")


def _nodes_by_slot(status: str) -> dict[str, str]:
    """``{"head_slot": node id, "worker_slot": node id}`` from ``ray status -v`` (its per-node section)."""
    nodes: dict[str, str] = {}
    node = None
    for line in status.splitlines():
        line = line.strip()
        m = re.match(r"Node: ([0-9a-f]{16,})", line)
        if m:
            node = m.group(1)
            continue
        m = re.match(r"[\d.]+/[\d.]+ (head_slot|worker_slot)$", line)
        if m and node is not None:  # lines before the first "Node:" are the cluster totals
            nodes[m.group(1)] = node
    return nodes


@dataclass
class LocalCluster:
    address: str
    env: dict[str, str]
    head_node_id: str
    worker_node_id: str
    logs: list[Path] = field(default_factory=list)

    def log_tails(self) -> str:
        return "\n".join(f"--- {p}\n{_tail(p, 1500)}" for p in self.logs)


@contextmanager
def two_node_cluster(log_dir: Path, start_timeout: float = 150.0) -> Iterator[LocalCluster]:
    """A Ray head and a second raylet on 127.0.0.1, each with one CPU and a custom resource."""
    ray = _ray_cli()
    # Short temp root: Ray puts unix sockets under it (108-byte path limit); pytest's tmp_path is long.
    root = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {
        **os.environ,
        # Ray 2.59+ turns token auth on for a head that finds ~/.ray/auth_token but not for a node
        # that joins it; a real cluster sets the mode and the token on every node, and so do we.
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
    }
    for var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    common = [
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--num-cpus",
        "1",
        "--num-gpus",
        "0",
        "--object-store-memory",
        str(100 * 2**20),
        "--disable-usage-stats",
    ]
    nodes = {
        "head": [
            ray,
            "start",
            "--head",
            "--port",
            str(port),
            "--include-dashboard=false",
            "--resources",
            json.dumps({"head_slot": 1}),
            "--temp-dir",
            str(root / "h"),
            "--dashboard-agent-listen-port",
            str(_free_port()),
            *common,
        ],
        "worker": [
            ray,
            "start",
            "--address",
            address,
            "--resources",
            json.dumps({"worker_slot": 1}),
            "--temp-dir",
            str(root / "w"),
            "--dashboard-agent-listen-port",
            str(_free_port()),
            *common,
        ],
    }
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for name, cmd in nodes.items():
            log = log_dir / f"ray-{name}.log"
            logs.append(log)
            with log.open("w") as out:
                procs.append(
                    subprocess.Popen(
                        cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
            if name == "head":  # the second node needs the head's GCS listening
                deadline = time.monotonic() + start_timeout
                while True:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                        break
                    except OSError:
                        if procs[0].poll() is not None or time.monotonic() > deadline:
                            pytest.fail(f"the Ray head did not start:\n{_tail(log)}")
                        time.sleep(0.5)
        deadline = time.monotonic() + start_timeout
        slots: dict[str, str] = {}
        while len(slots) < 2:
            dead = [p for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                tails = "\n".join(f"--- {p}\n{_tail(p)}" for p in logs)
                pytest.fail(f"the two-node Ray cluster did not come up (nodes seen: {slots}):\n{tails}")
            status = subprocess.run(
                [ray, "status", "-v", "--address", address],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            slots = _nodes_by_slot(status.stdout)
            if len(slots) < 2:
                time.sleep(1)
        assert slots["head_slot"] != slots["worker_slot"]
        yield LocalCluster(address, env, slots["head_slot"], slots["worker_slot"], logs)
    finally:
        _stop_sessions(procs)
        shutil.rmtree(root, ignore_errors=True)


def _write_experiment(tmp_path: Path, data_dir: Path, storage: Path) -> Path:
    exp = {
        "name": EXPERIMENT,
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data_dir / t)} for t in TASKS],
        "optimizer": {"n_seeds": 4, "max_trials": 4, "max_concurrent": 2, "random_state": 0},
        "trainer": {
            "target": "trainers.embedding:train",
            "steps": 6,
            "seed": 0,
            "model": str(data_dir / "model"),
            "matryoshka_dims": [64, 32],
            "batch_size": 8,
            "max_seq_length": 32,
            "learning_rate": 3.0e-3,
            "eval_batch_size": 64,
            "classifier_train_rows": 64,
            "cpu_threads": 1,
        },
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "resources": {"cpus": 1, "gpus": 0},  # one trial fills a node: two at a time need both nodes
        "storage": str(storage),
        "verify": {"seeds": 0},  # the search alone: its trials are the ones checked below
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def test_sweep_across_two_ray_nodes_then_soup_from_shared_storage(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    data_dir = tmp_path / "data"
    synthesize(data_dir, n_tasks=3, seed=0, spec=SynthSpec(n_train=64, n_dev=16))
    storage = tmp_path / "shared"
    exp_path = _write_experiment(tmp_path, data_dir, storage)
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    with two_node_cluster(tmp_path) as cluster:
        code, out = _run(
            [sys.executable, "-m", "mixopt.cli", "sweep", str(exp_path), "--address", cluster.address],
            cluster.env,
            tmp_path,
            tmp_path / "sweep.log",
            timeout=420,
        )
        assert code == 0, f"mixopt sweep failed:\n{out[-4000:]}\n{cluster.log_tails()}"
        head, worker = cluster.head_node_id, cluster.worker_node_id

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("mixopt.role") == "sweep"]
    trials = sorted(
        (r for r in runs if r.data.tags.get("mixopt.role") == "trial"),
        key=lambda r: r.data.tags["mixopt.trial_id"],
    )
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert [t.data.tags["mixopt.trial_id"] for t in trials] == [f"trial-{i:03d}" for i in range(4)]
    assert all(t.data.tags["mixopt.status"] == "FINISHED" for t in trials), [t.data.tags for t in trials]

    # Trials ran on both raylets, and only on them.
    assert {t.data.tags["ray.node_id"] for t in trials} == {head, worker}

    # Every checkpoint is in the shared storage, where the layout says, and loads with the peer library.
    sweep_dir = (storage / EXPERIMENT / f"sweep-{parents[0].info.run_id[:8]}").resolve()
    models = {}
    texts = ["task: search result | query: a b c", "title: none | text: d e f"]
    for t in trials:
        ckpt = Path(t.data.tags["mixopt.checkpoint"])
        assert ckpt.parent == sweep_dir / t.data.tags["mixopt.trial_id"], ckpt
        model = SentenceTransformer(str(ckpt), device="cpu")
        emb = model.encode(texts, convert_to_tensor=True)
        assert emb.shape == (2, 64) and torch.isfinite(emb).all()
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2), atol=1e-5, rtol=0)
        models[t.info.run_id] = _weights(model)
    # Different mixtures trained different weights: the checkpoints are the trials' own, not copies.
    first, *rest = models.values()
    assert all(any(not torch.equal(first[k], other[k]) for k in first) for other in rest)

    soup_dir = tmp_path / "soup"
    code, out = _run(
        [
            sys.executable,
            "-m",
            "mixopt.cli",
            "soup",
            str(exp_path),
            "--runs",
            "top3",
            "--out",
            str(soup_dir),
        ],
        {**cluster.env},
        tmp_path,
        tmp_path / "soup.log",
        timeout=300,
    )
    assert code == 0, f"mixopt soup failed:\n{out[-4000:]}"

    # The soup's ingredients are a top 3 by objective (ties at the cut may pick either run).
    soup_runs = [
        r
        for r in client.search_runs([experiment.experiment_id], max_results=100)
        if r.data.tags.get("mixopt.role") == "soup"
    ]
    assert len(soup_runs) == 1
    ingredients = [soup_runs[0].data.params[f"ingredient.{i}"] for i in range(3)]
    objective = {t.info.run_id: t.data.metrics["objective"] for t in trials}
    cut = sorted(objective.values(), reverse=True)[2]
    assert len(set(ingredients)) == 3 and all(objective[r] >= cut for r in ingredients)

    # Its weights are the element-wise mean of those three checkpoints' weights.
    soup = _weights(SentenceTransformer(str(soup_dir), device="cpu"))
    assert set(soup) == set(models[ingredients[0]])
    for name, value in soup.items():
        expected = sum(models[r][name] for r in ingredients) / 3
        torch.testing.assert_close(value, expected, atol=1e-6, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
