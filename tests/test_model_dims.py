"""`validate` and the sweep's check catch Matryoshka dims that do not fit the local model (issue 29,
case 11): every trial would otherwise fail on them, one after another."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mixopt.cli import app
from mixopt.synth import SynthSpec, synthesize


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dims") / "data"
    synthesize(out, n_tasks=2, seed=0, spec=SynthSpec(n_train=16, n_dev=8))
    return out


@pytest.fixture(scope="module")
def true_dim(synth: Path) -> int:
    """The dimension the trainer's own loader embeds in (the reference the check must agree with)."""
    from trainers.model import load_encoder

    return int(load_encoder(synth / "model").encoder.dim)


def _yaml(tmp_path: Path, synth: Path, model: str, dims: list[int]) -> Path:
    exp = {
        "name": "dims",
        # Two tasks: one alone leaves nothing to optimise, which validate refuses first.
        "tasks": [
            {"name": "retrieval_0", "kind": "retrieval", "path": str(synth / "retrieval_0")},
            {"name": "sts_1", "kind": "sts", "path": str(synth / "sts_1")},
        ],
        "trainer": {
            "target": "trainers.embedding:train",
            "steps": 2,
            "model": model,
            "matryoshka_dims": dims,
        },
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "storage": str(tmp_path / "runs"),
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def _validate(path: Path) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["validate", str(path)])
    return r.exit_code, r.stderr


def test_dims_larger_than_the_model_are_refused_by_validate(
    tmp_path: Path, synth: Path, true_dim: int
) -> None:
    code, err = _validate(_yaml(tmp_path, synth, str(synth / "model"), [4 * true_dim, true_dim]))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"trainer.matryoshka_dims: [{4 * true_dim}, {true_dim}]: the model ")
    assert f"embeds in {true_dim} dimensions" in lines[0] and f"e.g. [{true_dim}]" in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_dims_that_fit_pass_and_a_hub_id_is_not_looked_up(tmp_path: Path, synth: Path, true_dim: int) -> None:
    code, err = _validate(_yaml(tmp_path, synth, str(synth / "model"), [true_dim, true_dim // 2]))
    assert code == 0, err
    code, err = _validate(_yaml(tmp_path, synth, "google/embeddinggemma-300m", [4096, 8]))
    assert code == 0 and "matryoshka" not in err, err


def test_sweep_check_refuses_before_any_trial(tmp_path: Path, synth: Path, true_dim: int) -> None:
    r = CliRunner().invoke(app, ["sweep", str(_yaml(tmp_path, synth, str(synth / "model"), [true_dim + 1]))])
    assert r.exit_code == 2, r.output
    assert f"embeds in {true_dim} dimensions" in r.stderr
    assert not (tmp_path / "mlflow.db").exists()
