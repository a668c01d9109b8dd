"""The report page: one self-contained HTML file (plotly.js inlined), readable from disk or inline in
the MLflow UI as an artifact of the sweep run.

Each section is built alone; one that cannot be drawn (no model yet, an old sweep without
per-score models, bounds too tight to sample) says why in its place and the others still show.
The numbers come from :mod:`mixopt.report.analysis`.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from mixopt.optimizer import MixtureOptimizer
from mixopt.optimizer.recommendation import RecommendationRecord, recommendation_record
from mixopt.report import analysis
from mixopt.report.data import SweepData, TrialRecord, warm_trials
from mixopt.space import project_capped_simplex

ORIGIN_COLOURS = {
    "seed": "#1f77b4",
    "bo": "#ff7f0e",
    "exploit": "#2ca02c",
    "random": "#9467bd",
    "rerun": "#8c564b",
    "verify": "#d62728",
    "warm": "#7f7f7f",
}
# Share of the mixture moved onto a task for the interference map and the importance bars: small
# enough to stay near the recommendation, large enough that the change stands above the GP's noise.
STEP = 0.1
# Evidence gates: a section explains the weights' effect on a quantity only when the reported
# posterior gives P(the weights move it by at least half a trial's noise sd) >= EVIDENCE; an
# interference cell is coloured only when P(change > 0) >= SIGN_EVIDENCE or <= 1 - SIGN_EVIDENCE.
EVIDENCE = 0.9
SIGN_EVIDENCE = 0.9
SECTIONS = (
    ("verification", "Verification and the recommended mixture"),
    ("objective", "Objective by trial"),
    ("parallel", "Parallel coordinates: weights and hyperparameters against the objective"),
    ("importance", "Weight importance"),
    ("interference", "Task-interference map"),
    ("tradeoffs", "Per-task trade-offs and the Pareto front"),
    ("line", "GP posterior from the baseline to the recommendation"),
)

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em} td,th{border:1px solid #ddd;padding:.2em .5em;text-align:right}
th{background:#f4f4f4} .note{color:#555;font-style:italic} .verdict{font-size:1.1em;font-weight:600}
.meta{color:#555;font-size:.9em}
"""
# Errors thrown by any script on the page are written into #js-errors, so a headless browser's
# dumped DOM shows them (tests/test_report_ui.py).
_ONERROR = (
    "window.addEventListener('error',function(e){var p=document.getElementById('js-errors');"
    "if(p){p.textContent+=String(e.message)+'\\n';}});"
)


def _e(x: Any) -> str:
    return html.escape(str(x))


def _fmt(x: Any, digits: int = 4) -> str:
    if isinstance(x, float):
        return f"{x:.{digits}g}" if math.isfinite(x) else str(x)
    return str(x)


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class _Page:
    """Figures become divs; plotly.js goes in once, at the top. ``figures``, when given, collects each
    figure as ``(name, figure)``, named by its section (``parallel``, ``tradeoffs-2``...)."""

    def __init__(self, figures: list[tuple[str, Any]] | None = None) -> None:
        self.n = 0
        self.section = ""
        self.figures = figures

    def fig(self, fig: Any) -> str:
        self.n += 1
        fig.update_layout(margin={"l": 60, "r": 30, "t": 40, "b": 60}, template="plotly_white")
        if self.figures is not None:
            count = sum(name.split("-")[0] == self.section for name, _ in self.figures)
            self.figures.append((self.section + (f"-{count + 1}" if count else ""), fig))
        return fig.to_html(
            full_html=False, include_plotlyjs=False, div_id=f"fig{self.n}", config={"displaylogo": False}
        )


# --------------------------------------------------------------------------- the model


def _optimizer(data: SweepData, opt: MixtureOptimizer | None) -> MixtureOptimizer | None:
    if opt is not None or data.state is None:
        return opt
    return MixtureOptimizer.from_state_dict(data.state)


