"""MixtureOptimizer proposes exactly what it proposed when the fixture was recorded.

tests/fixtures/optimizer_golden.json holds, for bench/optimizer.py's K = 17 suite (three
``random_state`` seeds) and one multi-fidelity run with hyperparameters, every proposal of an
ask/tell sequence (batches, a failure, a partial report, a cancellation, exploitation steps) and
the final ``recommend()``, recorded by tests/fixtures/make_optimizer_golden.py before the
optimizer was split into a package. The replay tells the recorded values and compares the JSON
text of every proposal: a single changed bit in a float fails it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mixopt.optimizer import MixtureOptimizer

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "optimizer_golden.json").read_text())


def _exact(x: Any) -> str:
    return json.dumps(x, sort_keys=False)


@pytest.mark.parametrize(
    "run", FIXTURE["runs"], ids=[f"{r['objective']}-{r['random_state']}" for r in FIXTURE["runs"]]
)
def test_proposals_are_byte_identical_to_the_recorded_ones(run: dict[str, Any]) -> None:
    bounds = None if run["bounds"] is None else {t: tuple(b) for t, b in run["bounds"].items()}
    opt = MixtureOptimizer(
        run["tasks"], random_state=run["random_state"], bounds=bounds, budget=run["budget"], **run["options"]
    )
    asked: list[dict[str, Any]] = []
    for n, step in enumerate(run["steps"]):
        if step["op"] == "ask":
            out = opt.ask(step["n"])
            assert _exact(out) == _exact(step["proposals"]), f"step {n}: ask({step['n']}) differs"
            assert [opt.origin(p) for p in out] == step["origins"], f"step {n}: origins differ"
            asked += out
        elif step["op"] == "tell":
            opt.tell(asked[step["index"]], step["value"])
        elif step["op"] == "partial":
            opt.tell_partial(asked[step["index"]], step["value"], step["fraction"])
        else:
            opt.cancel(asked[step["index"]])
    rec = opt.recommend()
    assert rec is not None
    got = {"proposal": rec.proposal, "mean": rec.mean, "sd": rec.sd, "source": rec.source}
    assert _exact(got) == _exact(run["recommend"])
