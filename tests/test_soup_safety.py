"""The soup loses nothing and averages nothing corrupted (issue 29, cases 1, 6 and 8).

- ``--force`` replaces only an earlier soup (its marker file); any other ``--out`` survives byte
  for byte, refused before any work.
- The trainer records a SHA-256 per checkpoint file; the soup verifies them before averaging.
- Temporary directories a SIGKILLed soup left are removed by the next soup into that folder.

References are independent of the code: ``hashlib`` on the files, the bytes of the folders read
before the command, safetensors' own reader for the averaged weights, and ``os.kill`` for pids.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from mixopt.checksums import CHECKSUMS_FILE
from mixopt.cli import app
from mixopt.soup import Ingredient, SoupError, make_soup
from mixopt.soup.checkpoints import CheckpointError
from mixopt.soup.outdir import MARKER
from trainers.tiny_model import build_tokenizer, write_tiny_model

REPO = Path(__file__).resolve().parents[1]
WORDS = "alpha beta gamma delta epsilon zeta eta theta".split()
SIZES = dict(
    hidden_size=16,
    intermediate_size=32,
    head_dim=8,
    query_pre_attn_scalar=8,
    num_attention_heads=2,
    num_key_value_heads=1,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> list[Path]:
    """Checkpoints written by the trainer's own saver (``trainers.model.save_sentence_transformer``)."""
    root = tmp_path_factory.mktemp("trainer-ckpts")
    tok = build_tokenizer(WORDS)
    return [write_tiny_model(root / f"trial-{s}", tok, seed=s, dense=True, **SIZES) for s in range(3)]