def _recommendation(data: SweepData, opt: MixtureOptimizer | None) -> RecommendationRecord | None:
    """recommended.json's record (a finished sweep), else the optimizer's recommendation now."""
    if data.recommended is not None:
        return RecommendationRecord.from_json(data.recommended)
    if opt is None:
        return None
    return recommendation_record(opt)


def _has_score_models(opt: MixtureOptimizer | None) -> str | None:
    """None when the optimizer has per-score models to predict from, else why not."""
    if opt is None:
        return "the sweep recorded no optimizer state yet"
    if not hasattr(opt, "predict_scores") or not hasattr(opt, "predict_joint"):
        return "this optimizer has no per-score models (a sweep from before per-task scores)"
    best = opt.best()
    if best is None:
        return "no trial has finished yet"
    try:
        opt.predict_scores([best[0]])
    except (RuntimeError, ValueError) as e:
        return f"no per-score models to predict from: {e}"
    return None


# --------------------------------------------------------------------------- sections


def _verification(data: SweepData, opt: MixtureOptimizer | None, page: _Page) -> str:
    rec = _recommendation(data, opt)
    parts = []
    ver = (data.recommended or {}).get("verification")
    if ver is not None:
        lo, hi = ver.get("ci95") or [None, None]
        parts.append(f'<p class="verdict">{_e(ver.get("summary", ""))}</p>')
        parts.append(
            _table(
                ["recommended − baseline", "95% interval", "seeds", "pairs finished", "seed sd"],
                [
                    [
                        ver.get("diff") if ver.get("diff") is not None else "–",
                        f"{_fmt(lo)} .. {_fmt(hi)}" if lo is not None else "–",
                        ", ".join(map(str, ver.get("seeds", []))),
                        len(ver.get("pairs", [])),
                        ver.get("seed_sd") if ver.get("seed_sd") is not None else "–",
                    ]
                ],
            )
        )
        if ver.get("pairs"):
            parts.append(
                _table(
                    ["seed", "recommended", "baseline", "difference"],
                    [
                        [p["seed"], p["recommended"], p["baseline"], p["recommended"] - p["baseline"]]
                        for p in ver["pairs"]
                    ],
                )
            )
        base = ver.get("baseline") or {}
        parts.append(f"<p>baseline: {_e(base.get('source', '?'))}</p>")
    elif data.run_status == "RUNNING":
        parts.append(
            _note(
                "the sweep is still running: no verification yet; the recommendation below is the model's now"
            )
        )
    else:
        parts.append(_note("this sweep ran no verification stage (verify.seeds: 0) or stopped before it"))
    if rec is None:
        parts.append(_note("no trial has finished yet: nothing to recommend"))
        return "".join(parts)
    proposal = rec.proposal
    sd = rec.sd_pred
    pred = f"{_fmt(rec.mean_pred)}" + (f" ± {_fmt(sd)}" if sd is not None else "")
    if rec.trials is not None:
        pred += f" from {rec.trials} trials"
        if rec.noise_sd is not None:
            pred += f" (trial noise sd {_fmt(rec.noise_sd)})"
    what = "GP posterior-mean maximiser" if rec.source == "posterior_mean" else "best observed trial"
    parts.append(f"<p>recommended mixture ({_e(what)}), predicted objective {_e(pred)}:</p>")
    parts.append(_table(list(proposal), [[proposal[k] for k in proposal]]))
    return "".join(parts)


def _all_trials(data: SweepData, opt: MixtureOptimizer | None) -> list[TrialRecord]:
    warm = warm_trials(opt) if opt is not None and data.warm_source else []
    return warm + data.trials


