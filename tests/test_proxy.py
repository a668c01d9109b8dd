"""The merged-experts proxy: the streamed task-arithmetic merge and its in-memory evaluation.

References, none of them the code under test: the experts' own tensors read with
``safetensors.torch.load_file``, the naive per-tensor formula in float64, the closed-form
barycentric coordinates, and the trainer's ``evaluate_checkpoint`` on the same weights saved to a
directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mixopt.proxy.merge import ExpertMerge, mixture_coefficients
from mixopt.soup.checkpoints import CheckpointError, weight_files
from trainers.merged import MergedEvaluator

TASKS = ("retrieval_0", "sts_1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The synthetic base model and two experts of it (one per task, 4 steps of the real trainer)."""
    from mixopt.config import experiment_from_dict
    from mixopt.synth import SynthSpec, synthesize
    from mixopt.trial import Trial
    from trainers.embedding import train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("proxy")
    data = root / "data"
    synthesize(data, n_tasks=2, seed=0, spec=SynthSpec(n_train=48, n_dev=16))
    options = {
        "model": str(data / "model"),
        "matryoshka_dims": [64, 32],
        "batch_size": 8,
        "max_seq_length": 24,
        # A large rate so that 4 steps move the weights well away from the base.
        "learning_rate": 3e-3,
        "eval_batch_size": 64,
        "classifier_train_rows": 48,
        "cpu_threads": 1,
    }
    exp = experiment_from_dict(
        {
            "name": "proxy",
            "tasks": [{"name": t, "kind": t.split("_")[0], "path": str(data / t)} for t in TASKS],
            "trainer": {"target": "trainers.embedding:train", "steps": 4, "seed": 0, **options},
        }
    )
    experts = []
    for i, task in enumerate(TASKS):
        trial = Trial(
            mixture={t: float(t == task) for t in TASKS},
            hyperparameters={},
            seed=0,
            steps=4,
            output_dir=root / f"expert{i}",
            tasks=tuple(exp.tasks),
            options=exp.trainer.options,
            trial_id=f"expert{i}",
        )
        experts.append(train(trial, lambda step, metrics: None).checkpoint)
    return {"base": data / "model", "experts": experts, "exp": exp, "root": root}


