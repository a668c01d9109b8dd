"""Which sentence-transformers losses a task of each kind can train with (trainers.st_losses), against
sentence-transformers itself: the inputs table in each loss's docstring, and one training step of
each loss on the columns mixopt builds for each kind it fits."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import pytest
import torch

from mixopt.config import TaskConfig
from mixopt.synth import SynthSpec, synthesize
from trainers.st_losses import FORMATS, KINDS, LOSSES, WRAPPERS, LossSpec, fitting

# Rows of sentence-transformers' loss tables ("Inputs | Labels") that a mixopt task can give, and
# the input of trainers.st_losses each one is.
TABLE_ROWS = {
    ("(anchor, positive) pairs", "none"): "pairs",
    ("(anchor, positive, negative) triplets", "none"): "triplets",
    ("(input_A, input_B) pairs", "float similarity score"): "scores",
    ("(anchor, positive/negative) pairs", "1 if positive, 0 if negative"): "labelled_pairs",
    ("(input_A, input_B) pairs", "class"): "labelled_pairs",
    ("single inputs", "class"): "labels",
}


def table_inputs(cls: type) -> list[str]:
    """The inputs of a loss's docstring table that mixopt can give, in the table's order."""
    doc = inspect.getdoc(cls.__init__) or inspect.getdoc(cls) or ""
    start = doc.find("Inputs:")
    out: list[str] = []
    for line in doc[start:].splitlines()[1:] if start >= 0 else []:
        if not line.strip():
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        f = TABLE_ROWS.get(tuple(cells)) if len(cells) == 2 else None
        if f is not None and f not in out:
            out.append(f)
    return out


def needs_an_object(cls: type) -> bool:
    """A required ``__init__`` argument (besides the model) that no YAML value can give (a model, a module)."""
    from pydantic import TypeAdapter

    hints = typing.get_type_hints(cls.__init__)
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "model", "loss") or p.default is not p.empty or p.kind in (p.VAR_KEYWORD,):
            continue
        try:
            TypeAdapter(hints[name])
        except Exception:
            return True
    return False


def test_every_loss_whose_inputs_a_kind_gives_is_accepted_for_that_kind() -> None:
    from sentence_transformers.sentence_transformer import losses

    expected = {}
    for name in dir(losses):
        cls = getattr(losses, name)
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)) or name in WRAPPERS:
            continue
        inputs = table_inputs(cls)
        if inputs and not needs_an_object(cls):
            expected[name] = tuple(inputs)
    # ContrastiveLoss and OnlineContrastiveLoss, the losses of labelled pairs, are among them.
    assert {"ContrastiveLoss", "OnlineContrastiveLoss", "CoSENTLoss", "BatchAllTripletLoss"} <= set(expected)
    assert LOSSES == expected
    for kind in KINDS:
        by_table = [n for n, inputs in expected.items() if any(kind in FORMATS[f].kinds for f in inputs)]
        assert sorted(fitting(kind)) == sorted(by_table)
    assert "ContrastiveLoss" in fitting("pair_classification")
    assert "CosineSimilarityLoss" not in fitting("pair_classification")


def readme_section(heading: str) -> str:
    """The README's text from ``heading`` to the next heading."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index(heading)
    end = readme.find("\n#", start + len(heading))
    return readme[start : end if end >= 0 else None]


def test_the_readme_lists_the_losses_of_each_kind() -> None:
    section = readme_section("### Options of `trainers.sentence_transformers`")
    table = section[section.index("**Losses by task kind.**") :]
    for kind in KINDS:
        row = re.search(rf"^\| {kind} \| (.*) \|$", table, flags=re.M)
        assert row is not None, kind
        assert re.findall(r"`(\w+Loss)`", row.group(1)) == fitting(kind), kind