def _objective(data: SweepData, opt: MixtureOptimizer | None, page: _Page) -> str:
    trials = _all_trials(data, opt)
    if not trials:
        return _note("no trial recorded yet")
    ids = [t.trial_id for t in trials]
    fig = go.Figure()
    for origin in dict.fromkeys(t.origin for t in trials):
        sel = [t for t in trials if t.origin == origin and t.objective is not None]
        fig.add_trace(
            go.Scatter(
                x=[t.trial_id for t in sel],
                y=[t.objective for t in sel],
                mode="markers",
                name=origin,
                marker={"size": 10, "color": ORIGIN_COLOURS.get(origin, "#000")},
                text=[t.run_id or "reused from an earlier sweep" for t in sel],
                hovertemplate="%{x}: %{y:.4f}<br>run %{text}<extra>" + origin + "</extra>",
            )
        )
    search = [t for t in trials if t.stage != "verify"]
    fig.add_trace(
        go.Scatter(
            x=[t.trial_id for t in search],
            y=analysis.best_so_far([t.objective for t in search]),
            mode="lines",
            line={"shape": "hv", "color": "#444", "dash": "dot"},
            name="best so far",
        )
    )
    failed = [t for t in trials if t.status == "FAILED"]
    if failed:
        lo = min((t.objective for t in trials if t.objective is not None), default=0.0)
        fig.add_trace(
            go.Scatter(
                x=[t.trial_id for t in failed],
                y=[lo] * len(failed),
                mode="markers",
                name="failed",
                marker={"symbol": "x", "color": "red", "size": 10},
            )
        )
    fig.update_layout(
        xaxis={"title": "trial (MLflow trial id)", "categoryorder": "array", "categoryarray": ids},
        yaxis={"title": "objective"},
        height=420,
    )
    running = sum(t.status == "RUNNING" for t in trials)
    finished = sum(t.objective is not None for t in trials)
    note = f"{len(trials)} trials, {finished} with an objective" + (
        f"; {running} trial(s) still running" if running else ""
    )
    return page.fig(fig) + _note(note)


def _parallel(data: SweepData, opt: MixtureOptimizer | None, page: _Page) -> str:
    done = [t for t in _all_trials(data, opt) if t.objective is not None and t.proposal]
    if len(done) < 2:
        return _note("fewer than 2 finished trials")
    dims = []
    keys = list(data.tasks) + [k for k in done[0].proposal if k not in data.tasks]
    for k in keys:
        vals = [t.proposal.get(k) for t in done]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            label = f"w.{k}" if k in data.tasks else k
            rng = [0, 1] if k in data.tasks else [min(vals), max(vals)]
            dims.append({"label": label, "values": vals, "range": rng})
        else:
            cats = sorted({str(v) for v in vals})
            dims.append(
                {
                    "label": k,
                    "values": [cats.index(str(v)) for v in vals],
                    "tickvals": list(range(len(cats))),
                    "ticktext": cats,
                }
            )
    obj = [t.objective for t in done]
    dims.append({"label": "objective", "values": obj})
    fig = go.Figure(
        go.Parcoords(line={"color": obj, "colorscale": "Viridis", "showscale": True}, dimensions=dims)
    )
    fig.update_layout(height=440)
    return page.fig(fig) + _note(f"{len(done)} finished trials")


def _evidence(opt: MixtureOptimizer, score: str | None = None) -> tuple[Any, float] | str:
    """The reported posterior of the objective (or of ``score``) and its P(the weights matter), or
    why there is none."""
    try:
        predictive = opt.predictive(score)
    except (RuntimeError, ValueError) as e:
        return f"not available: {e}"
    return predictive, predictive.p_matters()


def _too_few(what: str, p: float, trials: int) -> str:
    return _note(
        f"not enough trials to tell: P(the weights move {what} by at least half a trial's noise sd) = "
        f"{p:.2f} from {trials} trials, below {EVIDENCE:.2f}; nothing is drawn until the trials show an effect"
    )


