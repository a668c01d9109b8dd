"""No command deletes a folder it did not write, and what a command writes others can read.

Every command that replaces a directory is walked with a folder of a user's files where it would
write: ``mixopt synth --out``, ``mixopt soup --out --force``, the one-trial trainer commands
(``python -m trainers.embedding|sentence_transformers EXP OUT_DIR``, whose checkpoint goes to
``OUT_DIR/model``) and ``bench/real_data.py --out``. Each refuses in one line and the folder is
the same byte for byte, with nothing left beside it. A last test reads the source for every call
that replaces or deletes a directory and checks it is one of those commands' or one whose
target the writer owns, so that a new one cannot escape this walk.

Permissions: what synth and a trainer's checkpoint write is ``0666 & ~umask`` (files) and
``0777 & ~umask`` (folders), the umask the user set, computed here from the umask by hand (a
soup's: tests/test_soup_out.py).
"""

from __future__ import annotations

import importlib.util
import os
import re
import stat
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mixopt.cli import app
from mixopt.synth import SynthSpec, synthesize

REPO = Path(__file__).resolve().parents[1]
TASKS = ["retrieval_0", "sts_1", "classification_2"]


def snapshot(path: Path) -> dict[str, bytes]:
    """Every entry under ``path`` with its bytes (folders as None), and ``path``'s own mode."""
    out: dict[str, bytes | None] = {".": str(path.stat().st_mode).encode()}
    for p in sorted(path.rglob("*")):
        out[p.relative_to(path).as_posix()] = p.read_bytes() if p.is_file() else None
    return out


def user_folder(where: Path) -> Path:
    """A folder of a user's own: files, a sub-folder, a hidden one."""
    (where / "sub").mkdir(parents=True)
    (where / ".hidden").mkdir()
    (where / "thesis.tex").write_text("\\section{Results}\n")
    (where / "sub" / "data.bin").write_bytes(os.urandom(256))
    (where / ".hidden" / "key").write_text("secret\n")
    return where