def ing(ckpt: Path, value: float, n: int) -> Ingredient:
    return Ingredient(run_id=f"{n:032x}", trial_id=f"trial-{n}", checkpoint=ckpt, value=value)


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (or ``path`` itself) with its bytes."""
    if path.is_file():
        return {".": path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- case 1: --force


def _user_folder(root: Path) -> Path:
    d = root / "important"
    (d / "sub").mkdir(parents=True)
    (d / ".ssh").mkdir()
    (d / "SENTINEL.txt").write_text("do not delete\n")
    (d / "sub" / "f").write_bytes(os.urandom(64))
    (d / ".ssh" / "id_fake").write_text("-----BEGIN KEY-----\n")
    return d


def test_force_refuses_a_folder_that_is_not_a_soup_and_keeps_it_byte_for_byte(
    trained: list[Path], tmp_path: Path
) -> None:
    d = _user_folder(tmp_path)
    before = snapshot(d)
    with pytest.raises(SoupError, match=rf"--out {d} is not a soup mixopt wrote \(no {MARKER}"):
        make_soup([ing(trained[0], 0.5, 0), ing(trained[1], 0.4, 1)], d, force=True)
    assert snapshot(d) == before
    assert hidden(tmp_path) == []  # nothing started beside it either


def test_force_refuses_a_regular_file_and_a_symlink(trained: list[Path], tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("my notes\n")
    with pytest.raises(SoupError, match="is a file, not an earlier soup"):
        make_soup([ing(trained[0], 0.5, 0)], f, force=True)
    assert f.read_text() == "my notes\n"
    earlier = make_soup([ing(trained[0], 0.5, 0)], tmp_path / "soup").out
    link = tmp_path / "link"
    link.symlink_to(earlier)
    with pytest.raises(SoupError, match="is a symbolic link"):
        make_soup([ing(trained[1], 0.5, 1)], link, force=True)
    assert link.is_symlink() and os.readlink(link) == str(earlier)


def _cli_soup(out: str, uri: str) -> tuple[int, str]:
    """``mixopt soup --experiment nosuch --out OUT --force``: the experiment does not exist, so any
    message other than the --out refusal means the command went further than checking --out."""
    r = CliRunner().invoke(
        app, ["soup", "--experiment", "nosuch", "--tracking-uri", uri, "--out", out, "--force"]
    )
    return r.exit_code, r.output


@pytest.mark.parametrize("where", ["dot", "ancestor", "dot_of_a_soup"])
def test_force_refuses_the_cwd_and_its_ancestors_before_any_work(
    where: str, trained: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = _user_folder(tmp_path)
    if where == "dot_of_a_soup":  # even an earlier soup cannot be replaced while it is the cwd
        d = make_soup([ing(trained[0], 0.5, 0)], tmp_path / "soup").out
    before = snapshot(d)
    cwd = d / "sub" if where == "ancestor" else d
    monkeypatch.chdir(cwd)
    db = tmp_path / "store" / "mlflow.db"
    code, output = _cli_soup(".." if where == "ancestor" else ".", f"sqlite:///{db}")
    assert code == 2, output
    assert output.strip().count("\n") == 0  # one line
    assert "is the current directory or one above it" in output
    assert snapshot(d) == before
    assert not db.parent.exists()  # the tracking store was not even opened


def test_force_refuses_the_filesystem_root(tmp_path: Path) -> None:
    code, output = _cli_soup("/", f"sqlite:///{tmp_path}/store/mlflow.db")
    assert code == 2 and "is the filesystem root" in output, output


def test_force_refuses_a_plain_folder_in_the_cli_before_opening_the_store(tmp_path: Path) -> None:
    d = _user_folder(tmp_path)
    before = snapshot(d)
    code, output = _cli_soup(str(d), f"sqlite:///{tmp_path}/store/mlflow.db")
    assert code == 2 and f"no {MARKER}" in output and output.count("\n") == 1, output
    assert snapshot(d) == before and not (tmp_path / "store").exists()


def test_force_replaces_an_earlier_soup(trained: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "soup"
    make_soup([ing(trained[0], 0.5, 0)], out, experiment_name="exp")
    marker = json.loads((out / MARKER).read_text())
    assert marker["ingredient_runs"] == [f"{0:032x}"] and marker["experiment"] == "exp"
    make_soup([ing(trained[1], 0.5, 1), ing(trained[2], 0.4, 2)], out, force=True, experiment_name="exp")
    assert json.loads((out / MARKER).read_text())["ingredient_runs"] == [f"{1:032x}", f"{2:032x}"]
    got = load_file(out / "model.safetensors")
    a, b = load_file(trained[1] / "model.safetensors"), load_file(trained[2] / "model.safetensors")
    for k, v in got.items():
        torch.testing.assert_close(v, ((a[k].double() + b[k].double()) / 2).float())
    assert hidden(tmp_path) == []


# --------------------------------------------------------------------------- case 6: checksums


def test_trainer_checkpoint_records_the_sha256_of_every_file(trained: list[Path]) -> None:
    ckpt = trained[0]
    manifest = json.loads((ckpt / CHECKSUMS_FILE).read_text())
    files = sorted(p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file())
    assert sorted(manifest["files"]) == [f for f in files if f != CHECKSUMS_FILE]
    for rel, digest in manifest["files"].items():
        assert digest == hashlib.sha256((ckpt / rel).read_bytes()).hexdigest(), rel
    assert {"model.safetensors", "2_Dense/model.safetensors", "modules.json"} <= set(manifest["files"])


def test_a_checkpoint_with_64_flipped_bytes_is_refused(trained: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "trial-bad"
    subprocess.run(["cp", "-r", str(trained[1]), str(bad)], check=True)
    weights = bad / "model.safetensors"
    recorded = json.loads((bad / CHECKSUMS_FILE).read_text())["files"]["model.safetensors"]
    assert recorded == hashlib.sha256((trained[1] / "model.safetensors").read_bytes()).hexdigest()
    data = bytearray(weights.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(x ^ 0xFF for x in data[mid : mid + 64])
    weights.write_bytes(bytes(data))
    load_file(weights)  # still a readable safetensors file: only the checksum can tell
    out = tmp_path / "soup"
    label = f"run {1:032x} (trial trial-1)"
    with pytest.raises(CheckpointError, match=rf"^{re.escape(label)}: {re.escape(str(weights))} has SHA-256"):
        make_soup([ing(trained[0], 0.5, 0), ing(bad, 0.4, 1)], out)
    assert not out.exists() and hidden(tmp_path) == []


def test_a_checkpoint_without_checksums_is_souped_with_one_warning_line(
    trained: list[Path], tmp_path: Path
) -> None:
    old = tmp_path / "trial-old"
    subprocess.run(["cp", "-r", str(trained[1]), str(old)], check=True)
    (old / CHECKSUMS_FILE).unlink()  # as an older mixopt wrote it
    lines: list[str] = []
    result = make_soup([ing(trained[0], 0.5, 0), ing(old, 0.4, 1)], tmp_path / "soup", echo=lines.append)
    warned = [line for line in lines if "checksums" in line]
    assert len(warned) == 1 and f"run {1:032x}" in warned[0] and f"run {0:032x}" not in warned[0]
    # The soup records its own checksums, of what it wrote.
    manifest = json.loads((result.out / CHECKSUMS_FILE).read_text())["files"]
    assert (
        manifest["model.safetensors"]
        == hashlib.sha256((result.out / "model.safetensors").read_bytes()).hexdigest()
    )


def test_a_manifest_rewritten_with_the_weights_is_caught_by_the_run_tag(
    trained: list[Path], tmp_path: Path
) -> None:
    """The sweep tags each trial run with its manifest's SHA-256; a checkpoint whose weights and
    manifest were both rewritten after training passes the file check but not the tag."""
    from mixopt.soup import soup_from_sweep
    from mixopt.tracking import CHECKPOINT, SweepTracker
    from mixopt.tracking.tags import CHECKPOINT_CHECKSUMS

    swapped = tmp_path / "trial-swapped"
    subprocess.run(["cp", "-r", str(trained[1]), str(swapped)], check=True)
    tags_of = {}
    for n, ckpt in enumerate([trained[0], swapped]):
        tags_of[n] = {
            CHECKPOINT: str(ckpt),
            CHECKPOINT_CHECKSUMS: hashlib.sha256((ckpt / CHECKSUMS_FILE).read_bytes()).hexdigest(),
        }
    # Rewritten after training: other weights, and a manifest made to match them.
    shutil.copy2(trained[2] / "model.safetensors", swapped / "model.safetensors")
    manifest = json.loads((swapped / CHECKSUMS_FILE).read_text())
    manifest["files"]["model.safetensors"] = hashlib.sha256(
        (swapped / "model.safetensors").read_bytes()
    ).hexdigest()
    (swapped / CHECKSUMS_FILE).write_text(json.dumps(manifest))

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = SweepTracker(uri, "tagged")
    tracker.start_sweep("sweep", {}, {})
    run_ids = []
    for n in range(2):
        run_id = tracker.start_trial(f"t{n}", {"a": 1.0}, ["a"], "seed", 0)
        tracker.log_metrics(run_id, {"objective": 1.0 - n / 10}, 1)
        tracker.finish_trial(run_id, "FINISHED", tags=tags_of[n])
        run_ids.append(run_id)
    tracker.end_sweep()
    out = tmp_path / "soup"
    with pytest.raises(
        CheckpointError, match=rf"^run {run_ids[1]} \(trial t1\): .*mixopt.checkpoint_checksums"
    ):
        soup_from_sweep(None, experiment_name="tagged", tracking_uri=uri, runs="top2", out=out, echo=None)
    assert not out.exists()
    # Both untouched: souped with no warning (every checkpoint verified).
    shutil.rmtree(swapped)
    subprocess.run(["cp", "-r", str(trained[1]), str(swapped)], check=True)
    lines: list[str] = []
    soup_from_sweep(None, experiment_name="tagged", tracking_uri=uri, runs="top2", out=out, echo=lines.append)
    assert (out / MARKER).is_file() and not any("checksums" in line for line in lines)


# --------------------------------------------------------------------------- case 8: stale temp dirs


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_temp_dirs_of_dead_soups_are_removed_and_others_kept(
    trained: list[Path], tmp_path: Path
) -> None:
    import socket

    from mixopt.soup.outdir import _HOST

    dead = _dead_pid()
    stale = tmp_path / f".soup.soup-tmp-{dead}@{_HOST}-abc123_x"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "model.safetensors").write_bytes(b"partial")
    stale_greedy = tmp_path / f".other.soup-greedy-{dead}@{_HOST}-q1w2e3r4"
    stale_greedy.mkdir()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        running = tmp_path / f".soup.soup-tmp-{alive.pid}@{_HOST}-zzzzzzzz"
        running.mkdir()
        elsewhere = tmp_path / f".soup.soup-tmp-{dead}@not-{socket.gethostname()}x-yyyyyyyy"
        elsewhere.mkdir()
        unrelated = tmp_path / ".soup.tmp-abcdefgh"  # not this pattern: not ours to judge
        unrelated.mkdir()
        lines: list[str] = []
        make_soup([ing(trained[0], 0.5, 0)], tmp_path / "soup", echo=lines.append)
        assert not stale.exists() and not stale_greedy.exists()
        assert running.is_dir() and elsewhere.is_dir() and unrelated.is_dir()
        assert sum(f"pid {dead} is not running" in line for line in lines) == 2
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.slow
def test_a_sigkilled_soup_leaves_temp_dirs_the_next_soup_removes(trained: list[Path], tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from mixopt.soup import Ingredient, make_soup
        ings = [Ingredient(run_id=f"{{n:032x}}", trial_id=str(n), checkpoint=Path(p), value=1.0 - n)
                for n, p in enumerate({[str(p) for p in trained[:2]]!r})]
        def evaluate(path):
            print("evaluating", flush=True)
            time.sleep(600)
        make_soup(ings, Path({str(tmp_path / "soup")!r}), evaluate=evaluate)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "evaluating"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    left = hidden(tmp_path)
    # Its claim on the folder and its half-done work.
    assert len(left) == 2 and left[0] == ".soup.soup-claim", left
    assert left[1].startswith(f".soup.soup-tmp-{proc.pid}@"), left
    assert (tmp_path / left[1] / "model.safetensors").is_file()
    lines: list[str] = []
    make_soup([ing(trained[0], 0.5, 0), ing(trained[1], 0.4, 1)], tmp_path / "soup", echo=lines.append)
    assert hidden(tmp_path) == []
    assert any(f"took over the claim of a soup that is gone (pid {proc.pid}" in line for line in lines), lines
    assert (tmp_path / "soup" / MARKER).is_file()