def _importance(data: SweepData, opt: MixtureOptimizer | None, page: _Page) -> str:
    if opt is None:
        return _note("the sweep recorded no optimizer state yet")
    found = _evidence(opt)
    if isinstance(found, str):
        return _note(found)
    predictive, p = found
    if p < EVIDENCE:
        return _too_few("the objective", p, predictive.trials)
    rec = _recommendation(data, opt)
    hyper = {k: v for k, v in (rec.proposal if rec else {}).items() if k not in data.tasks}
    tasks = list(opt.tasks)
    try:
        imp = analysis.weight_importance(predictive.sample, tasks, opt.space.lower, opt.space.upper, hyper)
    except (RuntimeError, ValueError) as e:
        return _note(f"not available: {e}")
    err = {
        "type": "data",
        "symmetric": False,
        "array": (imp.high - imp.mean).tolist(),
        "arrayminus": (imp.mean - imp.low).tolist(),
    }
    fig = go.Figure(go.Bar(x=tasks, y=imp.mean.tolist(), error_y=err, marker_color="#1f77b4"))
    fig.update_layout(yaxis={"title": "first-order index S_i"}, height=360)
    text = (
        f"From {predictive.trials} trials (P(the weights matter) = {p:.2f}). S_i = Var(E[f | w_i]) / Var(f) over "
        "mixtures drawn uniformly from the bounded simplex: the share of the objective's variance that task i's "
        "weight explains (its own effect and what its weight takes from the others); the weights are dependent, so "
        "the indices need not sum to 1. Bars: mean over joint posterior sample paths of the objective, with their "
        "5-95 % range; each index is a variance, never negative (its Monte Carlo error is subtracted, then floored at 0)."
    )
    return page.fig(fig) + _note(text)


def _interference(data: SweepData, opt: MixtureOptimizer | None, page: _Page) -> str:
    why = _has_score_models(opt)
    if why is not None:
        return _note(f"not available: {why}")
    assert opt is not None
    rec = _recommendation(data, opt)
    if rec is None:
        return _note("no recommendation yet")
    tasks, scores = list(opt.tasks), list(opt.predict_scores([rec.proposal]))
    evidence = {}
    for name in scores:
        found = _evidence(opt, name)
        if isinstance(found, str):
            return _note(found)
        evidence[name] = found
    trials = min(e[0].trials for e in evidence.values())
    if all(p < EVIDENCE for _, p in evidence.values()):
        worst = max(p for _, p in evidence.values())
        return _too_few("any task's score", worst, trials)
    eff = analysis.interference(
        opt.predict_joint, tasks, scores, rec.proposal, opt.space.lower, opt.space.upper, STEP
    )
    sure = (eff.p_positive >= SIGN_EVIDENCE) | (eff.p_positive <= 1 - SIGN_EVIDENCE)
    sure &= np.array([[evidence[s][1] >= EVIDENCE for s in scores]] * len(tasks))
    text = [
        [
            ("" if sure[i, j] else "no evidence<br>")
            + f"{eff.mean[i, j]:+.3g} ± {eff.sd[i, j]:.2g}<br>P(>0) {eff.p_positive[i, j]:.2f}"
            for j in range(len(scores))
        ]
        for i in range(len(tasks))
    ]
    shown = np.where(sure, eff.mean, np.nan)  # a cell without evidence is left grey
    bound = float(np.max(np.abs(eff.mean[sure]))) if sure.any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=[[None if math.isnan(v) else v for v in row] for row in shown.tolist()],
            x=scores,
            y=[f"{t} (+{d:.2f})" for t, d in zip(tasks, eff.step)],
            text=text,
            texttemplate="%{text}",
            colorscale="RdBu",
            zmin=-bound,
            zmax=bound,
            colorbar={"title": "Δ score"},
            hovertemplate="more %{y}<br>score %{x}: %{text}<extra></extra>",
        )
    )
    fig.update_layout(
        xaxis={"title": "scored task j"},
        yaxis={"title": "training task i (share moved)", "autorange": "reversed"},
        plot_bgcolor="#e6e6e6",
        height=120 + 70 * len(tasks),
    )
    weak = [s for s in scores if evidence[s][1] < EVIDENCE]
    text_note = (
        f"From {trials} trials with per-task scores. Cell (i, j): predicted change of score j when a share {STEP} of "
        "the recommended mixture moves onto task i (less at a bound: the share is in the row label), posterior mean "
        "± sd of the difference, and P(change > 0). Blue: task i helps j (transfer); red: it hurts j (interference). "
        f"Grey, 'no evidence': P(change > 0) between {1 - SIGN_EVIDENCE:.1f} and {SIGN_EVIDENCE:.1f}, or a score the "
        "weights are not shown to move."
    )
    if weak:
        text_note += (
            " Scores the weights are not shown to move (P below "
            + f"{EVIDENCE:.2f}): "
            + ", ".join(f"{s} ({evidence[s][1]:.2f})" for s in weak)
            + "."
        )
    return page.fig(fig) + _note(text_note)


