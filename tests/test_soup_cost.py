"""Greedy soup in O(K): the same soups as averaging the chosen members directly, each ingredient's
weights read at most twice, one candidate directory, one final soup.

The reference is independent of the code under test: the members' safetensors files loaded with
safetensors' own reader and averaged in float64 with numpy. The I/O is counted by
:func:`mixopt.soup.average.count_io`, which records every tensor byte read from each file, and
is compared with each checkpoint's own weight bytes measured here from the files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_np
from safetensors.torch import load_file, save_file

from mixopt.checksums import verify_checksums
from mixopt.soup import Ingredient, make_soup
from mixopt.soup.average import count_io
from mixopt.soup.checkpoints import CheckpointError
from mixopt.soup.greedy import greedy_select, soup_io
from mixopt.soup.outdir import MARKER
from mixopt.trial import TrialResult
from tests.test_soup import build_checkpoint

K = 5


@pytest.fixture(scope="module")
def five(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("five")
    return [build_checkpoint(root / f"trial{s}", seed=10 + s) for s in range(K)]


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


def test_soup_io_reports_uniform_and_greedy_costs_at_k5(five: list[Path], tmp_path: Path) -> None:
    model = weight_bytes(five[0])
    uniform, greedy = soup_io(five, tmp_path, evaluate=lambda p: 1.0)  # all kept: the worst case
    assert uniform.reads == tuple(pytest.approx(1.0) for _ in five) and uniform.models_written == 1.0
    assert greedy.reads == (2.0, 2.0, 2.0, 2.0, 2.0) and greedy.kept == K
    assert greedy.models_written == pytest.approx(K)  # the last candidate is the final soup
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
