"""A tokenizer that does not know a task's words is reported, not trained on in silence: a warning
above 5 % unknown tokens, a refusal before any trial above half, as for a local model folder whose
tokenizer does not load."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mixopt.cli import app
from mixopt.config import load_experiment
from mixopt.synth import SynthSpec, synthesize


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unk") / "data"
    synthesize(out, n_tasks=1, seed=0, spec=SynthSpec(n_train=64, n_dev=16))
    return out


def _gibberish_task(root: Path, share_unknown: float) -> Path:
    """A retrieval task whose words are, with probability ``share_unknown``, ones no vocabulary has."""
    rng = random.Random(0)
    folder = root / "foreign"
    folder.mkdir(exist_ok=True)

    def text(words: list[str]) -> str:
        return " ".join(
            f"qzx{rng.randrange(10**6)}" if rng.random() < share_unknown else rng.choice(words)
            for _ in range(8)
        )

    vocab = [w for w in _vocab(root / "model") if w.isalpha() and w.islower()]
    assert vocab
    for split, n in (("train", 40), ("dev", 12)):
        rows = [{"query": text(vocab), "positive": text(vocab)} for _ in range(n)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _vocab(model: Path) -> dict[str, int]:
    return json.loads(next(model.rglob("tokenizer.json")).read_text())["model"]["vocab"]


def _reference_share(folder: Path, vocab: dict[str, int], rows: int = 200) -> float:
    """Naive: split each text as the Whitespace pre-tokenizer does, count words not in the vocabulary."""
    words = []
    for line in (folder / "train.jsonl").read_text().splitlines()[:rows]:
        row = json.loads(line)
        for text in [row["query"], row["positive"], *row.get("negatives", [])]:
            words += re.findall(r"\w+|[^\w\s]+", text)
    return sum(w not in vocab for w in words) / len(words)


def _experiment(tmp_path: Path, synth: Path, foreign: Path) -> Path:
    exp = {
        "name": "unk",
        "tasks": [
            {"name": "retrieval_0", "kind": "retrieval", "path": str(synth / "retrieval_0")},
            {"name": "foreign", "kind": "retrieval", "path": str(foreign)},
        ],
        # matryoshka_dims: the synthetic model's width (the trainer's default is EmbeddingGemma's 768).
        "trainer": {
            "target": "trainers.embedding:train",
            "steps": 2,
            "model": str(synth / "model"),
            "matryoshka_dims": [64, 32],
        },
        "storage": str(tmp_path / "runs"),
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def test_tasks_and_the_data_check_print_the_unknown_share_and_warn_above_5_percent(
    tmp_path: Path, synth: Path
) -> None:
    from mixopt.sweep.checks import check_data

    foreign = _gibberish_task(synth, share_unknown=0.3)
    vocab = _vocab(synth / "model")
    known_share = _reference_share(synth / "retrieval_0", vocab)
    foreign_share = _reference_share(foreign, vocab)
    assert known_share < 0.05 < 0.2 < foreign_share < 0.5

    path = _experiment(tmp_path, synth, foreign)
    r = CliRunner().invoke(app, ["tasks", str(path)])
    assert r.exit_code == 0, r.output
    assert f"unknown tokens: {known_share:.1%} of" in r.stdout
    assert f"unknown tokens: {foreign_share:.1%} of" in r.stdout
    warnings = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "task foreign:" in warnings[0] and f"{foreign_share:.0%}" in warnings[0]

    report = check_data(load_experiment(path), use_cache=False)
    assert report.unknown["foreign"][0] == pytest.approx(foreign_share)
    assert report.unknown["retrieval_0"][0] == pytest.approx(known_share)
    assert f"foreign {foreign_share:.1%}" in report.unknown_line()
    assert [w for w in report.warnings if "unknown token" in w] == [warnings[0].split("warning: ", 1)[1]]


def _refused(tmp_path: Path, path: Path, pattern: str, problems: int = 1) -> None:
    """``validate --data`` and ``sweep`` each exit 2 with a line per problem, each matching
    ``pattern``; nothing written."""
    for args in (["validate", str(path), "--data"], ["sweep", str(path)]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == problems and all(re.search(pattern, x) for x in lines), (args, r.stderr)
        assert "Traceback" not in r.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_task_mostly_unknown_to_the_tokenizer_is_refused_before_any_trial(
    tmp_path: Path, synth: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    foreign = _gibberish_task(synth, share_unknown=0.9)
    share = _reference_share(foreign, _vocab(synth / "model"))
    assert share > 0.5
    _refused(
        tmp_path,
        _experiment(tmp_path, synth, foreign),
        rf"task foreign: {share:.0%} of the tokens of its first 200 train rows are the tokenizer's unknown "
        r"token \(more than 50%\)",
    )


def test_a_model_folder_without_its_tokenizer_is_refused_before_any_trial(
    tmp_path: Path, synth: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny Gemma3 model folder copied without its tokenizer files: transformers builds a Gemma
    tokenizer of its special tokens alone from the model's config, so every word of every task is
    the unknown token; without tokenizer.json only, the tokenizer does not load."""
    import shutil

    monkeypatch.chdir(tmp_path)
    bare = shutil.copytree(synth / "model", tmp_path / "bare_model")
    for f in bare.glob("tokenizer*"):
        f.unlink()
    path = _experiment(tmp_path, synth, synth / "retrieval_0")
    path.write_text(path.read_text().replace(str(synth / "model"), str(bare)))
    _refused(tmp_path, path, r"task \w+: 100% of the tokens .* are the tokenizer's unknown token", problems=2)

    half = shutil.copytree(synth / "model", tmp_path / "half_model")
    (half / "tokenizer.json").unlink()
    path.write_text(path.read_text().replace(str(bare), str(half)))
    _refused(tmp_path, path, rf"trainer\.model: {re.escape(str(half))}: its tokenizer does not load \(")
