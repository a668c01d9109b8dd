"""Model soup: streaming average, checks, greedy selection, MLflow selection/logging/registry, CLI.

References are independent of the code under test: numpy/float64 means of hand-made tensors,
state_dicts averaged in a plain loop and loaded into a fresh SentenceTransformer, safetensors'
own reader, and MLflow runs created here with the real client following the sweep's conventions.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from mixopt.soup import (
    Ingredient,
    SoupError,
    format_table,
    greedy_select,
    make_soup,
    parse_runs,
    select_ingredients,
    soup_from_sweep,
)
from mixopt.soup.average import average_checkpoints, average_file
from mixopt.soup.checkpoints import CheckpointError, read_header
from mixopt.trial import TrialResult
from trainers.tiny_model import build_tokenizer, write_tiny_model

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
SIZES = dict(
    hidden_size=16,
    intermediate_size=32,
    head_dim=8,
    query_pre_attn_scalar=8,
    num_attention_heads=2,
    num_key_value_heads=1,
)
DIM = 16
TEXTS = ["alpha beta gamma", "alpha beta delta", "zeta eta", "theta iota kappa"]


def build_checkpoint(out: Path, seed: int) -> Path:
    """A tiny sentence-transformers checkpoint shaped like the trainer's: Gemma3 + Pool + Dense + Dense + Norm."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    base = write_tiny_model(out.parent / f".base-{out.name}", build_tokenizer(WORDS), seed=seed, **SIZES)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1000 + seed)
        modules = [
            Transformer(str(base), max_seq_length=16),
            Pooling(DIM, "mean"),
            Dense(DIM, 4 * DIM, bias=False, activation_function=torch.nn.Identity()),
            Dense(4 * DIM, DIM, bias=False, activation_function=torch.nn.Identity()),
            Normalize(),
        ]
        SentenceTransformer(modules=modules, device="cpu").save(str(out), safe_serialization=True)
    shutil.rmtree(base)
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("ckpts")
    return [build_checkpoint(root / f"trial{s}", seed=s) for s in range(4)]


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


def copy_ckpt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def ingredient(ckpt: Path, value: float, run_id: str | None = None) -> Ingredient:
    return Ingredient(
        run_id=run_id or f"{abs(hash(ckpt)) % 16**12:012x}", trial_id=ckpt.name, checkpoint=ckpt, value=value
    )


def hand_state_dict_mean(paths: list[Path]) -> dict[str, torch.Tensor]:
    """The reference: every checkpoint loaded by sentence-transformers, averaged key by key in a loop."""
    from sentence_transformers import SentenceTransformer

    dicts = [SentenceTransformer(str(p), device="cpu").state_dict() for p in paths]
    out = {}
    for key in dicts[0]:
        total = torch.zeros_like(dicts[0][key], dtype=torch.float64)
        for d in dicts:
            total += d[key].double()
        out[key] = (total / len(dicts)).to(dicts[0][key].dtype)
    return out


def reference_model(paths: list[Path]):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(paths[0]), device="cpu")
    model.load_state_dict(hand_state_dict_mean(paths))
    return model


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- averaging


