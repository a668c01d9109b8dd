"""The test-set table of the real-data benchmark, from its cache (bench/real.py documents the cache).

Rows: the base model zero-shot; each single-task expert; the uniform mixture and the recommended
one (the verification's two arms: the same seeds); the top-5 soups, uniform and greedy (one per
replicate: the sweep's own five trials, then the same five mixtures retrained with fresh seeds);
the best ingredient of each replicate (its top trial by dev objective); and, when an older cache
holds one, the top-5 soup ranked by the GP posterior (``--rank posterior``, an option no longer in
mixopt; its row says so). Columns: every test metric, the test mean (mean of each task's own metric) and the
dev objective; a cell is the mean over the row's seeds (or replicates) ± their sd, n beside.

Below it, the goals, each with its spread: the recommended mixture against the uniform one on the
test mean, paired by seed, with its 95 % t interval (and the verification's own interval on dev);
each soup against its best ingredient, paired by replicate; every row whose score on a task lies
below the base model's by more than the row's seed sd (forgetting); the base model's STS-B test
Spearman beside the published figure; the wall times.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from mixopt.human import duration
from mixopt.sweep.verify import paired_interval

# all-MiniLM-L6-v2's STS-B test Spearman (cosine) as published with the model: about 0.82.
PUBLISHED_STSB = 0.82


def _mean_sd(xs: Sequence[float]) -> tuple[float, float | None]:
    m = statistics.fmean(xs)
    return m, (statistics.stdev(xs) if len(xs) > 1 else None)


def _cell(xs: Sequence[float]) -> str:
    if not xs:
        return "–"
    m, sd = _mean_sd(xs)
    return f"{m:.4f}" if sd is None else f"{m:.4f} ± {sd:.4f}"


def _objective_ranked(soup: dict[str, Any]) -> bool:
    """A soup of trials ranked by their own objective (a record without "rank" is one)."""
    return soup.get("rank", "objective") == "objective"


def rows(cache: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(label, members)`` per table row; a member has ``test`` scores (or None), ``objective``, ``seed``."""
    trials = cache.get("trials", [])
    soups = cache.get("soups", {})
    by_id = {t["id"]: t for t in trials}
    out: list[tuple[str, list[dict[str, Any]]]] = []
    base = cache.get("base", {})
    out.append(
        (
            "base model, zero-shot",
            [{"test": base.get("test"), "objective": base.get("objective"), "seed": None}],
        )
    )
    for task in cache.get("tasks", []):
        experts = [t for t in trials if t["stage"] == "expert" and t["mixture"].get(task["name"]) == 1.0]
        if experts:
            out.append((f"expert: {task['name']} only", experts))
    for stage, label in (("verify-baseline", "uniform"), ("verify-recommended", "recommended")):
        arm = [t for t in trials if t["stage"] == stage]
        if arm:
            w = ", ".join(f"{k} {v:.2f}" for k, v in arm[0]["mixture"].items())
            out.append((f"{label} ({w})", arm))
    k = cache.get("soup_k", 5)
    for method, label in ((m, f"top-{k} soup, {m}") for m in ("uniform", "greedy")):
        members = [
            dict(s, seed=s["replicate"])
            for s in soups.values()
            if s["method"] == method and _objective_ranked(s)
        ]
        if members:
            out.append((label, sorted(members, key=lambda s: s["seed"])))
    best = {}
    for s in soups.values():
        if _objective_ranked(s):
            best[s["replicate"]] = dict(by_id[s["best_ingredient"]], seed=s["replicate"])
    if best:
        out.append(("best ingredient (top-1 by dev)", [best[k] for k in sorted(best)]))
    post = [dict(s, seed=s["replicate"]) for s in soups.values() if not _objective_ranked(s)]
    if post:
        out.append((f"top-{k} soup, ranked by posterior (a removed option)", post))
    return out


def render(cache: dict[str, Any], full: bool = True) -> str:
    """The table and the lines below it, as markdown."""
    cols = cache.get("test_columns", [])
    head = "| model | n | " + " | ".join(cols) + " | test mean | dev objective |"
    lines = [head, "|---|---:|" + "---:|" * (len(cols) + 2)]
    table = rows(cache)
    for label, members in table:
        tested = [m["test"] for m in members if m.get("test")]
        dev = [m["objective"] for m in members if m.get("objective") is not None]
        cells = [_cell([t[c] for t in tested]) for c in cols + ["mean"]]
        lines.append(f"| {label} | {max(len(tested), 1)} | " + " | ".join(cells) + f" | {_cell(dev)} |")
    lines.append("")
    lines += goals(cache, table)
    lines += timing(cache)
    return "\n".join(lines)


def _paired(
    a: list[dict[str, Any]], b: list[dict[str, Any]], key: str = "seed"
) -> tuple[float, float | None, float | None, int] | None:
    """Mean of ``test mean(a) - test mean(b)`` over members paired by ``key``, its 95 % t interval, n."""
    bb = {m[key]: m for m in b if m.get("test")}
    diffs = [m["test"]["mean"] - bb[m[key]]["test"]["mean"] for m in a if m.get("test") and m[key] in bb]
    if not diffs:
        return None
    mean, lo, hi = paired_interval(diffs)
    return mean, lo, hi, len(diffs)


