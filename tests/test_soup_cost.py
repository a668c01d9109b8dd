"""Greedy soup in O(K): the same soups as averaging the chosen members directly, each ingredient's
weights read at most twice, one candidate directory, one final soup.

The reference is independent of the code under test: the members' safetensors files loaded with
safetensors' own reader and averaged in float64 with numpy. The I/O is counted here (:func:`count_io`):
every tensor byte the soup's chunk reader gets through ``safetensors.safe_open`` from each file, and
the data section of every weight file it writes, measured from the file; both are compared with each
checkpoint's own weight bytes measured from its files.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_np
from safetensors.torch import load_file, save_file

import mixopt.soup.average
from mixopt.checksums import verify_checksums
from mixopt.soup import Ingredient, make_soup
from mixopt.soup.average import average_into
from mixopt.soup.checkpoints import CheckpointError
from mixopt.soup.greedy import greedy_select
from mixopt.soup.outdir import MARKER
from mixopt.trial import TrialResult
from tests.test_soup import build_checkpoint

K = 5


@pytest.fixture(scope="module")
def five(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("five")
    return [build_checkpoint(root / f"trial{s}", seed=10 + s) for s in range(K)]


class IOCount:
    """Tensor bytes read, by file, and tensor bytes written, while :func:`count_io` is active."""

    def __init__(self) -> None:
        self.read: collections.Counter[Path] = collections.Counter()
        self.written = 0

    def models_read(self, checkpoint: Path, model_bytes: int) -> float:
        """How many times ``checkpoint``'s weights were read: its bytes read / ``model_bytes``."""
        return sum(n for p, n in self.read.items() if checkpoint in p.parents) / model_bytes

    def models_written(self, model_bytes: int) -> float:
        return self.written / model_bytes


class _CountedReads:
    """A ``safe_open`` handle that adds the bytes of every tensor (or slice of one) it returns."""

    def __init__(self, handle: Any, path: Path, io: IOCount) -> None:
        self._h, self._path, self._io = handle, path, io

    def __enter__(self) -> _CountedReads:
        self._h.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._h.__exit__(*exc)

    def _count(self, t: torch.Tensor) -> torch.Tensor:
        self._io.read[self._path] += t.numel() * t.element_size()
        return t

    def get_tensor(self, name: str) -> torch.Tensor:
        return self._count(self._h.get_tensor(name))

    def get_slice(self, name: str) -> Any:
        whole, count = self._h.get_slice(name), self._count

        class _Slice:
            def __getitem__(self, index: Any) -> torch.Tensor:
                return count(whole[index])

        return _Slice()


class _CountedWrite:
    """A weight file opened for writing; when closed, the bytes of its data section count as written."""

    def __init__(self, f: Any, path: Path, io: IOCount) -> None:
        self._f, self._path, self._io = f, path, io

    def write(self, data: Any) -> int:
        return self._f.write(data)

    def __enter__(self) -> _CountedWrite:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()
        raw = self._path.read_bytes()
        self._io.written += len(raw) - 8 - struct.unpack("<Q", raw[:8])[0]


