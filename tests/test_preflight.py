"""Preflight: the worst case of the search space and the real command on the tiny experiment (fits:
exit 0 with the figures; a tiny memory limit: exit 1, naming the trainer's fix). The embedding
trainer's memory model is tested in tests/trainers/test_memory.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mixopt.cli import app
from mixopt.config import experiment_from_dict
from mixopt.preflight import _verification_trials, peak_bf16_flops, report, worst_case_options
from mixopt.synth import SynthSpec, synthesize

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("preflight") / "data"
    synthesize(out, n_tasks=3, seed=0, spec=SynthSpec(n_train=64, n_dev=16))
    return out


def tiny_experiment(synth_root: Path, **trainer) -> dict:
    raw = yaml.safe_load((REPO / "experiments" / "tiny_synthetic.yaml").read_text())
    for t in raw["tasks"]:
        t["path"] = str(synth_root / Path(t["path"]).name)
    raw["trainer"].update(model=str(synth_root / "model"), **trainer)
    return raw


def test_the_worst_case_takes_the_largest_batch_and_length_of_the_search_space(synth_root):
    raw = tiny_experiment(synth_root)
    raw["search"].setdefault("hyperparameters", {}).update(
        batch_size={"type": "int", "low": 4, "high": 24},
        max_seq_length={"type": "categorical", "choices": [16, 48, 32]},
        gradient_checkpointing={"type": "categorical", "choices": [True, False]},
        temperature={"type": "float", "low": 0.02, "high": 0.1, "default": 0.07},
    )
    options, notes = worst_case_options(experiment_from_dict(raw))
    assert options["batch_size"] == 24 and options["max_seq_length"] == 48
    assert options["gradient_checkpointing"] is False and options["temperature"] == 0.07
    assert Path(options["model"]).is_absolute()
    assert any("batch_size 24" in n for n in notes)


def test_peak_table_and_verification_trials():
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("NVIDIA L40S") == 362e12 and peak_bf16_flops("NVIDIA L4") == 121e12
    assert peak_bf16_flops("NVIDIA GeForce GTX 1080") is None

    class Verify:
        seeds = [1, 2, 3]

    class Exp:
        verify = Verify()

    assert _verification_trials(Exp()) == 6
    assert _verification_trials(object()) == 0


def test_preflight_on_the_tiny_experiment_fits_and_prints_its_figures(synth_root, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_experiment(synth_root, cpu_threads=1)))
    result = CliRunner().invoke(app, ["preflight", str(config), "--steps", "1"])
    assert result.exit_code == 0, result.output
    out = result.output
    for figure in ("peak memory", "step time", "tokens/s", "MFU", "trial time", "CPU-hours", "fits:"):
        assert figure in out, figure
    assert "batch_size 16 x 3 sides" in out and "x 32 tokens" in out
    # The search's and the verification's trials, each of the YAML's steps at the printed step time.
    raw = yaml.safe_load(config.read_text())
    n_trials = raw["optimizer"]["max_trials"] + 2 * raw["verify"]["seeds"]
    assert f"{raw['optimizer']['max_trials']} + {2 * raw['verify']['seeds']} verification trials" in out
    # The trial is the sum of its measured parts: load, the YAML's steps at the printed step time, the
    # trial's evaluations (eval_every 40 of 80 steps: at step 40 and the final one), a checkpoint write.
    step = float(re.search(r"step time\s+([\d.]+) s", out).group(1))
    parts = re.search(
        r"trial time\s+load ([\d.]+) s \+ (\d+) steps x ([\d.]+) s \+ (\d+) evaluations x ([\d.]+) s "
        r"\+ checkpoint write ([\d.]+) s .*= ([\d.]+) s",
        out,
    )
    assert parts, out
    load, n_steps, step_again, n_evals, evaluation, write, trial = (float(g) for g in parts.groups())
    assert (n_steps, step_again, n_evals) == (raw["trainer"]["steps"], step, 2)
    assert evaluation > 0 and write > 0 and load > 0
    assert trial == pytest.approx(
        load + n_steps * step + n_evals * evaluation + write, abs=5e-4 * (n_steps + n_evals + 2)
    )  # printed to 1 ms
    hours = float(re.search(r"= ([\d.]+) CPU-hours", out).group(1))
    assert hours == pytest.approx(n_trials * trial / 3600, abs=0.0006)
    assert "GPU" not in out  # a CPU experiment measured on a CPU: no GPU projection to ask for

    result = CliRunner().invoke(app, ["preflight", str(config), "--steps", "1", "--memory-limit-gb", "0.001"])
    assert result.exit_code == 1
    assert "does not fit" in result.output and "trainer.max_seq_length" in result.output


def test_a_gpu_experiment_measured_on_a_cpu_projects_cpu_hours_and_says_how_to_get_gpu_hours(
    synth_root, tmp_path
):
    """A CPU's step time is no GPU's: the unit is the measured device's, with the way to a GPU figure."""
    raw = tiny_experiment(synth_root, cpu_threads=1) | {"resources": {"cpus": 1, "gpus": 1}}
    config = tmp_path / "gpu.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["preflight", str(config), "--steps", "1"])
    assert result.exit_code == 0, result.output
    sweep = next(line for line in result.output.splitlines() if line.strip().startswith("sweep"))
    assert "GPU-hours" not in sweep
    assert sweep.endswith(
        "CPU-hours (the GPU projection needs a GPU: run `mixopt preflight --address ...` on the cluster)"
    )