def _interval(p: tuple[float, float | None, float | None, int]) -> str:
    mean, lo, hi, n = p
    ci = f"95% CI {lo:+.4f}..{hi:+.4f}" if lo is not None else "one pair, no interval"
    verdict = "met" if mean >= 0 else "missed"
    sig = "" if lo is None else (", beyond seed noise" if lo > 0 or hi < 0 else ", within seed noise")
    return f"{mean:+.4f} ({ci}, {n} pairs{sig}): {verdict}"


def goals(cache: dict[str, Any], table: list[tuple[str, list[dict[str, Any]]]]) -> list[str]:
    out = []
    by = dict(table)
    trials = cache.get("trials", [])
    rec = [t for t in trials if t["stage"] == "verify-recommended"]
    uni = [t for t in trials if t["stage"] == "verify-baseline"]
    p = _paired(rec, uni)
    if p:
        out.append(f"- Recommended − uniform, test mean, paired by seed: {_interval(p)}.")
    ver = (cache.get("verification") or {}).get("verification")
    if ver:
        lo, hi = ver["ci95"]
        ci = f"95% CI {lo:+.4f}..{hi:+.4f}" if lo is not None else "no interval"
        out.append(
            f"- The verification on dev (the sweep's own line): {ver['diff']:+.4f} ({ci}, "
            f"{len(ver['pairs'])} pairs); pooled seed sd of the dev objective {ver['seed_sd'] or float('nan'):.4f}."
        )
    best = by.get("best ingredient (top-1 by dev)")
    k = cache.get("soup_k", 5)
    for label in (f"top-{k} soup, uniform", f"top-{k} soup, greedy"):
        if label in by and best:
            p = _paired(by[label], best)
            if p:
                out.append(f"- {label} − best ingredient, test mean, paired by replicate: {_interval(p)}.")
    base = cache.get("base", {}).get("test")
    if base:
        own = [f"{t['name']}/{t['metric']}" for t in cache.get("tasks", [])]
        below = []
        for label, members in table[1:]:
            tested = [m["test"] for m in members if m.get("test")]
            for col in own:
                xs = [t[col] for t in tested]
                if len(xs) < 2:
                    continue
                m, sd = _mean_sd(xs)
                if m < base[col] - sd:
                    below.append(f"{label}: {col} {m:.4f} < base {base[col]:.4f} − sd {sd:.4f}")
        out.append(
            "- Below the base model by more than the row's seed sd: "
            + ("; ".join(below) if below else "none (every row with ≥ 2 seeds, every task).")
        )
        stsb = next((c for c in cache.get("test_columns", []) if c.endswith("/spearman")), None)
        if stsb:
            out.append(
                f"- Base model STS-B test Spearman {base[stsb]:.4f}; published for all-MiniLM-L6-v2: about {PUBLISHED_STSB}."
            )
    return out


def timing(cache: dict[str, Any]) -> list[str]:
    t = cache.get("timing", {})
    sweep = [x for x in cache.get("trials", []) if x["id"].startswith("sweep:") and x.get("wall_s")]
    out = []
    if sweep:
        wall = statistics.median(x["wall_s"] for x in sweep)
        train = [x["train_s"] for x in sweep if x.get("train_s")]
        ev = [x["eval_s"] for x in sweep if x.get("eval_s")]
        out.append(
            f"- Wall per sweep trial (median of {len(sweep)}, {cache.get('max_concurrent')} at a time): "
            f"{duration(wall)}"
            + (
                f" (train {duration(statistics.median(train))}, dev evaluation {duration(statistics.median(ev))})"
                if train and ev
                else ""
            )
            + "."
        )
    parts = [
        f"{k[:-2]} {duration(v)}" for k, v in t.items() if k.endswith("_s") and isinstance(v, (int, float))
    ]
    if cache.get("sweep_wall_s"):
        parts.insert(0, f"sweep as recorded by MLflow {duration(cache['sweep_wall_s'])}")
    if parts:
        out.append("- Wall per stage: " + ", ".join(parts) + ".")
    loads = t.get("load", [])
    if loads:
        out.append(
            "- Load average (1 min) at each stage's start: "
            + ", ".join(f"{n} {v:.1f}" for n, v in loads)
            + "."
        )
    return out


def reads_line(summary: dict[str, Any]) -> str:
    opens = summary["opens_by_phase"]
    test = {ph: c.get("test", 0) for ph, c in opens.items() if c.get("test")}
    return (
        "Test splits opened only in the final evaluation: "
        + (", ".join(f"{n} opens in {ph}" for ph, n in test.items()) or "never")
        + f"; the audit saw {summary['processes_reading_dev']} processes besides this one read dev splits."
    )


def headline(cache: dict[str, Any]) -> str:
    """One line: the recommended and uniform mixtures and the soup on the test mean, with spreads."""
    parts = []
    for label, members in rows(cache):
        xs = [m["test"]["mean"] for m in members if m.get("test")]
        if xs and not label.startswith(("expert", "best")) and "removed option" not in label:
            m, sd = _mean_sd(xs)
            parts.append(f"{label.split(' (')[0]} {m:.4f}" + ("" if sd is None else f" ± {sd:.4f}"))
    return "test mean: " + "; ".join(parts) if parts else ""
