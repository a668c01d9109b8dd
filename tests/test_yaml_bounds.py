"""The experiment YAML is read with bounds: aliases cannot blow it up, recursion cannot crash it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixopt.config import ConfigError, parse_yaml

ROOT = Path(__file__).resolve().parents[1]


def _billion_laughs(levels: int = 9) -> str:
    """Each level is a list of nine aliases of the level before: 9**levels strings once expanded."""
    lines = ["name: x", 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _validate(path: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    # A timeout, not an endless wait: an unbounded loader expands 9**9 values and never returns.
    proc = subprocess.run(
        [sys.executable, "-m", "mixopt.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    return proc, time.monotonic() - start


def test_billion_laughs_is_one_line_fast(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(_billion_laughs())
    proc, _ = _validate(path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{path}:") and "100,000 values" in lines[0] and "alias" in lines[0]
    assert proc.stdout == ""
    # In process: refused after about 100,000 values, well under a second of work.
    start = time.monotonic()
    with pytest.raises(ConfigError):
        parse_yaml(_billion_laughs(), "laughs.yaml")
    assert time.monotonic() - start < 5


def test_recursive_alias_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "rec.yaml"
    path.write_text("name: x\ntasks: &a [*a]\n")
    proc, _ = _validate(path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"{path}:2: tasks[0]: a recursive alias: the value anchored at line 2 contains an alias to "
        "itself (an infinite value); remove the alias"
    ), proc.stderr


def test_recursive_alias_in_a_mapping_and_deep_nesting() -> None:
    with pytest.raises(ConfigError, match=r"^m.yaml:1: a.b: a recursive alias"):
        parse_yaml("a: &m {b: *m}\n", "m.yaml")
    with pytest.raises(ConfigError, match=r"^d.yaml:1: a\[0\]\[0\]…: nested more than 64 levels"):
        parse_yaml("a: " + "[" * 100 + "]" * 100 + "\n", "d.yaml")
    # Too deep for PyYAML's recursive composer: still one line, not a RecursionError.
    with pytest.raises(ConfigError, match=r"^d.yaml: nested too deeply"):
        parse_yaml("a: " + "[" * 5000 + "]" * 5000 + "\n", "d.yaml")


def test_shared_aliases_within_bounds_still_load() -> None:
    data, _ = parse_yaml("p: &p {query: 'q: ', document: 'd: '}\nx: *p\ny: [*p, *p]\n", "ok.yaml")
    assert data["x"] == data["y"][1] == {"query": "q: ", "document": "d: "}