def beside(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Synth's tasks and its tiny model: the trainers' data, and a checkpoint to soup."""
    out = tmp_path_factory.mktemp("data") / "synthetic"
    synthesize(out, n_tasks=3, seed=0, spec=SynthSpec(n_train=64, n_dev=16))
    return out


def experiment(tmp_path: Path, data: Path, trainer: dict) -> Path:
    exp = {
        "name": "owned",
        "tasks": [{"name": t, "kind": t.rsplit("_", 1)[0], "path": str(data / t)} for t in TASKS],
        "trainer": trainer,
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


# --------------------------------------------------------------------------- mixopt synth


def test_synth_refuses_a_users_folder_and_leaves_it_byte_for_byte(tmp_path: Path) -> None:
    out = user_folder(tmp_path / "mine")
    before = snapshot(out)
    code, stdout, err = cli("synth", "--out", str(out), "--tasks", "2")
    assert code == 2, stdout + err
    assert err.strip() == (
        f"--out {out} is a folder synth did not write (no .mixopt-synth.json in it); synth replaces only its "
        "own output: choose a new or empty folder, or delete this one yourself"
    )
    assert snapshot(out) == before and beside(out) == []


def test_synth_out_dot_never_touches_the_working_folder(tmp_path: Path, monkeypatch) -> None:
    cwd = user_folder(tmp_path / "work")
    before = snapshot(cwd)
    monkeypatch.chdir(cwd)
    for out in (".", "..", str(cwd)):
        code, stdout, err = cli("synth", "--out", out, "--tasks", "2")
        assert code == 2, stdout + err
        assert len(err.strip().splitlines()) == 1 and "is the current directory or one above it" in err
    assert snapshot(cwd) == before and beside(cwd) == []


def test_synth_replaces_its_own_output_and_fills_an_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    out.mkdir()  # empty: nothing to lose
    code, stdout, err = cli("synth", "--out", str(out), "--tasks", "2", "--seed", "1")
    assert code == 0, stdout + err
    first = (out / "retrieval_0" / "train.jsonl").read_bytes()
    code, stdout, err = cli("synth", "--out", str(out), "--tasks", "2", "--seed", "2")
    assert code == 0, stdout + err
    assert (out / "retrieval_0" / "train.jsonl").read_bytes() != first  # replaced: it was synth's
    assert beside(out) == []


# --------------------------------------------------------------------------- the walk


@pytest.mark.parametrize("trainer", ["embedding", "sentence_transformers"])
def test_one_trial_command_refuses_an_out_dir_model_that_is_not_a_checkpoint(
    trainer: str, tmp_path: Path, data: Path, capsys
) -> None:
    import importlib

    from mixopt.one_trial import one_trial_main

    options = {"target": f"trainers.{trainer}:train", "steps": 1, "model": str(data / "model")}
    path = experiment(tmp_path, data, options)
    out_dir = tmp_path / "out"
    model = user_folder(out_dir / "model")
    before = snapshot(model)
    train = importlib.import_module(f"trainers.{trainer}").train
    assert one_trial_main(train, [str(path), str(out_dir)], trainer) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"python -m trainers.{trainer}: {model} is a folder that is not a checkpoint mixopt wrote (no "
        "mixopt_checksums.json in it); the trial writes its checkpoint there: choose another OUT_DIR"
    )
    assert snapshot(model) == before and beside(model) == []


def test_soup_force_refuses_a_users_folder(tmp_path: Path) -> None:
    out = user_folder(tmp_path / "mine")
    before = snapshot(out)
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    code, stdout, err = cli("soup", "--experiment", "x", "--tracking-uri", uri, "--out", str(out), "--force")
    assert code == 2 and "is not a soup mixopt wrote" in err and len(err.strip().splitlines()) == 1
    assert snapshot(out) == before and beside(out) == []  # the store was not even opened


def _real_data_module():
    spec = importlib.util.spec_from_file_location("bench_real_data_walk", REPO / "bench" / "real_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_real_data_refuses_a_folder_it_did_not_write(tmp_path: Path, capsys) -> None:
    out = user_folder(tmp_path / "mine")
    (out / "model").mkdir()
    (out / "model" / "my_weights.safetensors").write_bytes(os.urandom(128))
    before = snapshot(out)
    rd = _real_data_module()
    try:
        assert rd.main(["--out", str(out), "--quick"]) == 2
    finally:
        del sys.modules["bench_real_data_walk"]
    err = capsys.readouterr().err.strip()
    assert err == (
        f"real_data: --out {out} is a folder real_data.py did not write (no .mixopt-real-data.json in it); "
        "it replaces task folders and model/ in it: choose a new or empty folder"
    )
    assert snapshot(out) == before and beside(out) == []


# Every call that replaces or deletes a directory, and why its target is its writer's own.
# (file, call) -> who owns what it removes. A new call must be added here and walked above.
REPLACES = {
    ("mixopt/synth.py", "atomic.directory"): "synth's --out: refused unless it holds synth's marker",
    ("mixopt/soup/outdir.py", "atomic.directory"): "soup's --out: refused unless it holds the soup marker",
    ("mixopt/soup/outdir.py", "shutil.rmtree"): "temporary folders named after a dead soup's pid",
    ("mixopt/soup/make.py", "shutil.rmtree"): "the greedy soup's own mkdtemp folder",
    ("mixopt/soup/greedy.py", "shutil.rmtree"): "a candidate soup inside the greedy soup's own folder",
    ("trainers/model.py", "atomic.directory"): "OUT_DIR/model: refused unless it is a checkpoint",
    ("trainers/sentence_transformers.py", "atomic.directory"): "OUT_DIR/model: refused unless a checkpoint",
    ("mixopt/sweep/retention.py", "shutil.rmtree"): "checkpoints inside the sweep's storage, by tombstone",
    ("mixopt/atomic.py", "shutil.rmtree"): "its own temporary folders",
    (
        "bench/real_data.py",
        "atomic.directory",
    ): "--out's task folders and model/: refused unless real_data's marker",
    ("bench/st_trainer.py", "shutil.rmtree"): "a benchmark's own temporary folder",
    ("bench/soup.py", "shutil.rmtree"): "a benchmark's own temporary folder",
    ("bench/landscape.py", "shutil.rmtree"): "a benchmark's own temporary folder",
}


def test_every_call_that_replaces_a_directory_is_walked() -> None:
    found = set()
    for root in ("mixopt", "trainers", "bench"):
        for path in (REPO / root).rglob("*.py"):
            text = path.read_text()
            for call in ("atomic.directory", "shutil.rmtree"):
                if re.search(rf"\b{re.escape(call)}\(", text):
                    found.add((path.relative_to(REPO).as_posix(), call))
    assert found == set(REPLACES), sorted(found ^ set(REPLACES))


# --------------------------------------------------------------------------- permissions


def _modes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]}


def _expected(root: Path, umask: int) -> dict[str, int]:
    """What mkdir/open give under ``umask``: the reference, computed by hand from it."""
    return {
        p.relative_to(root).as_posix(): (0o777 if p.is_dir() else 0o666) & ~umask
        for p in [root, *root.rglob("*")]
    }


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_synth_and_its_trainer_checkpoint_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        out = tmp_path / "synthetic"
        code, stdout, err = cli("synth", "--out", str(out), "--tasks", "2")
    finally:
        os.umask(old)
    assert code == 0, stdout + err
    # OUT/model is the checkpoint the embedding trainer's saver writes (trainers/model.py).
    assert (out / "model" / "model.safetensors").is_file()
    assert _modes(out) == _expected(out, umask)
