"""MixtureOptimizer proposes exactly what it proposed when the fixture was recorded.

tests/fixtures/optimizer_golden.json holds, for bench/optimizer.py's K = 17 suite (three
``random_state`` seeds) and one multi-fidelity run with hyperparameters, every proposal of an
ask/tell sequence (batches, a failure, a partial report, a cancellation, exploitation steps) and
the final ``recommend()``, recorded by tests/fixtures/make_optimizer_golden.py before the
optimizer was split into a package (the recommendation's predicted mean and sd: from the reported
posterior, see that script). The replay tells the recorded values and compares the JSON
text of every proposal: a single changed bit in a float fails it. It runs in a fresh process in
the fixture's pinned floating-point environment (tests/fixtures/golden_env.py), so the bits do
not depend on the processor's vector units.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))

from golden_env import run_pinned  # noqa: E402  (tests/fixtures/golden_env.py)

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "optimizer_golden.json").read_text())


def _exact(x: Any) -> str:
    return json.dumps(x, sort_keys=False)


def replay(run: dict[str, Any]) -> dict[str, Any]:
    """Replay one recorded run: each ask's proposals and origins, and the final recommendation."""
    from mixopt.optimizer import MixtureOptimizer

    bounds = None if run["bounds"] is None else {t: tuple(b) for t, b in run["bounds"].items()}
    opt = MixtureOptimizer(
        run["tasks"], random_state=run["random_state"], bounds=bounds, budget=run["budget"], **run["options"]
    )
    asked: list[dict[str, Any]] = []
    asks: list[dict[str, Any]] = []
    for step in run["steps"]:
        if step["op"] == "ask":
            out = opt.ask(step["n"])
            asks.append({"proposals": out, "origins": [opt.origin(p) for p in out]})
            asked += out
        elif step["op"] == "tell":
            opt.tell(asked[step["index"]], step["value"])
        elif step["op"] == "partial":
            opt.tell_partial(asked[step["index"]], step["value"], step["fraction"])
        else:
            opt.cancel(asked[step["index"]])
    rec = opt.recommend()
    assert rec is not None
    return {
        "asks": asks,
        "recommend": {"proposal": rec.proposal, "mean": rec.mean, "sd": rec.sd, "source": rec.source},
    }


@pytest.mark.parametrize(
    "index",
    range(len(FIXTURE["runs"])),
    ids=[f"{r['objective']}-{r['random_state']}" for r in FIXTURE["runs"]],
)
def test_proposals_are_byte_identical_to_the_recorded_ones(index: int) -> None:
    run = FIXTURE["runs"][index]
    got = json.loads(run_pinned([__file__, str(index)]).stdout)
    recorded = [(n, s) for n, s in enumerate(run["steps"]) if s["op"] == "ask"]
    assert len(got["asks"]) == len(recorded)
    for (n, step), out in zip(recorded, got["asks"]):
        assert _exact(out["proposals"]) == _exact(step["proposals"]), f"step {n}: ask({step['n']}) differs"
        assert out["origins"] == step["origins"], f"step {n}: origins differ"
    assert _exact(got["recommend"]) == _exact(run["recommend"])


if __name__ == "__main__":
    # json.dumps writes a float's shortest repr, which round-trips its exact bits.
    print(json.dumps(replay(FIXTURE["runs"][int(sys.argv[1])])))
