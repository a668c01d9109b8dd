"""`mixopt eval`: the real ``mteb.evaluate`` on custom MTEB tasks with local data, on a tiny checkpoint.

The STS score is checked against an independent computation (the SentenceTransformer's own
``encode`` with the prompt, cosine, scipy's Spearman); the logged metrics against mteb's results.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from mixopt.config import TaskConfig
from mixopt.mteb_eval import EvalError, evaluate_model, mteb_prompts

# mteb's import alone takes tens of seconds on the dev box: every test here is slow, and mteb is
# imported inside the tests so that collecting this file in the default run costs nothing.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _mteb():
    # mteb creates its result cache folder at import: keep it out of the home directory.
    os.environ.setdefault("MTEB_CACHE", tempfile.mkdtemp(prefix="mteb_cache_"))
    pytest.importorskip("mteb")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from mteb_local_tasks import WORDS
    from tiny_checkpoint import tiny_st_checkpoint

    prompts = {"sts/query": "task: sentence similarity | query: "}
    return tiny_st_checkpoint(tmp_path_factory.mktemp("mteb"), WORDS, seed=1, prompts=prompts)


def test_mixopt_eval_logs_mteb_scores_to_the_models_run_and_card(checkpoint, tmp_path):
    from mlflow import MlflowClient
    from mteb_local_tasks import GOLD, S1, S2, LocalClassification, LocalSTS
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer

    from mixopt.tracking import CHECKPOINT, artifact_location

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run = client.create_run(
        client.create_experiment("soups", artifact_location=artifact_location(uri)),
        tags={CHECKPOINT: str(checkpoint.resolve())},
    )
    (checkpoint / "README.md").write_text("# Model soup\n\n## Ingredients\n\n(the soup's own card)\n")
    sts_prompt = "task: sentence similarity | query: "
    prompts = mteb_prompts(
        [
            TaskConfig(
                name="s", kind="sts", path=tmp_path, prompt={"query": sts_prompt, "document": sts_prompt}
            )
        ]
    )
    assert prompts == {"STS": sts_prompt}

    model_dir, run_id, scores = evaluate_model(
        str(checkpoint),
        tasks=[LocalSTS(), LocalClassification()],
        prompts=prompts,
        tracking_uri=uri,
        batch_size=8,
    )
    assert model_dir == checkpoint and run_id == run.info.run_id
    by_task = {s.task: s.score for s in scores}

    # Independent reference for STS: encode with the prompt, cosine, Spearman.
    st = SentenceTransformer(str(checkpoint), device="cpu")
    e1 = st.encode([sts_prompt + s for s in S1], normalize_embeddings=True)
    e2 = st.encode([sts_prompt + s for s in S2], normalize_embeddings=True)
    expected = spearmanr((e1 * e2).sum(-1), GOLD).statistic
    assert by_task["MixoptLocalSTS"] == pytest.approx(expected, abs=1e-4)

    # The logged metrics are mteb's own main scores, read back from its results JSON.
    results = json.loads((checkpoint / "mteb_results.json").read_text())["results"]
    main = {r["task_name"]: r["scores"]["test"][0]["main_score"] for r in results}
    metrics = client.get_run(run.info.run_id).data.metrics
    assert {k: v for k, v in metrics.items() if k.startswith("mteb.")} == pytest.approx(
        {f"mteb.{t}": v for t, v in main.items()}
    )
    assert set(main) == {"MixoptLocalSTS", "MixoptLocalClassification"}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "mteb")
    }
    assert {"README.md", "mteb/mteb_results.json"} <= artifacts

    card = (checkpoint / "README.md").read_text()
    assert "(the soup's own card)" in card and card.count("## MTEB") == 1
    for task, value in main.items():
        assert f"| {task} |" in card and f"{value:.4f}" in card

    # A second evaluation replaces the section, never duplicates it.
    evaluate_model(str(checkpoint), tasks=[LocalSTS()], prompts=prompts, tracking_uri=uri, batch_size=8)
    assert (checkpoint / "README.md").read_text().count("## MTEB") == 1


def test_eval_errors_are_one_line(checkpoint, tmp_path):
    from typer.testing import CliRunner

    from mixopt.cli import app

    # A model that loads: eval checks the model first (a broken one costs no task download), then
    # the tasks; every error is one line and writes nothing.
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cases = [
        (["eval", str(checkpoint), "--mteb-tasks", "NoSuchTask", "--tracking-uri", uri], "NoSuchTask"),
        (["eval", str(checkpoint), "--mteb", "MTEB(nope)", "--tracking-uri", uri], "MTEB(nope)"),
        (["eval", "0123abcd", "--mteb-tasks", "STSBenchmark", "--tracking-uri", uri], "no MLflow store"),
        (["eval", str(checkpoint), "--tracking-uri", uri], "exactly one of --mteb"),
    ]
    for args, phrase in cases:
        r = CliRunner().invoke(app, args)
        lines = r.stderr.strip().splitlines()
        assert r.exit_code != 0 and len(lines) == 1 and phrase in lines[0], (args, r.stderr)
    assert not (tmp_path / "mlflow.db").exists()  # nothing written
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(EvalError, match="not a sentence-transformers directory"):
        evaluate_model(str(tmp_path / "not_a_model"), task_names=["STSBenchmark"], tracking_uri=uri)


def test_mixopt_eval_cli_runs_a_custom_task_named_by_import_path(checkpoint, tmp_path):
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from mixopt.cli import app
    from mixopt.tracking import CHECKPOINT, artifact_location

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run = client.create_run(
        client.create_experiment("trials", artifact_location=artifact_location(uri)),
        tags={CHECKPOINT: str(checkpoint.resolve())},
    )
    r = CliRunner().invoke(
        app, ["eval", run.info.run_id, "--mteb-tasks", "mteb_local_tasks:LocalSTS", "--tracking-uri", uri]
    )
    assert r.exit_code == 0, r.output
    results = json.loads((checkpoint / "mteb_results.json").read_text())["results"]
    score = results[0]["scores"]["test"][0]["main_score"]
    assert f"| MixoptLocalSTS | STS | cosine_spearman | {score:.4f} |" in r.stdout
    assert client.get_run(run.info.run_id).data.metrics["mteb.MixoptLocalSTS"] == pytest.approx(score)