@contextlib.contextmanager
def count_io() -> Iterator[IOCount]:
    """Count the soup's tensor I/O inside the ``with`` block: reads through the chunk reader's
    ``safe_open`` (mixopt.soup.average), writes of ``*.safetensors`` files opened with ``Path.open``."""
    io = IOCount()
    original_safe_open, original_path_open = mixopt.soup.average.safe_open, Path.open

    def safe_open(path: Any, *args: Any, **kwargs: Any) -> _CountedReads:
        return _CountedReads(original_safe_open(path, *args, **kwargs), Path(path), io)

    def path_open(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = original_path_open(self, mode, *args, **kwargs)
        return _CountedWrite(f, self, io) if "w" in mode and self.suffix == ".safetensors" else f

    mixopt.soup.average.safe_open, Path.open = safe_open, path_open
    try:
        yield io
    finally:
        mixopt.soup.average.safe_open, Path.open = original_safe_open, original_path_open


def weight_files(ckpt: Path) -> list[str]:
    return sorted(p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*.safetensors"))


def weight_bytes(ckpt: Path) -> int:
    return sum(a.nbytes for f in weight_files(ckpt) for a in load_np(str(ckpt / f)).values())


def numpy_mean(members: list[Path]) -> dict[str, dict[str, np.ndarray]]:
    """Per weight file and tensor: the float64 mean of the members' tensors, cast to their dtype."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for f in weight_files(members[0]):
        loaded = [load_np(str(m / f)) for m in members]
        out[f] = {
            name: (sum(d[name].astype(np.float64) for d in loaded) / len(loaded)).astype(
                loaded[0][name].dtype
            )
            for name in loaded[0]
        }
    return out


def assert_soup_equals(soup: Path, members: list[Path]) -> None:
    want = numpy_mean(members)
    assert weight_files(soup) == sorted(want)
    for f, tensors in want.items():
        got = load_np(str(soup / f))
        assert sorted(got) == sorted(tensors)
        for name, ref in tensors.items():
            np.testing.assert_allclose(got[name], ref, rtol=1e-6, atol=1e-7, err_msg=f"{f}:{name}")


def ingredients(paths: list[Path]) -> list[Ingredient]:
    # Values K..1: the given order is the rank order.
    return [
        Ingredient(run_id=f"{i:032x}", trial_id=p.name, checkpoint=p, value=float(K - i))
        for i, p in enumerate(paths)
    ]


@pytest.mark.parametrize(
    "scores, kept",
    [
        ([0.5, 0.6, 0.7, 0.8, 0.9], [0, 1, 2, 3, 4]),  # every candidate kept: the most reads
        ([0.5, 0.4, 0.6, 0.6, 0.1], [0, 2, 3]),  # drops, an equal score kept, the last dropped
        ([0.5, 0.1, 0.2, 0.3, 0.4], [0]),  # only the first
    ],
)
def test_greedy_reads_each_checkpoint_at_most_twice_and_equals_the_direct_average(
    five: list[Path], tmp_path: Path, scores: list[float], kept: list[int]
) -> None:
    script = iter(scores)
    seen_dirs: set[Path] = set()
    seen_members: list[list[int]] = []
    kept_so_far: list[int] = []

    def evaluate(path: Path) -> float:
        # Every candidate is the direct average of the members kept so far plus the next one.
        step = len(seen_members)
        members = [*kept_so_far, step]
        assert_soup_equals(path, [five[m] for m in members])
        seen_dirs.add(path)
        seen_members.append(members)
        s = next(script)
        if step == 0 or s >= scores[kept_so_far[-1]]:
            kept_so_far.append(step)
        return s

    model = weight_bytes(five[0])
    with count_io() as io:
        result = greedy_select(ingredients(five), evaluate, tmp_path / "work", chunk_bytes=4096)
    assert [int(i.run_id, 16) for i in result.kept] == kept
    assert_soup_equals(result.soup_dir, [five[i] for i in kept])
    # O(K): each ingredient read once as a candidate, once more when kept (the old code read the
    # first one K times and wrote K soups into K directories).
    reads = [io.models_read(c, model) for c in five]
    assert reads == [pytest.approx(1 + (i in kept)) for i in range(K)]
    assert max(reads) <= 2
    assert len(seen_dirs) == 1  # one reusable candidate directory
    written = io.models_written(model)
    assert written == pytest.approx(K + (kept[-1] != K - 1))  # K candidates (+ the final soup)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["soup"]
    assert result.score == scores[kept[-1]] and result.final_step == kept[-1]


def test_make_soup_greedy_keeps_checksums_and_marker_and_reports_the_final_evaluation(
    five: list[Path], tmp_path: Path
) -> None:
    script = iter([0.5, 0.7, 0.6, 0.8, 0.2])  # keeps 0, 1, 3

    calls: list[float] = []

    def evaluate(path: Path) -> TrialResult:
        s = next(script)
        calls.append(s)
        return TrialResult(objective=s, task_scores={}, task_metrics={}, checkpoint=None)

    with pytest.warns(UserWarning, match="record no checksums"):  # hand-built checkpoints have none
        result = make_soup(ingredients(five), tmp_path / "out", method="greedy", evaluate=evaluate)
    assert [int(i.run_id, 16) for i in result.ingredients] == [0, 1, 3]
    assert result.evaluation is not None and result.evaluation.objective == 0.8
    assert_soup_equals(tmp_path / "out", [five[i] for i in (0, 1, 3)])
    assert (tmp_path / "out" / MARKER).is_file()
    assert verify_checksums(tmp_path / "out", "the soup") is True  # raises on a mismatch
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_uniform_and_greedy_costs_at_k5(five: list[Path], tmp_path: Path) -> None:
    """The uniform soup reads each ingredient once and writes one model; the greedy soup with every
    candidate kept (the worst case) reads each twice and writes K (the last candidate is the soup)."""
    model = weight_bytes(five[0])
    (tmp_path / "uniform").mkdir()
    with count_io() as io:
        average_into(five, tmp_path / "uniform")
    assert [io.models_read(c, model) for c in five] == [pytest.approx(1.0) for _ in five]
    assert io.models_written(model) == 1.0
    with count_io() as io:
        result = greedy_select(ingredients(five), lambda p: 1.0, tmp_path / "greedy")
    assert [io.models_read(c, model) for c in five] == [2.0, 2.0, 2.0, 2.0, 2.0] and len(result.kept) == K
    assert io.models_written(model) == pytest.approx(K)
    assert_soup_equals(tmp_path / "greedy" / "soup", five)
    assert_soup_equals(tmp_path / "uniform", five)
    assert weight_bytes(tmp_path / "uniform") == model


def test_a_nan_candidate_names_its_run_and_tensor(five: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(five[1], bad)
    f = bad / "2_Dense" / "model.safetensors"
    t = load_file(f)
    t["linear.weight"][0, 0] = float("nan")
    save_file(t, f)
    ings = ingredients([five[0], bad])
    with pytest.raises(
        CheckpointError, match=r"trial bad\).*'linear\.weight' in 2_Dense/model\.safetensors has 1 NaN"
    ):
        greedy_select(ings, lambda p: 1.0, tmp_path / "w")
    assert torch.isnan(t["linear.weight"]).any()
