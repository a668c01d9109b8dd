"""bench/optimizer.py's acquisition stream: the same seed phase, other acquisition draws, and stream 0
is mixopt itself."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from mixopt import MixtureOptimizer

TASKS = ["retrieval_0", "sts_1", "classification_2", "retrieval_3"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_optimizer", Path(__file__).parents[1] / "bench" / "optimizer.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bowl(p: dict) -> float:
    """A quadratic bowl with its maximum 0 at (0.4, 0.3, 0.2, 0.1)."""
    return -sum((p[t] - c) ** 2 for t, c in zip(TASKS, (0.4, 0.3, 0.2, 0.1)))


def seeds_then_first_bo(opt: MixtureOptimizer) -> tuple[list[dict], dict]:
    seeds = opt.ask(4)
    for p in seeds:
        opt.tell(p, bowl(p))
    return seeds, opt.ask(1)[0]


def test_an_acquisition_stream_redraws_only_the_acquisition_starts(bench) -> None:
    runs = {
        n: MixtureOptimizer(TASKS, n_seeds=4, random_state=3, streams=bench.AcquisitionStream(3, n))
        for n in (1, 2)
    }
    default = MixtureOptimizer(TASKS, n_seeds=4, random_state=3)
    seeds, first = zip(*(seeds_then_first_bo(o) for o in (default, *runs.values())))
    assert seeds[0] == seeds[1] == seeds[2]
    assert first[0] != first[1] and first[1] != first[2] and first[0] != first[2]
    assert all(math.isfinite(bowl(p)) and abs(sum(p.values()) - 1) < 1e-9 for p in first)
    # The key of a choice outside the acquisition is the optimizer's own.
    assert runs[1].streams.key("seed", 0) == default.streams.key("seed", 0)
    assert runs[1].streams.key("acq", 0) == [*default.streams.key("acq", 0), 1]
    with pytest.raises(ValueError, match="n >= 1"):
        bench.AcquisitionStream(3, 0)


def test_stream_0_is_mixopt_itself(bench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "ACQ_STREAM", 0)
    assert "streams" not in bench._options(3)
    monkeypatch.setattr(bench, "ACQ_STREAM", 2)
    streams = bench._options(3)["streams"]
    assert isinstance(streams, bench.AcquisitionStream) and (streams.random_state, streams.n) == (3, 2)
    assert np.isfinite(streams.seed("acq", 0))
