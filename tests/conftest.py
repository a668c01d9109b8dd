from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps an example database and a cache of constants in ./.hypothesis by default: the
# suite writes nothing into the checkout (see working_tree_stays_clean), so no database (shrunk
# failures are printed anyway) and its cache goes to a temporary directory removed at exit.
settings.register_profile("mixopt", database=None)
settings.load_profile("mixopt")
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="mixopt-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, True)

REPO = Path(__file__).resolve().parents[1]
# Written by Python and pytest themselves, not by the code under test.
_TOOL_DIRS = ("__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def working_tree_entries(root: Path = REPO) -> set[str] | None:
    """New files in the checkout (``git status --porcelain --ignored``: untracked and ignored), less
    the caches Python and pytest write; None when the tests run outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    # New files only ("??" untracked, "!!" ignored): edits to tracked files are the developer's.
    return {
        line
        for line in out.stdout.splitlines()
        if line[:2] in ("??", "!!") and not any(f"{d}/" in line or line.endswith(d) for d in _TOOL_DIRS)
    }


@pytest.fixture(scope="session", autouse=True)
def working_tree_stays_clean():
    """Tests write only under their temporary directories: fail the session if the checkout gains files."""
    before = working_tree_entries()
    yield
    after = working_tree_entries()
    if before is None or after is None:
        return
    gained = sorted(after - before)
    assert not gained, "the tests wrote into the working tree: " + ", ".join(gained[:20])


# Shared by the sweep tests (test_sweep.py, test_multifidelity.py); a module that needs other data
# defines its own data_dir (test_user_errors.py), which takes precedence.
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """mixopt synth's three tasks (64 train / 16 dev rows each, no model), once per module."""
    from mixopt.synth import SynthSpec, synthesize

    out = tmp_path_factory.mktemp("data") / "synthetic"
    synthesize(out, n_tasks=3, seed=0, spec=SynthSpec(n_train=64, n_dev=16), with_model=False)
    return out


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray with 2 CPUs for the module's sweeps."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()