def test_a_trial_over_the_memory_limit_still_gets_the_projection_of_its_fix(synth_root, tmp_path):
    """The tiny trial's full batch is over 0.01 GiB by the memory model, mini-batches of 16 texts are not:
    the steps of the worst case are not run, the fix's are, and the sweep is projected with it."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_experiment(synth_root, cpu_threads=1)))
    result = CliRunner().invoke(app, ["preflight", str(config), "--steps", "1", "--memory-limit-gb", "0.01"])
    assert result.exit_code == 1, result.output
    out = result.output
    assert "the steps were not run" in out
    assert "does not fit in 0.01 GiB (--memory-limit-gb): set trainer.mini_batch_size: 16" in out
    fixed = out.split("with the fix (set trainer.mini_batch_size: 16", 1)[1]
    assert re.search(r"step time\s+[\d.]+ s", fixed)
    assert re.search(r"trial time\s+load [\d.]+ s \+ 80 steps x [\d.]+ s \+ 2 evaluations", fixed)
    assert re.search(r"sweep\s+12 \+ 12 verification trials x [\d.]+ s x 1 CPU = [\d.]+ CPU-hours", fixed)


def test_a_trial_over_the_limit_without_a_memory_model_is_refused_naming_no_fix(synth_root):
    """A trainer whose preflight measures but offers no memory_fix: the measured peak, no model
    estimate, and a refusal that names no fix."""
    figures = {
        "device": "cpu",
        "device_name": "CPU (1 threads)",
        "total_memory": 2**30,
        "peak_memory": 2**31,
        "memory_kind": "peak RSS above the process's before loading",
        "oom": False,
        "projected_oom": False,
        "projected_memory": float("nan"),
        "step_seconds": float("nan"),
        "bf16": False,
        "batch_size": 16,
        "max_seq_length": 32,
        "mini_batch_size": None,
        "gradient_checkpointing": False,
    }
    lines: list[str] = []
    result = report(experiment_from_dict(tiny_experiment(synth_root)), figures, [], echo=lines.append)
    assert not result.fits and result.fix is None and result.fix_options is None
    assert lines[-2].endswith(
        "2.00 GiB of 1.0 GiB (the device's memory); peak RSS above the process's before loading"
    )
    assert lines[-1].startswith(
        "does not fit in 1.00 GiB (the device's memory); the trainer has no memory model"
    )


def test_preflight_refuses_another_trainer(synth_root, tmp_path):
    raw = tiny_experiment(synth_root)
    raw["trainer"] = {"target": "trainers.analytic:train"}
    raw["search"]["hyperparameters"] = {}
    config = tmp_path / "analytic.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["preflight", str(config)])
    assert result.exit_code == 2 and "preflight measures the embedding trainer" in result.output


@pytest.mark.slow
def test_sweep_preflight_runs_on_a_trial_worker_through_ray(synth_root, capsys):
    import ray

    from mixopt.sweep.common import SweepError
    from mixopt.sweep.driver import run_sweep_preflight

    exp = experiment_from_dict(tiny_experiment(synth_root, cpu_threads=1) | {"sweep": {"preflight": True}})
    try:
        run_sweep_preflight(exp, None, verbose=True)
        out = capsys.readouterr().out
        assert "[mixopt] preflight tiny_synthetic" in out and "[mixopt] fits:" in out
        bad = experiment_from_dict(tiny_experiment(synth_root, max_seq_length=512, batch_size=200_000))
        with pytest.raises(
            SweepError, match="preflight: the worst-case trial does not fit: set trainer.mini_batch_size"
        ):
            run_sweep_preflight(bad, None, verbose=False)
    finally:
        ray.shutdown()