def test_the_readme_documents_every_option_of_the_trainer_with_its_default() -> None:
    from trainers.sentence_transformers import Options

    section = readme_section("### Options of `trainers.sentence_transformers`")
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            names = re.findall(r"`(\w+)`", cells[0])
            values = re.findall(r"`([^`]+)`", cells[1])
            for i, name in enumerate(names):
                rows[name] = values[i] if len(values) == len(names) else cells[1]
    assert set(rows) == set(Options.model_fields)
    for name, field in Options.model_fields.items():
        default = field.default
        if default is None:
            continue  # "the model's own", "torch's default": said in words
        shown = rows[name]
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            assert float(shown) == default, (name, shown)
        elif isinstance(default, str):
            assert shown == default, (name, shown)
        else:
            assert shown == str(default), (name, shown)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("losses") / "synthetic"
    synthesize(root, n_tasks=3, seed=0, spec=SynthSpec(n_train=64, n_dev=8))
    return root


@pytest.fixture(scope="module")
def task_of_kind(synth, tmp_path_factory) -> dict[str, TaskConfig]:
    """A task of every kind: the synthetic three, clustering on the classification rows, and
    pair classification from the STS rows (label 1 above the median score)."""
    import json

    pair = tmp_path_factory.mktemp("pair")
    for split in ("train", "dev"):
        rows = [json.loads(line) for line in (synth / "sts_1" / f"{split}.jsonl").read_text().splitlines()]
        median = sorted(r["score"] for r in rows)[len(rows) // 2]
        (pair / f"{split}.jsonl").write_text(
            "".join(
                json.dumps({"text1": r["text1"], "text2": r["text2"], "label": int(r["score"] >= median)})
                + "\n"
                for r in rows
            )
        )
    return {
        "retrieval": TaskConfig(name="r", kind="retrieval", path=synth / "retrieval_0"),
        "sts": TaskConfig(name="s", kind="sts", path=synth / "sts_1"),
        "classification": TaskConfig(name="c", kind="classification", path=synth / "classification_2"),
        "clustering": TaskConfig(name="k", kind="clustering", path=synth / "classification_2"),
        "pair_classification": TaskConfig(name="p", kind="pair_classification", path=pair),
    }


ARGUMENTS = {"SoftmaxLoss": {"embedding_dimension": 64, "num_labels": 2}}


def one_step(model_dir: Path, task: TaskConfig, spec: LossSpec, tmp_path: Path) -> float:
    """One SentenceTransformerTrainer step of ``spec`` on the columns the trainer builds for ``task``."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Args

    from trainers.sentence_transformers import task_columns

    model = SentenceTransformer(str(model_dir), device="cpu")
    columns = task_columns(task, spec.inputs(task.kind.value), [0, 0])
    assert set(columns) >= set(FORMATS[spec.inputs(task.kind.value)[0]].columns) - {"negative"}
    data = Dataset.from_dict(columns)
    assert len(data) >= 8, (spec.name, task.kind, len(data))
    data = data.select(range(8))
    args = Args(
        str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=8,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=data, loss=spec.build(model, task.kind.value)
    )
    return float(trainer.train().training_loss)


FIRST_OF_EACH_INPUT = {
    "pairs": "MegaBatchMarginLoss",
    "triplets": "TripletLoss",
    "scores": "CoSENTLoss",
    "labelled_pairs": "OnlineContrastiveLoss",
    "labels": "BatchAllTripletLoss",
}


@pytest.mark.parametrize("loss", sorted(FIRST_OF_EACH_INPUT.values()))
def test_one_loss_of_each_input_trains_on_each_kind_it_fits(loss, synth, task_of_kind, tmp_path) -> None:
    spec = LossSpec(name=loss, **ARGUMENTS.get(loss, {}))
    for kind in KINDS:
        if loss in fitting(kind):
            value = one_step(synth / "model", task_of_kind[kind], spec, tmp_path)
            assert value == value and abs(value) < 1e6, (loss, kind)


@pytest.mark.slow
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_trains_on_each_kind_it_fits(loss, synth, task_of_kind, tmp_path) -> None:
    spec = LossSpec(name=loss, **ARGUMENTS.get(loss, {}))
    for kind in KINDS:
        if loss in fitting(kind):
            value = one_step(synth / "model", task_of_kind[kind], spec, tmp_path)
            assert value == value and abs(value) < 1e6, (loss, kind)
