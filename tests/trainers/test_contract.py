"""The trainer contract (mixopt.trial): what each shipped trainer provides, and the one error that names
the target and every missing part."""

from __future__ import annotations

import sys
import types

import pytest
from pydantic import BaseModel

import trainers.analytic
import trainers.embedding
from mixopt.trial import TrainerError, load_trainer


def test_the_embedding_trainer_provides_every_part():
    trainer = load_trainer("trainers.embedding:train")
    assert trainer.target == "trainers.embedding:train"
    assert trainer.train is trainers.embedding.train
    assert trainer.options is trainers.embedding.Options
    assert trainer.evaluate_checkpoint is trainers.embedding.evaluate_checkpoint
    assert trainer.preflight is trainers.embedding.preflight
    assert trainer.memory_fix is trainers.embedding.memory_fix
    assert trainer.write_synth_model is trainers.embedding.write_synth_model


def test_the_analytic_trainer_provides_train_and_options_and_no_optional_part():
    trainer = load_trainer("trainers.analytic:train")
    assert trainer.train is trainers.analytic.train and trainer.options is trainers.analytic.Options
    assert trainer.evaluate_checkpoint is None and trainer.preflight is None
    assert trainer.memory_fix is None and trainer.write_synth_model is None
    with pytest.raises(
        TrainerError, match=r"'trainers.analytic:train' has no evaluate_checkpoint\(.*\): why"
    ):
        trainer.require("evaluate_checkpoint", "why")
    with pytest.raises(TrainerError, match="'trainers.analytic:train' has no preflight measurement"):
        trainer.require("preflight", "why")


@pytest.fixture
def module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    mod = types.ModuleType("contract_probe")
    monkeypatch.setitem(sys.modules, "contract_probe", mod)
    return mod


def test_one_error_names_the_target_and_everything_missing(module: types.ModuleType):
    with pytest.raises(TrainerError) as e:
        load_trainer("contract_probe:fit")
    message = str(e.value)
    assert "'contract_probe:fit'" in message
    assert "no function 'fit'" in message and "no pydantic model 'Options'" in message

    module.fit = lambda trial, report: None
    module.Options = dict  # not a pydantic model
    with pytest.raises(TrainerError, match="no pydantic model 'Options'") as e:
        load_trainer("contract_probe:fit")
    assert "no function" not in str(e.value)

    class Options(BaseModel):
        pass

    module.Options = Options
    module.preflight = "not callable"
    trainer = load_trainer("contract_probe:fit")
    assert trainer.train is module.fit and trainer.preflight is None


def test_a_module_that_does_not_import_is_named():
    with pytest.raises(TrainerError, match="cannot import 'no_such_trainer_pkg.mod'"):
        load_trainer("no_such_trainer_pkg.mod:train")