def test_average_file_against_float64_mean_of_hand_made_tensors(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    k = 3
    sources = []
    for i in range(k):
        tensors = {
            "w32": torch.randn(7, 5, generator=g),
            "w16": torch.randn(4, 3, 2, generator=g).half(),
            "w64": torch.randn(9, generator=g).double(),
            "wbf": torch.randn(6, 4, generator=g).bfloat16(),
            "scalar": torch.tensor(float(i) * 0.5),
            "ids": torch.arange(5, dtype=torch.int64),  # integer buffer: equal everywhere, copied
        }
        save_file(tensors, tmp_path / f"s{i}.safetensors", metadata={"format": "pt"})
        sources.append(tmp_path / f"s{i}.safetensors")
    header = read_header(sources[0])
    for chunk_bytes in (8, 64, 1 << 20):  # 8 bytes: every row (or element) is its own chunk
        dest = tmp_path / f"out{chunk_bytes}.safetensors"
        average_file(sources, dest, header, [f"s{i}" for i in range(k)], "x.safetensors", chunk_bytes)
        got = load_file(dest)  # safetensors' own reader parses the streamed file
        inputs = [load_file(s) for s in sources]
        assert set(got) == set(inputs[0])
        for name, t in got.items():
            assert t.dtype == inputs[0][name].dtype and t.shape == inputs[0][name].shape
            if name == "ids":
                assert torch.equal(t, inputs[0][name])
                continue
            ref64 = np.mean([x[name].double().numpy() for x in inputs], axis=0)
            ref = torch.from_numpy(np.asarray(ref64)).to(t.dtype)
            tol = {torch.float64: 1e-7, torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[
                t.dtype
            ]
            torch.testing.assert_close(t, ref, rtol=tol, atol=tol)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out8.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_bf16_mean_is_accumulated_in_fp32(tmp_path: Path) -> None:
    # 256 + 1 + 1 + 1 summed in bf16 stays 256 (257 rounds to even 256), mean 64; the exact mean
    # 259/4 = 64.75 rounds (ties-to-even) to 65 in bf16. Only fp32 accumulation gives 65.
    values = [256.0, 1.0, 1.0, 1.0]
    paths = []
    for i, v in enumerate(values):
        save_file({"w": torch.full((3,), v, dtype=torch.bfloat16)}, tmp_path / f"{i}.safetensors")
        paths.append(tmp_path / f"{i}.safetensors")
    naive = torch.zeros(3, dtype=torch.bfloat16)
    for v in values:
        naive += torch.full((3,), v, dtype=torch.bfloat16)
    assert float(naive[0] / 4) == 64.0
    average_file(paths, tmp_path / "out.safetensors", read_header(paths[0]), ["a", "b", "c", "d"])
    got = load_file(tmp_path / "out.safetensors")["w"]
    assert got.dtype == torch.bfloat16
    assert got.tolist() == [65.0, 65.0, 65.0]


def test_uniform_soup_loads_in_sentence_transformers_and_equals_hand_average(
    checkpoints: list[Path],
    tmp_path: Path,
) -> None:
    from sentence_transformers import SentenceTransformer

    paths = checkpoints[:3]
    out = tmp_path / "soup"
    stats = average_checkpoints(paths, out, chunk_bytes=256)  # small chunks: multi-chunk tensors
    assert stats.n_ingredients == 3 and stats.n_files == 3  # root, 2_Dense, 3_Dense
    soup = SentenceTransformer(str(out), device="cpu")
    ref = reference_model(paths)
    got, want = soup.encode(TEXTS, convert_to_tensor=True), ref.encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # and it is not simply one of its ingredients
    first = SentenceTransformer(str(paths[0]), device="cpu").encode(TEXTS, convert_to_tensor=True)
    assert (got - first).abs().max() > 1e-3
    for name in (
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
        "config_sentence_transformers.json",
    ):
        assert (out / name).read_bytes() == (paths[0] / name).read_bytes()
    assert not (out / "README.md").exists()  # the ingredient's card does not describe the soup
    assert oct(out.stat().st_mode & 0o777) != "0o700"
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- checks


def _resave(path: Path, change) -> None:
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def _edit_json(path: Path, key: str, value) -> None:
    data = json.loads(path.read_text())
    data[key] = value
    path.write_text(json.dumps(data, indent=2))


MISMATCHES = {
    "shape": (
        lambda d: _resave(
            d / "2_Dense/model.safetensors",
            lambda t: t.update({"linear.weight": torch.zeros(4 * DIM + 1, DIM)}),
        ),
        ["'linear.weight'", "2_Dense/model.safetensors", f"[{4 * DIM + 1}, {DIM}]", f"[{4 * DIM}, {DIM}]"],
    ),
    "dtype": (
        lambda d: _resave(
            d / "3_Dense/model.safetensors",
            lambda t: t.update({"linear.weight": t["linear.weight"].bfloat16()}),
        ),
        ["'linear.weight'", "3_Dense/model.safetensors", "BF16", "F32"],
    ),
    "missing tensor": (
        lambda d: _resave(d / "model.safetensors", lambda t: t.pop("norm.weight")),
        ["norm.weight", "model.safetensors"],
    ),
    "extra tensor": (
        lambda d: _resave(
            d / "2_Dense/model.safetensors", lambda t: t.update({"linear.bias": torch.zeros(4 * DIM)})
        ),
        ["linear.bias", "2_Dense/model.safetensors"],
    ),
    "missing weight file": (
        lambda d: (d / "3_Dense/model.safetensors").unlink(),
        ["3_Dense/model.safetensors"],
    ),
    "architecture": (
        lambda d: _edit_json(d / "config.json", "rms_norm_eps", 1e-3),
        ["config.json", "rms_norm_eps"],
    ),
    "modules": (
        lambda d: _edit_json(d / "1_Pooling/config.json", "pooling_mode_mean_tokens", False),
        ["1_Pooling/config.json", "pooling_mode_mean_tokens"],
    ),
    "tokenizer": (
        lambda d: (d / "tokenizer.json").write_text(
            (d / "tokenizer.json").read_text().replace('"alpha"', '"alpho"')
        ),
        ["tokenizer.json", "SHA-256"],
    ),
    "pickle": (
        lambda d: torch.save({"x": torch.zeros(1)}, d / "2_Dense" / "pytorch_model.bin"),
        ["pytorch_model.bin", "pickle"],
    ),
}


@pytest.mark.parametrize("kind", sorted(MISMATCHES))
def test_every_mismatch_is_refused_naming_run_and_details(
    kind: str, checkpoints: list[Path], tmp_path: Path
) -> None:
    change, expected = MISMATCHES[kind]
    good = checkpoints[0]
    bad = copy_ckpt(checkpoints[1], tmp_path / "bad")
    change(bad)
    out = tmp_path / "soup"
    with pytest.raises(CheckpointError) as err:
        average_checkpoints([good, bad], out, labels=["run aaa (trial 0)", "run bbb (trial 1)"])
    msg = str(err.value)
    assert "run bbb (trial 1)" in msg
    for fragment in expected:
        assert fragment in msg, (fragment, msg)
    assert not out.exists() and leftovers(tmp_path) == []


def test_version_stamps_do_not_count_as_architecture(checkpoints: list[Path], tmp_path: Path) -> None:
    other = copy_ckpt(checkpoints[1], tmp_path / "other")
    _edit_json(other / "config.json", "transformers_version", "0.0.1")
    _edit_json(other / "config_sentence_transformers.json", "__version__", {"sentence_transformers": "0.0.1"})
    average_checkpoints([checkpoints[0], other], tmp_path / "soup")
    assert (tmp_path / "soup" / "model.safetensors").is_file()


def test_nan_in_an_ingredient_is_an_error_naming_run_file_and_tensor(
    checkpoints: list[Path], tmp_path: Path
) -> None:
    bad = copy_ckpt(checkpoints[2], tmp_path / "bad")

    def poison(t: dict[str, torch.Tensor]) -> None:
        t["layers.1.mlp.up_proj.weight"][3, 5] = float("nan")

    _resave(bad / "model.safetensors", poison)
    with pytest.raises(CheckpointError) as err:
        average_checkpoints(
            [checkpoints[0], bad], tmp_path / "soup", labels=["run good", "run poisoned"], chunk_bytes=128
        )
    msg = str(err.value)
    assert "run poisoned" in msg and "run good" not in msg
    assert "'layers.1.mlp.up_proj.weight'" in msg and "model.safetensors" in msg and "NaN/inf" in msg
    assert not (tmp_path / "soup").exists() and leftovers(tmp_path) == []


def test_inf_in_the_result_is_an_error(tmp_path: Path) -> None:
    # Two finite bf16 values near bf16's max overflow float32 when summed: the result check must fire.
    big = torch.full((4,), 3.0e38, dtype=torch.bfloat16)
    paths = []
    for i in range(2):
        save_file({"w": big}, tmp_path / f"{i}.safetensors")
        paths.append(tmp_path / f"{i}.safetensors")
    with pytest.raises(CheckpointError, match="'w'.*overflows"):
        average_file(paths, tmp_path / "out.safetensors", read_header(paths[0]), ["a", "b"], "f.safetensors")


def test_out_is_not_overwritten_without_force_and_replaced_with_it(
    checkpoints: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "soup"
    ings = [ingredient(checkpoints[0], 0.5), ingredient(checkpoints[1], 0.4)]
    make_soup(ings[:1], out)  # --force replaces only an earlier soup
    (out / "keep.txt").write_text("old")
    with pytest.raises(SoupError, match="already exists.*--force"):
        make_soup(ings, out)
    assert (out / "keep.txt").read_text() == "old"
    # A failing soup with --force leaves the old directory as it was.
    bad = copy_ckpt(checkpoints[1], tmp_path / "bad")
    (bad / "model.pt").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="model.pt"):
        make_soup([ings[0], ingredient(bad, 0.1)], out, force=True)
    assert (out / "keep.txt").read_text() == "old"
    make_soup(ings, out, force=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert "## Ingredients" in (out / "README.md").read_text()
    assert leftovers(tmp_path) == []
    with pytest.raises(SoupError, match="overlaps the checkpoint"):
        make_soup(ings, checkpoints[0] / "inside", force=True)


# --------------------------------------------------------------------------- greedy


def test_greedy_keeps_exactly_the_ingredients_that_do_not_lower_the_score(
    checkpoints: list[Path],
    tmp_path: Path,
) -> None:
    # Given in shuffled order; ranked by value: c0 (0.9), c1 (0.8), c2 (0.7), c3 (0.6).
    ings = {i: ingredient(checkpoints[i], v, run_id=f"{i:032x}") for i, v in enumerate([0.9, 0.8, 0.7, 0.6])}
    given = [ings[2], ings[0], ings[3], ings[1]]
    # Scores: c0 alone 0.50; +c1 0.55 (up: keep); +c2 0.54 (down: drop); +c3 0.55 (equal: keep).
    script = iter([0.50, 0.55, 0.54, 0.55])
    expected_members = [[0], [0, 1], [0, 1, 2], [0, 1, 3]]
    seen: list[list[int]] = []

    def evaluate(path: Path) -> float:
        # The directory handed to evaluate must hold the mean of exactly the expected members.
        members = expected_members[len(seen)]
        got = load_file(path / "2_Dense/model.safetensors")["linear.weight"]
        want = (
            torch.stack(
                [load_file(checkpoints[m] / "2_Dense/model.safetensors")["linear.weight"] for m in members]
            )
            .double()
            .mean(0)
            .float()
        )
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
        seen.append(members)
        return next(script)

    result = greedy_select(given, evaluate, tmp_path / "work")
    assert [i.run_id for i in result.kept] == [ings[0].run_id, ings[1].run_id, ings[3].run_id]
    assert [s.kept for s in result.steps] == [True, True, False, True]
    assert [s.soup_score for s in result.steps] == [0.50, 0.55, 0.54, 0.55]
    assert result.score == 0.55 and len(seen) == 4
    final = load_file(result.soup_dir / "model.safetensors")
    want = hand_state_dict_mean([checkpoints[0], checkpoints[1], checkpoints[3]])
    for name, t in final.items():
        torch.testing.assert_close(t, want[f"0.model.{name}"], rtol=1e-6, atol=1e-7)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [result.soup_dir.name]


def test_greedy_treats_a_nan_score_as_a_drop(checkpoints: list[Path], tmp_path: Path) -> None:
    ings = [ingredient(checkpoints[0], 0.9), ingredient(checkpoints[1], 0.8)]
    script = iter([0.3, math.nan])
    result = greedy_select(ings, lambda p: next(script), tmp_path / "w")
    assert [s.kept for s in result.steps] == [True, False] and len(result.kept) == 1


# --------------------------------------------------------------------------- MLflow


TASKS = ("pairs_a", "pairs_b")


def evaluate_pairs(path: Path) -> TrialResult:
    """A real dev evaluation for the tests: cosine similarity of two paraphrase pairs."""
    from sentence_transformers import SentenceTransformer

    e = SentenceTransformer(str(path), device="cpu").encode(TEXTS, convert_to_tensor=True)
    a, b = float(e[0] @ e[1]), float(e[2] @ e[3])
    return TrialResult(
        objective=(a + b) / 2,
        task_metrics={"pairs_a/cosine/d16": a, "pairs_b/cosine/d16": b},
        task_scores={"pairs_a": a, "pairs_b": b},
        checkpoint=path,
    )


def log_sweep(uri: str, name: str, trials: list[dict]) -> dict[str, str]:
    """Create the sweep's MLflow records as the sweep does (parent run, nested trial runs); trial_id -> run id."""
    client = MlflowClient(uri)
    existing = client.get_experiment_by_name(name)
    eid = (
        existing.experiment_id
        if existing
        else client.create_experiment(
            name, artifact_location=str(Path(uri[len("sqlite:///") :]).parent / f"art-{name}")
        )
    )
    parent = client.create_run(eid, run_name="sweep", tags={"mixopt.role": "sweep"}).info.run_id
    ids = {}
    for t in trials:
        tags = {
            "mixopt.role": "trial",
            "mlflow.parentRunId": parent,
            "mixopt.trial_id": t["id"],
            "mixopt.status": t.get("status", "FINISHED"),
        }
        if t.get("checkpoint") is not None:
            tags["mixopt.checkpoint"] = str(t["checkpoint"])
        if t.get("stopped_early"):
            tags["mixopt.stopped_early"] = "true"
        run = client.create_run(eid, run_name=t["id"], tags=tags)
        rid = run.info.run_id
        metrics = [Metric("objective", t["objective"], 0, 0)] if "objective" in t else []
        metrics += [Metric(f"score.{k}", v, 0, 0) for k, v in t.get("scores", {}).items()]
        params = [Param(f"w.{k}", repr(v)) for k, v in t.get("mixture", {}).items()]
        params += [Param("origin", "seed"), Param("seed", "0"), Param("hp.learning_rate", "0.003")]
        client.log_batch(rid, metrics=metrics, params=params)
        client.set_terminated(rid, "FAILED" if t.get("status") == "FAILED" else "FINISHED")
        ids[t["id"]] = rid
    client.set_terminated(parent, "FINISHED")
    return ids


def standard_trials(checkpoints: list[Path], tmp_path: Path) -> list[dict]:
    return [
        {
            "id": "t0",
            "checkpoint": checkpoints[0],
            "objective": 0.61,
            "scores": {"pairs_a": 0.6, "pairs_b": 0.62},
            "mixture": {"pairs_a": 0.3, "pairs_b": 0.7},
        },
        {
            "id": "t1",
            "checkpoint": checkpoints[1],
            "objective": 0.72,
            "scores": {"pairs_a": 0.7, "pairs_b": 0.74},
            "mixture": {"pairs_a": 0.5, "pairs_b": 0.5},
        },
        {
            "id": "t2",
            "checkpoint": checkpoints[2],
            "objective": 0.55,
            "scores": {"pairs_a": 0.5, "pairs_b": 0.6},
            "mixture": {"pairs_a": 0.9, "pairs_b": 0.1},
        },
        {"id": "t3", "status": "FAILED", "checkpoint": checkpoints[3], "objective": 0.99},
        {"id": "t4", "objective": 0.98, "scores": {"pairs_a": 0.9}},  # finished, but no checkpoint tag
        {"id": "t5", "checkpoint": tmp_path / "gone", "objective": 0.97},  # checkpoint deleted
        {"id": "t6", "checkpoint": checkpoints[3], "status": "RUNNING"},
        {"id": "t7", "objective": 0.4, "stopped_early": True},  # ASHA stopped it: no checkpoint
    ]


def test_selection_ranks_finished_trials_and_says_why_others_were_skipped(
    checkpoints: list[Path],
    tracking_uri: str,
    tmp_path: Path,
) -> None:
    ids = log_sweep(tracking_uri, "sel", standard_trials(checkpoints, tmp_path))
    client = MlflowClient(tracking_uri)
    sel = select_ingredients(client, "sel", "top2")
    assert [i.trial_id for i in sel.chosen] == ["t1", "t0"]
    assert sel.chosen[0].run_id == ids["t1"] and sel.chosen[0].checkpoint == checkpoints[1]
    assert sel.chosen[0].mixture == {"pairs_a": 0.5, "pairs_b": 0.5}
    assert sel.chosen[0].task_scores == {"pairs_a": 0.7, "pairs_b": 0.74}
    reasons = {s.trial_id: s.reason for s in sel.skipped}
    assert set(reasons) == {"t2", "t3", "t4", "t5", "t6", "t7"}
    assert "stopped early" in reasons["t7"]
    assert "FAILED" in reasons["t3"]
    assert "mixopt.checkpoint" in reasons["t4"]
    assert "gone" in reasons["t5"] and "missing" in reasons["t5"]
    assert "RUNNING" in reasons["t6"]
    assert "top 2" in reasons["t2"]

    every = select_ingredients(client, "sel", "all")
    assert [i.trial_id for i in every.chosen] == ["t1", "t0", "t2"]
    more = select_ingredients(client, "sel", "top9")
    assert len(more.chosen) == 3 and "only 3 usable" in more.notes[0]
    by_task = select_ingredients(client, "sel", "top1", metric="score.pairs_b")
    assert [i.trial_id for i in by_task.chosen] == ["t1"]

    explicit = select_ingredients(client, "sel", f"{ids['t2']},{ids['t0']}")
    assert [i.trial_id for i in explicit.chosen] == ["t0", "t2"]
    with pytest.raises(SoupError, match=f"{ids['t3']}.*FAILED"):
        select_ingredients(client, "sel", ids["t3"])
    with pytest.raises(SoupError, match="no MLflow experiment named 'nope'"):
        select_ingredients(client, "nope", "top5")


def test_only_the_latest_sweep_is_considered_unless_runs_are_named(
    checkpoints: list[Path],
    tracking_uri: str,
) -> None:
    older = log_sweep(
        tracking_uri,
        "two_sweeps",
        [
            {"id": "a0", "checkpoint": checkpoints[0], "objective": 0.9},
            {"id": "a1", "checkpoint": checkpoints[1], "objective": 0.8},
        ],
    )
    time.sleep(0.01)  # MLflow orders runs by start time in milliseconds
    newer = log_sweep(
        tracking_uri, "two_sweeps", [{"id": "b0", "checkpoint": checkpoints[2], "objective": 0.1}]
    )
    client = MlflowClient(tracking_uri)
    sel = select_ingredients(client, "two_sweeps", "top5")
    assert [i.run_id for i in sel.chosen] == [newer["b0"]]
    assert any("ignored 2 trial run(s) of earlier sweeps" in n for n in sel.notes)
    named = select_ingredients(client, "two_sweeps", f"{older['a0']},{newer['b0']}")
    assert [i.run_id for i in named.chosen] == [older["a0"], newer["b0"]]


def test_parse_runs() -> None:
    assert parse_runs("top5").k == 5 and parse_runs("all").kind == "all"
    assert parse_runs("abcdef0123456789, 0123456789abcdef").ids == ("abcdef0123456789", "0123456789abcdef")
    for bad in ("top0", "best3", "", "abc,abc", "xyz-not-hex"):
        with pytest.raises(SoupError, match="--runs"):
            parse_runs(bad)


def test_soup_from_sweep_evaluates_logs_registers_and_reports(
    checkpoints: list[Path],
    tracking_uri: str,
    tmp_path: Path,
) -> None:
    from sentence_transformers import SentenceTransformer

    ids = log_sweep(tracking_uri, "e2e", standard_trials(checkpoints, tmp_path))
    printed: list[str] = []
    out = tmp_path / "soup"
    selection, result = soup_from_sweep(
        None,
        experiment_name="e2e",
        tracking_uri=tracking_uri,
        runs="top2",
        out=out,
        register="tiny-soup",
        evaluate=evaluate_pairs,
        echo=printed.append,
    )
    # The soup is the average of the two best finished trials, t1 and t0.
    ref = reference_model([checkpoints[1], checkpoints[0]])
    soup = SentenceTransformer(str(out), device="cpu")
    torch.testing.assert_close(
        soup.encode(TEXTS, convert_to_tensor=True),
        ref.encode(TEXTS, convert_to_tensor=True),
        rtol=1e-5,
        atol=1e-6,
    )
    e = ref.encode(TEXTS, convert_to_tensor=True)
    want = {"pairs_a": float(e[0] @ e[1]), "pairs_b": float(e[2] @ e[3])}
    assert result.evaluation is not None
    for t in TASKS:
        assert result.evaluation.task_scores[t] == pytest.approx(want[t], abs=1e-5)
    assert "took    run " + ids["t1"] in printed[0] and "t3): trial status FAILED" in printed[0]

    # The MLflow run: role, ingredients, per-task metrics.
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.tags["mixopt.role"] == "soup" and run.info.status == "FINISHED"
    assert run.data.params["ingredients"] == f"{ids['t1']},{ids['t0']}"
    assert run.data.params["method"] == "uniform"
    for t in TASKS:
        assert run.data.metrics[f"score.{t}"] == pytest.approx(want[t], abs=1e-5)
    assert run.data.metrics["objective"] == pytest.approx((want["pairs_a"] + want["pairs_b"]) / 2, abs=1e-5)
    assert run.info.experiment_id == selection.experiment_id

    # The registry: the registered version downloads to a directory that loads and embeds the same.
    import mlflow

    name, version = result.registered
    assert name == "tiny-soup" and version == "1"
    mlflow.set_tracking_uri(tracking_uri)
    local = mlflow.artifacts.download_artifacts(f"models:/tiny-soup/{version}", dst_path=str(tmp_path / "dl"))
    reg = SentenceTransformer(local, device="cpu")
    torch.testing.assert_close(reg.encode(TEXTS, convert_to_tensor=True), e, rtol=1e-5, atol=1e-6)

    # The model card and the table put the soup's scores next to its ingredients'.
    card = (out / "README.md").read_text()
    assert ids["t1"] in card and ids["t0"] in card and ids["t2"] not in card
    assert "| 0.500 | 0.500 |" in card  # t1's mixture w.pairs_a, w.pairs_b
    assert f"{want['pairs_a']:.4f}" in card
    table = format_table(result.candidates, result.evaluation)
    lines = table.splitlines()
    assert lines[0].split() == ["run", "objective", "pairs_a", "pairs_b"]
    assert lines[2].split() == ["trial", "t1", ids["t1"][:8], "0.7200", "0.7000", "0.7400"]
    assert lines[3].split() == ["trial", "t0", ids["t0"][:8], "0.6100", "0.6000", "0.6200"]
    assert lines[4].split()[1:] == [
        f"{(want['pairs_a'] + want['pairs_b']) / 2:.4f}",
        f"{want['pairs_a']:.4f}",
        f"{want['pairs_b']:.4f}",
    ]


def test_greedy_soup_from_sweep_uses_the_evaluation(
    checkpoints: list[Path], tracking_uri: str, tmp_path: Path
) -> None:
    ids = log_sweep(tracking_uri, "greedy", standard_trials(checkpoints, tmp_path))
    calls: list[Path] = []

    def evaluate(path: Path) -> TrialResult:
        calls.append(path)
        return evaluate_pairs(path)

    _, result = soup_from_sweep(
        None,
        experiment_name="greedy",
        tracking_uri=tracking_uri,
        runs="all",
        method="greedy",
        out=tmp_path / "g",
        evaluate=evaluate,
        echo=None,
    )
    # Reference greedy: the same rule applied to independently averaged models.
    order = [1, 0, 2]  # t1, t0, t2 by objective
    kept = [order[0]]
    best = evaluate_pairs(checkpoints[order[0]]).objective
    for c in order[1:]:
        ref_dir = tmp_path / f"ref{c}"
        reference_model([checkpoints[i] for i in [*kept, c]]).save(str(ref_dir))
        s = evaluate_pairs(ref_dir).objective
        if s >= best - 1e-6:
            kept.append(c)
            best = s
    assert [i.run_id for i in result.ingredients] == [ids[f"t{i}"] for i in kept]
    assert len(calls) == 3 and result.evaluation.objective == pytest.approx(best, abs=1e-5)
    run = MlflowClient(tracking_uri).get_run(result.run_id)
    assert run.data.params["method"] == "greedy" and run.data.params["n_ingredients"] == str(len(kept))


def test_cli_soup(
    checkpoints: list[Path], tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mixopt.cli import app

    monkeypatch.chdir(tmp_path)
    ids = log_sweep(tracking_uri, "cli", standard_trials(checkpoints, tmp_path))
    runner = CliRunner()
    res = runner.invoke(
        app, ["soup", "--experiment", "cli", "--tracking-uri", tracking_uri, "--runs", "top2"]
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "soups" / "cli"
    assert (out / "model.safetensors").is_file()
    assert f"took    run {ids['t1']}" in res.output and "skipped run" in res.output
    assert "not evaluated" in res.output and "wrote soups/cli" in res.output
    again = runner.invoke(app, ["soup", "--experiment", "cli", "--tracking-uri", tracking_uri])
    assert again.exit_code == 1 and "already exists" in again.output and "--force" in again.output
    for args, message in [
        ([], "EXPERIMENT.yaml or --experiment"),
        (["--experiment", "cli", "--runs", "best"], "--runs"),
        (["--experiment", "cli", "--method", "greedy"], "give the EXPERIMENT.yaml"),
        (["--experiment", "cli", "--method", "mean"], "uniform or greedy"),
        (["--experiment", "cli", "--rank", "posterior"], "No such option: --rank"),
    ]:
        r = runner.invoke(app, ["soup", *args])
        assert r.exit_code == 2 and message in r.output, (args, r.output)


@pytest.fixture
def no_env_uri(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield


def test_trainer_without_evaluate_checkpoint_is_a_clear_error(no_env_uri: None, tmp_path: Path) -> None:
    from mixopt.config import experiment_from_dict

    exp = experiment_from_dict(
        {
            "name": "x",
            "tasks": [{"name": "a", "kind": "sts", "path": str(tmp_path)}],
            "trainer": {"target": "trainers.analytic:train"},
        }
    )
    from mixopt.soup import trainer_evaluator

    with pytest.raises(SoupError, match="trainers.analytic.*evaluate_checkpoint"):
        trainer_evaluator(exp)
    assert os.environ.get("MLFLOW_TRACKING_URI") is None


def test_benchmark_checkpoints_have_embeddinggemma_shapes() -> None:
    """bench/soup.py's hand-written tensor table equals Gemma3TextModel's state_dict (built on the meta device)."""
    import importlib.util

    from transformers import Gemma3TextConfig, Gemma3TextModel

    spec = importlib.util.spec_from_file_location(
        "bench_soup", Path(__file__).parents[1] / "bench" / "soup.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    config = Gemma3TextConfig(
        vocab_size=262144,
        hidden_size=768,
        intermediate_size=1152,
        num_hidden_layers=24,
        num_attention_heads=3,
        num_key_value_heads=1,
        head_dim=256,
        use_bidirectional_attention=True,
    )
    with torch.device("meta"):
        model = Gemma3TextModel(config)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes = bench.gemma_shapes()
    assert shapes["model.safetensors"] == want
    total = sum(math.prod(s) for f in shapes.values() for s in f.values())
    assert 307e6 < total < 308e6  # EmbeddingGemma's 308M, Dense head included


# --------------------------------------------------------------------------- end to end, real trainer


def test_end_to_end_soup_of_real_tiny_trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny trials of trainers.embedding on synthetic tasks, logged by the sweep's own MLflow writer;
    the soup of the best two loads in sentence-transformers, equals their independently averaged
    model, and its scores (the trainer's evaluation) are reported next to its ingredients'."""
    from sentence_transformers import SentenceTransformer

    from mixopt.config import experiment_from_dict
    from mixopt.synth import SynthSpec, synthesize
    from mixopt.tracking import CHECKPOINT, SweepTracker
    from mixopt.trial import Trial
    from trainers.embedding import evaluate_checkpoint, train

    torch.set_num_threads(1)  # 2 shared cores: one intra-op thread avoids OpenMP spin contention
    data = tmp_path / "data"
    synthesize(data, n_tasks=2, seed=0, spec=SynthSpec(n_train=48, n_dev=16))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    options = {
        "model": str(data / "model"),
        "matryoshka_dims": [64, 32],
        "batch_size": 8,
        "max_seq_length": 24,
        "learning_rate": 3e-3,
        "eval_batch_size": 64,
        "classifier_train_rows": 48,
        "cpu_threads": 1,
    }
    config = {
        "name": "soup_e2e",
        "tasks": [
            {"name": "retrieval_0", "kind": "retrieval", "path": str(data / "retrieval_0")},
            {"name": "sts_1", "kind": "sts", "path": str(data / "sts_1")},
        ],
        "trainer": {"target": "trainers.embedding:train", "steps": 4, "seed": 0, **options},
        "tracking": {"uri": uri},
    }
    exp = experiment_from_dict(config)
    tracker = SweepTracker(uri, exp.experiment_name)
    tracker.start_sweep("sweep", {}, {})
    mixtures = [
        {"retrieval_0": 0.8, "sts_1": 0.2},
        {"retrieval_0": 0.5, "sts_1": 0.5},
        {"retrieval_0": 0.1, "sts_1": 0.9},
    ]
    results = {}
    for n, mixture in enumerate(mixtures):
        trial_id = f"t{n}"
        run_id = tracker.start_trial(trial_id, mixture, exp.task_names, "seed", exp.trainer.seed)
        result = train(
            Trial(
                mixture=mixture,
                hyperparameters={},
                seed=exp.trainer.seed,
                steps=exp.trainer.steps,
                output_dir=tmp_path / "runs" / trial_id,
                tasks=tuple(exp.tasks),
                options=exp.trainer.options,
                trial_id=trial_id,
            ),
            lambda step, m: None,
        )
        tracker.log_metrics(
            run_id,
            {
                "objective": result.objective,
                **result.task_metrics,
                **{f"score.{t}": v for t, v in result.task_scores.items()},
            },
            exp.trainer.steps,
        )
        tracker.finish_trial(run_id, "FINISHED", tags={CHECKPOINT: str(result.checkpoint)})
        results[run_id] = result
    tracker.end_sweep()

    monkeypatch.chdir(tmp_path)
    printed: list[str] = []
    _, soup = soup_from_sweep(exp, runs="top2", echo=printed.append)  # default out, the trainer's evaluation
    assert soup.out == Path("soups") / "soup_e2e"
    assert not any("checksums" in line for line in printed)  # the trainer's checkpoints were verified
    best = sorted(results, key=lambda r: -results[r].objective)[:2]
    assert [i.run_id for i in soup.ingredients] == best

    # Independent reference: the two checkpoints' state_dicts averaged in a loop, saved, evaluated.
    paths = [results[r].checkpoint for r in best]
    ref = reference_model(paths)
    model = SentenceTransformer(str(soup.out), device="cpu")
    torch.testing.assert_close(
        model.encode(TEXTS, convert_to_tensor=True),
        ref.encode(TEXTS, convert_to_tensor=True),
        rtol=1e-5,
        atol=1e-6,
    )
    ref.save(str(tmp_path / "reference"))
    want = evaluate_checkpoint(tmp_path / "reference", exp.tasks, exp.trainer.options)
    assert soup.evaluation is not None
    for t in exp.task_names:
        assert soup.evaluation.task_scores[t] == pytest.approx(want.task_scores[t], abs=1e-4)
    assert soup.evaluation.objective == pytest.approx(want.objective, abs=1e-4)

    # Reported next to the ingredients: MLflow's per-task scores of each ingredient, then the soup's.
    table = format_table(soup.candidates, soup.evaluation, tasks=exp.tasks).splitlines()
    assert table[0].split() == ["run", "objective", "retrieval_0", "sts_1"]
    for line, run_id in zip(table[2:4], best, strict=True):
        r = results[run_id]
        assert line.split()[3:] == [
            f"{r.objective:.4f}",
            f"{r.task_scores['retrieval_0']:.4f}",
            f"{r.task_scores['sts_1']:.4f}",
        ]
    assert table[4].split()[1:] == [
        f"{want.objective:.4f}",
        f"{want.task_scores['retrieval_0']:.4f}",
        f"{want.task_scores['sts_1']:.4f}",
    ]
    run = MlflowClient(uri).get_run(soup.run_id)
    assert run.data.metrics["score.sts_1"] == pytest.approx(want.task_scores["sts_1"], abs=1e-4)
    card = (soup.out / "README.md").read_text()
    assert "| retrieval_0 | ndcg@10 |" in card and "| sts_1 | spearman |" in card

    # The command line with the experiment YAML: greedy over all three, evaluated by the trainer, registered.
    import yaml

    from mixopt.cli import app

    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    res = CliRunner().invoke(
        app,
        [
            "soup",
            "exp.yaml",
            "--runs",
            "all",
            "--method",
            "greedy",
            "--out",
            "greedy",
            "--register",
            "e2e-soup",
        ],
    )
    assert res.exit_code == 0, res.output
    # Each ingredient the greedy soup evaluates is a model load: transformers' bar stays off the console.
    assert "Loading weights" not in res.output
    order = sorted(results, key=lambda r: -results[r].objective)
    assert f"greedy: start with run {order[0]}" in res.output
    # (progress bars on stderr share lines with the output in CliRunner, hence a search)
    assert re.findall(r"greedy: \+ run (\w+)", res.output) == order[1:]
    assert "registered as MLflow model 'e2e-soup' version 1" in res.output
    soup_row = re.search(r"^soup .*$", res.output, flags=re.M).group(0)
    greedy_card = (tmp_path / "greedy" / "README.md").read_text()
    assert "## Greedy steps" in greedy_card and soup_row.split()[1] in greedy_card


# --------------------------------------------------------------------------- run ids as users type them


def test_cli_soup_accepts_the_8_character_run_id_prefix_the_table_shows(
    checkpoints: list[Path], tracking_uri: str, tmp_path: Path
) -> None:
    from mixopt.cli import app

    ids = log_sweep(tracking_uri, "prefix", standard_trials(checkpoints, tmp_path))
    out = tmp_path / "soup"
    res = CliRunner().invoke(
        app,
        ["soup", "--experiment", "prefix", "--tracking-uri", tracking_uri, "--out", str(out)]
        + ["--runs", f"{ids['t1'][:8]},{ids['t0'][:8]}"],
    )
    assert res.exit_code == 0, res.output
    assert f"took    run {ids['t1']}" in res.output and f"took    run {ids['t0']}" in res.output
    missing = CliRunner().invoke(
        app, ["soup", "--experiment", "prefix", "--tracking-uri", tracking_uri, "--runs", "deadbeef"]
    )
    assert missing.exit_code == 1
    assert (
        missing.output.strip()
        .splitlines()[-1]
        .startswith("--runs: no MLflow run id starting with deadbeef in experiment 'prefix'")
    )


def test_an_ambiguous_run_id_prefix_lists_the_candidates(tracking_uri: str) -> None:
    from mixopt.soup import resolve_run_id

    client = MlflowClient(tracking_uri)
    eid = client.create_experiment("ambiguous", artifact_location=f"{tracking_uri[10:]}-ambiguous-art")
    by_char: dict[str, list[str]] = {}
    while not any(len(v) > 1 for v in by_char.values()):  # 17 runs at most (16 hex digits)
        rid = client.create_run(eid).info.run_id
        by_char.setdefault(rid[0], []).append(rid)
    char, both = next((c, sorted(v)) for c, v in by_char.items() if len(v) > 1)
    with pytest.raises(SoupError) as err:
        resolve_run_id(client, eid, char, "ambiguous")
    assert str(err.value) == (
        f"--runs: run id prefix {char} is ambiguous: {both[0]} (run), {both[1]} (run); give more characters"
    )
    assert resolve_run_id(client, eid, both[0][:31], "ambiguous") == both[0]


def test_a_deleted_weight_file_names_the_checkpoint_that_lacks_it(
    checkpoints: list[Path], tracking_uri: str, tmp_path: Path
) -> None:
    """The best trial (ranked first, the reference) lost model.safetensors: blame it, not a healthy one."""
    from mixopt.cli import app

    broken = copy_ckpt(checkpoints[1], tmp_path / "broken")
    (broken / "model.safetensors").unlink()
    trials = standard_trials(checkpoints, tmp_path)
    trials[1]["checkpoint"] = broken  # t1 has the highest objective
    ids = log_sweep(tracking_uri, "deleted", trials)
    res = CliRunner().invoke(
        app,
        ["soup", "--experiment", "deleted", "--tracking-uri", tracking_uri, "--out", str(tmp_path / "s")]
        + ["--runs", "top2"],
    )
    assert res.exit_code == 1
    last = res.output.strip().splitlines()[-1]
    assert ids["t1"] in last and ids["t0"] not in last
    assert f"checkpoint {broken} is missing model.safetensors (another ingredient has it)" in last