def _tensors(checkpoint: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {f: load_file(checkpoint / f) for f in weight_files(checkpoint)}


def test_merge_at_one_hot_is_the_expert_exactly(trained) -> None:
    merge = ExpertMerge(trained["base"], trained["experts"])
    for j, expert in enumerate(trained["experts"]):
        merged = merge.merge([float(k == j) for k in range(2)])
        want = _tensors(expert)
        assert merged.keys() == want.keys()
        for file, tensors in want.items():
            assert merged[file].keys() == tensors.keys()
            for name, t in tensors.items():
                assert merged[file][name].dtype == t.dtype
                assert torch.equal(merged[file][name], t), (file, name)


@pytest.mark.parametrize("c", [(0.5, 0.5), (0.3, -0.2), (0.0, 0.0)])
def test_merge_is_the_naive_per_tensor_task_arithmetic(trained, c) -> None:
    """theta0 + sum_k c_k (theta_k - theta0), tensor by tensor in float64; (0.3, -0.2) sums to 0.1,
    where the base does not cancel; (0, 0) is the base itself."""
    base = _tensors(trained["base"])
    experts = [_tensors(e) for e in trained["experts"]]
    merged = ExpertMerge(trained["base"], trained["experts"]).merge(c)
    moved = 0.0
    for file, tensors in base.items():
        for name, t0 in tensors.items():
            want = t0.double() + sum(ck * (e[file][name].double() - t0.double()) for ck, e in zip(c, experts))
            # Within one float32 rounding: float64 sums taken in another order may round apart.
            torch.testing.assert_close(merged[file][name], want.float(), rtol=2e-7, atol=1e-8)
            moved = max(moved, float((want - t0.double()).abs().max()))
    assert (moved > 1e-4) == (c != (0.0, 0.0))  # the experts did move away from the base


def test_merged_scores_equal_the_saved_weights_scored_by_the_trainer(trained, tmp_path: Path) -> None:
    """Two mixtures in a row through one evaluator (so nothing of the first leaks into the second)
    score exactly as the same weights written to a checkpoint and read by evaluate_checkpoint."""
    from trainers.embedding import evaluate_checkpoint

    exp = trained["exp"]
    merge = ExpertMerge(trained["base"], trained["experts"])
    evaluator = MergedEvaluator(trained["base"], exp.tasks, exp.trainer.options)
    for i, c in enumerate([(0.5, 0.5), (0.9, 0.1)]):
        merged = merge.merge(c)
        got = evaluator.evaluate(merged)
        saved = tmp_path / f"saved{i}"
        shutil.copytree(trained["experts"][0], saved)
        (saved / "mixopt_checksums.json").unlink()
        for file, tensors in merged.items():
            save_file(tensors, str(saved / file), metadata={"format": "pt"})
        want = evaluate_checkpoint(saved, exp.tasks, exp.trainer.options)
        assert got.checkpoint is None
        assert got.task_scores.keys() == want.task_scores.keys() == set(TASKS)
        assert got.task_metrics.keys() == want.task_metrics.keys()
        for key, value in want.task_metrics.items():
            assert got.task_metrics[key] == pytest.approx(value, abs=1e-6), key
        assert got.objective == pytest.approx(want.objective, abs=1e-6)
    # The two mixtures are different models: the check above is not comparing one score twice.
    a, b = (evaluator.evaluate(merge.merge(c)).task_metrics for c in [(1.0, 0.0), (0.0, 1.0)])
    assert a != b


def test_coefficients_of_one_hot_experts_are_the_mixture() -> None:
    w = {"a": 0.2, "b": 0.5, "c": 0.3}
    anchors = [{"a": 1.0}, {"b": 1.0}, {"c": 1.0}]
    assert mixture_coefficients(w, anchors) == pytest.approx([0.2, 0.5, 0.3], abs=1e-12)


def test_coefficients_of_corner_experts_are_barycentric() -> None:
    """Experts at the bounds' corners (retrieval >= 0.05): closed form c_s = w_s / 0.95,
    c_c = w_c / 0.95, c_r = 1 - c_s - c_c; outside their simplex a coefficient goes negative."""
    anchors = [{"r": 1.0}, {"r": 0.05, "s": 0.95}, {"r": 0.05, "c": 0.95}]
    w = {"r": 0.8, "s": 0.1, "c": 0.1}
    cs, cc = 0.1 / 0.95, 0.1 / 0.95
    assert mixture_coefficients(w, anchors) == pytest.approx([1 - cs - cc, cs, cc], abs=1e-12)
    outside = mixture_coefficients({"r": 0.0, "s": 0.5, "c": 0.5}, anchors)
    assert outside[0] < 0
    assert np.allclose(np.array([[1, 0, 0], [0.05, 0.95, 0], [0.05, 0, 0.95]]).T @ outside, [0, 0.5, 0.5])


def test_coefficients_refuse_what_the_experts_cannot_span() -> None:
    with pytest.raises(ValueError, match="linearly dependent"):
        mixture_coefficients({"a": 0.5, "b": 0.5}, [{"a": 1.0}, {"a": 1.0}])
    with pytest.raises(ValueError, match="not a combination.*train an expert for every task"):
        mixture_coefficients({"a": 0.5, "b": 0.3, "c": 0.2}, [{"a": 1.0}, {"b": 1.0}])
    with pytest.raises(ValueError, match=r"names tasks \['z'\]"):
        mixture_coefficients({"a": 1.0}, [{"z": 1.0}])


@pytest.mark.parametrize("which", ["expert", "base"])
def test_a_tensor_of_another_dtype_is_refused_naming_file_and_tensor(trained, tmp_path: Path, which) -> None:
    """An expert unlike the other (the soup's check), or a base unlike the experts (the merge's own)."""
    bad = tmp_path / "bad"
    shutil.copytree(trained["experts"][1] if which == "expert" else trained["base"], bad)
    (bad / "mixopt_checksums.json").unlink()
    state = load_file(bad / "2_Dense" / "model.safetensors")
    save_file({k: v.double() for k, v in state.items()}, str(bad / "2_Dense" / "model.safetensors"))
    if which == "expert":
        base, experts, culprit = trained["base"], [trained["experts"][0], bad], "run-b"
    else:
        base, experts, culprit = bad, trained["experts"], f"base model {bad}"
    with pytest.warns(UserWarning, match="record no checksums"):
        with pytest.raises(CheckpointError, match=r"linear\.weight|2_Dense/model\.safetensors") as e:
            ExpertMerge(base, experts, labels=["run-a", "run-b"])
    message = str(e.value)
    assert "\n" not in message and message.startswith(culprit)
    assert "2_Dense/model.safetensors" in message and "linear.weight" in message and "F64" in message


def test_a_corrupted_expert_is_refused_before_merging(trained, tmp_path: Path) -> None:
    bad = tmp_path / "corrupt"
    shutil.copytree(trained["experts"][1], bad)
    with (bad / "model.safetensors").open("r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    with pytest.raises(CheckpointError, match="run-b"):
        ExpertMerge(trained["base"], [trained["experts"][0], bad], labels=["run-a", "run-b"])


def test_a_base_without_dense_layers_is_refused(trained, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in trained["base"].iterdir():
        if f.is_file() and f.name not in ("modules.json", "mixopt_checksums.json"):
            shutil.copy(f, raw / f.name)
    exp = trained["exp"]
    with pytest.raises(
        ValueError, match="a plain Gemma3 folder; the experts. Dense layers were drawn from each trial.s seed"
    ):
        MergedEvaluator(raw, exp.tasks, exp.trainer.options)


def test_merged_weights_of_another_layout_are_refused(trained) -> None:
    exp = trained["exp"]
    evaluator = MergedEvaluator(trained["base"], exp.tasks, exp.trainer.options)
    merged = ExpertMerge(trained["base"], trained["experts"]).merge([0.5, 0.5])
    merged["9_Dense/model.safetensors"] = merged.pop("3_Dense/model.safetensors")
    with pytest.raises(ValueError, match="9_Dense"):
        evaluator.evaluate(merged)
    assert json.loads((trained["base"] / "modules.json").read_text())  # the base is untouched


def test_bench_experts_are_the_feasible_mixtures_nearest_one_hot() -> None:
    """bench/proxy.py's expert mixtures: the one-hot where the bounds allow it, else the Euclidean
    projection onto the bounded simplex (closed forms: the others at their minimum; or, with the
    task capped, the excess shared equally by the others)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_proxy", Path(__file__).parents[1] / "bench" / "proxy.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lo, hi = [0.05, 0.0, 0.0], [1.0, 1.0, 1.0]
    assert bench.nearest_in_bounds(0, lo, hi) == pytest.approx((1.0, 0.0, 0.0), abs=1e-12)
    assert bench.nearest_in_bounds(1, lo, hi) == pytest.approx((0.05, 0.95, 0.0), abs=1e-12)
    assert bench.nearest_in_bounds(2, lo, hi) == pytest.approx((0.05, 0.0, 0.95), abs=1e-12)
    assert bench.nearest_in_bounds(0, [0.0] * 3, [0.6, 1.0, 1.0]) == pytest.approx((0.6, 0.2, 0.2), abs=1e-12)