def _tradeoffs(data: SweepData, opt: MixtureOptimizer | None, page: _Page) -> str:
    done = [t for t in _all_trials(data, opt) if t.objective is not None and t.scores]
    if not done:
        return _note("no finished trial with per-task scores yet")
    names = sorted({k for t in done for k in t.scores})
    table = np.array([[t.scores.get(k, np.nan) for k in names] for t in done])
    front = set(analysis.pareto_front(table).tolist())
    cols = min(len(names), 3)
    rows = math.ceil(len(names) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names)
    for j, name in enumerate(names):
        r, c = j // cols + 1, j % cols + 1
        for on, colour, label in ((False, "#aaa", "dominated"), (True, "#d62728", "Pareto front")):
            sel = [k for k in range(len(done)) if (k in front) == on]
            fig.add_trace(
                go.Scatter(
                    x=[table[k, j] for k in sel],
                    y=[done[k].objective for k in sel],
                    mode="markers",
                    marker={"color": colour, "size": 9, "symbol": "star" if on else "circle"},
                    text=[done[k].trial_id for k in sel],
                    name=label,
                    legendgroup=label,
                    showlegend=j == 0,
                    hovertemplate="%{text}<br>score %{x:.4f}<br>objective %{y:.4f}<extra></extra>",
                ),
                row=r,
                col=c,
            )
        fig.update_xaxes(title_text=f"score.{name}", row=r, col=c)
        fig.update_yaxes(title_text="objective", row=r, col=c)
    fig.update_layout(height=320 * rows)
    rows_ = [
        # Weights rounded as everywhere else (a weight of 4.5e-19 is 0.000 of the mixture).
        [
            done[k].trial_id,
            *[f"{float(done[k].proposal.get(t, 0.0)):.3f}" for t in data.tasks],
            *table[k].tolist(),
        ]
        for k in sorted(front)
    ]
    head = ["trial", *[f"w.{t}" for t in data.tasks], *[f"score.{n}" for n in names]]
    return (
        page.fig(fig)
        + _note(f"{len(done)} finished trials with per-task scores")
        + "<p>Mixtures on the per-task Pareto front (no other trial scores at least as well on every task):</p>"
        + _table(head, rows_)
    )


def _baseline(data: SweepData, opt: MixtureOptimizer) -> tuple[dict[str, Any], str]:
    ver = (data.recommended or {}).get("verification") or {}
    if ver.get("baseline"):
        return dict(ver["baseline"]["proposal"]), f"baseline ({ver['baseline'].get('source', '?')})"
    tasks = list(opt.tasks)
    w = project_capped_simplex(np.full(len(tasks), 1.0 / len(tasks)), opt.space.lower, opt.space.upper)
    return dict(zip(tasks, map(float, w))), "uniform mixture"


def _line(data: SweepData, opt: MixtureOptimizer | None, page: _Page) -> str:
    if opt is None:
        return _note("the sweep recorded no optimizer state yet")
    rec = _recommendation(data, opt)
    if rec is None:
        return _note("no recommendation yet")
    start, label = _baseline(data, opt)
    try:
        t, mean, sd = analysis.along_line(opt, start, rec.proposal, list(opt.tasks))
    except RuntimeError as e:
        return _note(f"not available yet: {e}")
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=np.r_[t, t[::-1]].tolist(),
            y=np.r_[mean + 2 * sd, (mean - 2 * sd)[::-1]].tolist(),
            fill="toself",
            fillcolor="rgba(31,119,180,0.2)",
            line={"width": 0},
            name="mean ± 2 sd",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=t.tolist(), y=mean.tolist(), mode="lines", name="posterior mean", line={"color": "#1f77b4"}
        )
    )
    pairs = ((data.recommended or {}).get("verification") or {}).get("pairs") or []
    if pairs:
        fig.add_trace(
            go.Scatter(
                x=[0.0] * len(pairs),
                y=[p["baseline"] for p in pairs],
                mode="markers",
                name="verified: baseline seeds",
                marker={"color": "#7f7f7f", "size": 9},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[1.0] * len(pairs),
                y=[p["recommended"] for p in pairs],
                mode="markers",
                name="verified: recommended seeds",
                marker={"color": "#d62728", "size": 9},
            )
        )
    fig.update_layout(
        xaxis={
            "title": f"t: (1 − t) · {label} + t · recommended",
            "tickvals": [0, 0.25, 0.5, 0.75, 1],
            "ticktext": [label, "0.25", "0.5", "0.75", "recommended"],
        },
        yaxis={"title": "objective"},
        height=400,
    )
    trials = opt.predictive().trials
    return page.fig(fig) + _note(
        f"The reported posterior of the objective, from {trials} trials: mean ± 2 sd."
    )


_BUILDERS: dict[str, Callable[[SweepData, Any, _Page], str]] = {
    "verification": _verification,
    "objective": _objective,
    "parallel": _parallel,
    "importance": _importance,
    "interference": _interference,
    "tradeoffs": _tradeoffs,
    "line": _line,
}


def render(
    data: SweepData, opt: MixtureOptimizer | None = None, figures: list[tuple[str, Any]] | None = None
) -> str:
    """The report page of ``data``; ``opt``: the sweep's optimizer (default: rebuilt from its state);
    ``figures``: a list that collects the page's figures (see :class:`_Page`)."""
    opt = _optimizer(data, opt)
    page = _Page(figures)
    body = []
    for key, title in SECTIONS:
        page.section = key
        try:
            inner = _BUILDERS[key](data, opt, page)
        except Exception as e:  # one section must not cost the report the others
            inner = _note(f"could not be drawn: {type(e).__name__}: {e}")
        body.append(f'<section id="{key}" data-section="{key}"><h2>{_e(title)}</h2>{inner}</section>')
    n_done = sum(t.status == "FINISHED" for t in data.trials)
    warm = data.warm_source
    meta = (
        f"experiment {_e(data.experiment)} · sweep run {_e(data.run_id)} ({_e(data.run_status)}) · "
        f"{n_done} of {len(data.trials)} trials finished · MLflow {_e(data.uri)}"
    )
    if warm:
        meta += (
            f" · warm-started from {_e(warm.get('name', '?'))} ({_e(warm.get('reused', '?'))} trials reused)"
        )
    title = f"mixopt report: {data.experiment}"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<script>{_ONERROR}</script><style>{_CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        f"<h1>{_e(title)}</h1><p class='meta'>{meta}</p>{''.join(body)}"
        "<pre id='js-errors' style='color:red'></pre>"
        f"<script type='application/json' id='mixopt-report'>{_e(json.dumps({'sections': [k for k, _ in SECTIONS]}))}</script>"
        "</body></html>"
    )
