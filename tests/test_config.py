from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from mixopt.config import ConfigError, dump_experiment, load_experiment

EXPERIMENTS = sorted(Path(__file__).resolve().parents[1].joinpath("experiments").glob("*.yaml"))

GOOD = textwrap.dedent(
    """\
    name: t
    tasks:
      - name: a
        kind: retrieval
        path: data/a
      - name: b
        kind: sts
        path: data/b
      - kind: classification
        name: c
        train: data/c/train.jsonl
        dev: data/c/dev.jsonl
    search:
      bounds:
        a: {min: 0.1, max: 0.8}
      seed_mixtures:
        - {a: 0.5, b: 0.25, c: 0.25}
      hyperparameters:
        learning_rate: {type: log_float, low: 1.0e-5, high: 1.0e-3}
        temperature: {type: float, low: 0.01, high: 0.1}
        batch_size: {type: int, low: 8, high: 64}
        objective: {type: categorical, choices: [mean_task, mean_kind]}
    optimizer:
      n_seeds: 4
      dirichlet_alpha: {a: 2.0}
      max_trials: 8
    trainer:
      target: trainers.embedding:train
      steps: 10
    """
)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_shipped_experiment_validates(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_DIR", "/data")
    exp = load_experiment(path)
    assert exp.tasks and exp.trainer.target
    # Shipped seed mixtures are real mixtures of the experiment's tasks.
    for mix in exp.search.seed_mixtures:
        assert set(mix) <= set(exp.task_names)
        assert abs(sum(mix.values()) - 1) < 1e-6


def test_good_config_loads_with_defaults_and_absolute_paths(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, GOOD))
    assert exp.task_names == ["a", "b", "c"]
    assert exp.task("a").metric == "ndcg@10" and exp.task("b").metric == "spearman"
    assert exp.task("a").path.is_absolute()
    assert exp.task("c").dev_file.name == "dev.jsonl"
    assert exp.search.hyperparameters["learning_rate"].type == "log_float"
    assert exp.tracking.resolved_uri() in ("sqlite:///mlflow.db",) or exp.tracking.uri is None
    assert exp.experiment_name == "t"
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):  # frozen after validation
        exp.name = "other"  # type: ignore[misc]


def test_env_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("N_TRIALS", "12")
    text = GOOD.replace("max_trials: 8", "max_trials: ${N_TRIALS}").replace(
        "path: data/a", "path: ${ROOT:-/r}/a"
    )
    exp = load_experiment(write(tmp_path, text))
    assert exp.optimizer.max_trials == 12
    assert str(exp.task("a").path) == "/r/a"


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# Each bad config: (edit of GOOD, the YAML path named, a phrase of the message, the text on the reported line)
BAD = [
    ("unknown_top", GOOD + "colour: red\n", "colour", "unknown key", "colour: red"),
    (
        "removed_proxy",
        GOOD.replace("max_trials: 8", "max_trials: 8\n  proxy: {kind: merged_experts}"),
        "optimizer.proxy",
        "is no longer an option: the optimizer learns from trained trials only",
        "proxy:",
    ),
    (
        "unknown_task_key",
        GOOD.replace("kind: sts", "kind: sts\n    weight: 3"),
        "tasks[1].weight",
        "unknown key",
        "weight: 3",
    ),
    ("bad_kind", GOOD.replace("kind: sts", "kind: ranking"), "tasks[1].kind", "retrieval", "kind: ranking"),
    ("missing_name", GOOD.replace("name: t\n", ""), "name", "required", None),
    (
        "bad_metric",
        GOOD.replace("kind: sts\n", "kind: sts\n    metric: ndcg@10\n"),
        "tasks[1]",
        "not defined for sts",
        "- name: b",
    ),
    ("no_paths", GOOD.replace("    path: data/b\n", ""), "tasks[1]", "either 'path'", "- name: b"),
    (
        "seed_unknown_task",
        GOOD.replace("{a: 0.5, b: 0.25, c: 0.25}", "{a: 0.5, b: 0.25, z: 0.25}"),
        "search.seed_mixtures[0]",
        "unknown task(s) ['z']",
        "{a: 0.5",
    ),
    (
        "seed_negative",
        GOOD.replace("{a: 0.5, b: 0.25, c: 0.25}", "{a: 0.75, b: 0.5, c: -0.25}"),
        "search.seed_mixtures[0]",
        "-0.25",
        "{a: 0.75",
    ),
    (
        "seed_sum",
        GOOD.replace("{a: 0.5, b: 0.25, c: 0.25}", "{a: 0.5, b: 0.25, c: 0.2}"),
        "search.seed_mixtures[0]",
        "sum to 1",
        "{a: 0.5",
    ),
    (
        "seed_outside_bounds",
        GOOD.replace("{a: 0.5, b: 0.25, c: 0.25}", "{a: 0.05, b: 0.5, c: 0.45}"),
        "search.seed_mixtures[0].a",
        "outside its bounds",
        "{a: 0.05",
    ),
    (
        "bounds_unknown_task",
        GOOD.replace("a: {min: 0.1, max: 0.8}", "q: {min: 0.1}"),
        "search.bounds.q",
        "unknown task",
        "q: {min",
    ),
    (
        "bounds_min_gt_max",
        GOOD.replace("a: {min: 0.1, max: 0.8}", "a: {min: 0.9, max: 0.2}"),
        "search.bounds.a",
        "greater than max",
        "a: {min: 0.9",
    ),
    (
        "bounds_infeasible",
        GOOD.replace("a: {min: 0.1, max: 0.8}", "a: {min: 0.7}\n    b: {min: 0.6}"),
        "search.bounds",
        "sum to 1.3",
        "bounds:",
    ),
    (
        "hp_low_high",
        GOOD.replace("low: 0.01, high: 0.1", "low: 0.5, high: 0.1"),
        "search.hyperparameters.temperature",
        "less than high",
        "temperature:",
    ),
    (
        "hp_log_nonpositive",
        GOOD.replace("low: 1.0e-5", "low: 0.0"),
        "search.hyperparameters.learning_rate.low",
        "greater than 0",
        "learning_rate:",
    ),
    (
        "hp_bad_type",
        GOOD.replace("type: int", "type: integer"),
        "search.hyperparameters.batch_size",
        "type",
        "batch_size:",
    ),
    (
        "alpha_negative",
        GOOD.replace("{a: 2.0}", "{a: -1.0}"),
        "optimizer.dirichlet_alpha",
        "positive",
        "dirichlet_alpha",
    ),
    (
        "alpha_unknown_task",
        GOOD.replace("{a: 2.0}", "{zz: 2.0}"),
        "optimizer.dirichlet_alpha.zz",
        "unknown task",
        "dirichlet_alpha",
    ),
    (
        "max_trials_zero",
        GOOD.replace("max_trials: 8", "max_trials: 0"),
        "optimizer.max_trials",
        "greater than or equal to 1",
        "max_trials: 0",
    ),
    (
        "noise_sd_zero",
        GOOD.replace("max_trials: 8", "max_trials: 8\n  noise_sd: 0"),
        "optimizer.noise_sd",
        "greater than 0",
        "noise_sd: 0",
    ),
    (
        "bad_target",
        GOOD.replace("trainers.embedding:train", "trainers/embedding.py"),
        "trainer.target",
        "package.module:function",
        "target:",
    ),
    (
        "target_missing_module",
        GOOD.replace("trainers.embedding:train", "no_such_pkg.mod:train"),
        "trainer.target",
        "cannot import",
        "target:",
    ),
    ("duplicate_task", GOOD.replace("name: c", "name: a"), "tasks[2].name", "used twice", "    name: a"),
    (
        "duplicate_key",
        GOOD.replace("n_seeds: 4", "n_seeds: 4\n  n_seeds: 5"),
        "optimizer.n_seeds",
        "duplicate key",
        "n_seeds: 5",
    ),
    (
        "hp_not_a_trainer_option",
        GOOD.replace("batch_size: {type: int", "batch_sise: {type: int"),
        "search.hyperparameters.batch_sise",
        "no option 'batch_sise'",
        "batch_sise:",
    ),
    ("bad_yaml", GOOD.replace("n_seeds: 4", "n_seeds: [4"), "", "invalid YAML", None),
    (
        "verify_baseline_unknown_task",
        GOOD + "verify:\n  baseline: {a: 0.5, z: 0.5}\n",
        "verify.baseline",
        "unknown task(s) ['z']",
        "  baseline:",
    ),
    (
        "verify_baseline_sum",
        GOOD + "verify:\n  baseline: {a: 0.5, b: 0.4}\n",
        "verify.baseline",
        "must sum to 1",
        "  baseline:",
    ),
    (
        "verify_negative_seeds",
        GOOD + "verify:\n  seeds: -1\n",
        "verify.seeds",
        "greater than or equal to 0",
        "  seeds: -1",
    ),
    ("verify_unknown_key", GOOD + "verify:\n  seed: 4\n", "verify.seed", "unknown key 'seed'", "  seed: 4"),
    (
        "gp_stopping_needs_multi_fidelity",
        GOOD.replace("  max_trials: 8\n", "  max_trials: 8\n  multi_fidelity: false\n")
        + "sweep:\n  early_stopping: {enabled: true, method: gp}\n",
        "sweep.early_stopping.method",
        "optimizer.multi_fidelity: false turns off",
        "  early_stopping:",
    ),
    (
        "fidelity_scale_needs_multi_fidelity",
        GOOD.replace("  max_trials: 8\n", "  max_trials: 8\n  fidelity_scale: true\n"),
        "optimizer.fidelity_scale",
        "the multi-fidelity GP is off here",
        "  fidelity_scale: true",
    ),
    (
        "fidelity_scale_not_a_bool",
        GOOD.replace("  max_trials: 8\n", "  max_trials: 8\n  fidelity_scale: 1\n"),
        "optimizer.fidelity_scale",
        "valid boolean",
        "  fidelity_scale: 1",
    ),
    (
        "fidelity_scale_auto_removed",
        GOOD.replace(
            "  max_trials: 8\n", "  max_trials: 8\n  multi_fidelity: true\n  fidelity_scale: auto\n"
        ),
        "optimizer.fidelity_scale",
        "'auto'",
        "  fidelity_scale: auto",
    ),
    (
        "exploit_last_negative",
        GOOD.replace("  max_trials: 8\n", "  max_trials: 8\n  exploit_last: -1\n"),
        "optimizer.exploit_last",
        "greater than or equal to 0",
        "  exploit_last: -1",
    ),
    (
        "grace_not_below_steps",
        GOOD + "sweep:\n  early_stopping: {enabled: true, grace_period: 10}\n",
        "sweep.early_stopping.grace_period",
        "not below trainer.steps (10)",
        "  early_stopping:",
    ),
    (
        "unknown_stopping_method",
        GOOD + "sweep:\n  early_stopping: {enabled: true, method: hyperband}\n",
        "sweep.early_stopping.method",
        "'asha' or 'gp'",
        "  early_stopping:",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_config_names_path_and_line(tmp_path: Path, case) -> None:
    _, text, yaml_path, phrase, line_text = case
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    lines = info.value.lines()
    matching = [ln for ln in lines if yaml_path in ln and phrase in ln]
    assert matching, f"no error line names {yaml_path!r} with {phrase!r}: {lines}"
    assert all(ln.startswith(f"{path}:") for ln in lines)
    if line_text is not None:
        expected_line = _line_of(text, line_text)
        assert any(ln.startswith(f"{path}:{expected_line}:") for ln in matching), (expected_line, matching)


def test_optimizer_section_defaults_match_the_optimizer(tmp_path: Path) -> None:
    """A config that leaves the optimizer's settings unset builds the same optimizer as Python's
    defaults (config.py reads them from mixopt.optimizer.defaults; this guards that wiring)."""
    import inspect

    from mixopt.optimizer import MixtureOptimizer
    from mixopt.sweep.warm import optimizer_for

    text = GOOD.replace("  n_seeds: 4\n", "")
    assert "n_seeds" not in text
    exp = load_experiment(write(tmp_path, text))
    defaults = inspect.signature(MixtureOptimizer.__init__).parameters
    assert exp.optimizer.n_seeds == defaults["n_seeds"].default
    assert exp.optimizer.beta == defaults["beta"].default
    assert exp.optimizer.exploit_last == defaults["exploit_last"].default
    assert optimizer_for(exp).n_seeds == defaults["n_seeds"].default


def test_early_stopping_grace_defaults_to_half_the_steps(tmp_path: Path) -> None:
    from ray.tune.schedulers import ASHAScheduler

    from mixopt.sweep.stopping import make_scheduler

    exp = load_experiment(write(tmp_path, GOOD + "sweep:\n  early_stopping: {enabled: true}\n"))
    assert exp.trainer.steps == 10 and exp.sweep.early_stopping.grace(exp.trainer.steps) == 5
    sched = make_scheduler(exp, None)
    assert isinstance(sched, ASHAScheduler)
    # Ray's rungs: the budget, then grace * reduction_factor**i below it (here only the grace).
    assert sorted(m for m, _ in sched._brackets[0]._rungs) == [5, 10]
    text = GOOD + "sweep:\n  early_stopping: {enabled: true, grace_period: 2}\n"
    assert load_experiment(write(tmp_path, text)).sweep.early_stopping.grace(10) == 2


def test_asha_never_stops_a_trial_at_its_last_step_and_otherwise_decides_as_ray_s(tmp_path: Path) -> None:
    """A trainer reports its last evaluation at the step budget before its final result: Ray's own
    ASHA (the reference) stops low-ranked trials there too, throwing away a finished trial; the
    sweep's scheduler lets them finish and takes Ray's decision at every earlier rung."""
    from types import SimpleNamespace

    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from mixopt.sweep.stopping import make_scheduler

    text = GOOD + "sweep:\n  early_stopping: {enabled: true, grace_period: 5, reduction_factor: 2}\n"
    exp = load_experiment(write(tmp_path, text))
    ours = make_scheduler(exp, None)
    ray_s = ASHAScheduler(
        time_attr="mixopt_step",
        metric="objective",
        mode="max",
        max_t=10,
        grace_period=5,
        reduction_factor=2,
        stop_last_trials=False,
    )
    assert sorted(m for m, _ in ray_s._brackets[0]._rungs) == [5, 10]  # a rung at the budget
    # At the grace rung six trials arrive best-last (none below the median so far: they go on) and
    # two low ones after them (both schedulers stop those); at the budget the six arrive best-first
    # (each later one below the median so far): Ray's ASHA stops all but the first.
    trials = [SimpleNamespace(trial_id=f"t{i}") for i in range(8)]
    objective = {5: [0, 1, 2, 3, 4, 5, -1, -1], 10: [0, -1, -2, -3, -4, -5]}
    decided: dict[int, list[tuple[str, str]]] = {5: [], 10: []}
    for sched in (ours, ray_s):
        for t in trials:
            sched.on_trial_add(None, t)
    for step, values in objective.items():
        for t, value in zip(trials, values):
            result = {"mixopt_step": step, "objective": float(value)}
            theirs = ray_s.on_trial_result(None, t, dict(result))
            decided[step].append((ours.on_trial_result(None, t, dict(result)), theirs))
    stop, go = TrialScheduler.STOP, TrialScheduler.CONTINUE
    assert decided[5] == [(go, go)] * 6 + [(stop, stop)] * 2
    assert decided[10] == [(go, go)] + [(go, stop)] * 5


def test_multi_fidelity_unset_follows_early_stopping_and_survives_the_dump(tmp_path: Path) -> None:
    stopping = GOOD + "sweep:\n  early_stopping: {enabled: true}\n"
    cases = [
        (GOOD, None, False),
        (stopping, None, True),
        (stopping.replace("  max_trials: 8\n", "  max_trials: 8\n  multi_fidelity: false\n"), False, False),
        (GOOD.replace("  max_trials: 8\n", "  max_trials: 8\n  multi_fidelity: true\n"), True, True),
    ]
    for text, setting, effective in cases:
        exp = load_experiment(write(tmp_path, text))
        assert exp.optimizer.multi_fidelity is setting and exp.multi_fidelity is effective
        # The run's config.yaml artifact (what `mixopt soup` rebuilds the experiment from) keeps
        # the setting as written: unset stays unset, and the same early stopping decides again.
        dumped = dump_experiment(exp)
        assert yaml.safe_load(dumped)["optimizer"].get("multi_fidelity") is setting
        again = load_experiment(write(tmp_path, dumped))
        assert again == exp and again.multi_fidelity is effective
    # method gp needs the multi-fidelity GP, which early stopping turns on when it is unset.
    gp = load_experiment(write(tmp_path, GOOD + "sweep:\n  early_stopping: {enabled: true, method: gp}\n"))
    assert gp.multi_fidelity is True


def test_verify_section_defaults_and_values(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, GOOD))
    assert exp.verify.seeds == 4 and exp.verify.baseline is None
    exp = load_experiment(write(tmp_path, GOOD + "verify:\n  seeds: 0\n  baseline: {a: 0.6, c: 0.4}\n"))
    assert exp.verify.seeds == 0 and exp.verify.baseline == {"a": 0.6, "c": 0.4}


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = GOOD + "colour: red\n"
    text = text.replace("max_trials: 8", "max_trials: -1").replace("kind: sts", "kind: nope")
    with pytest.raises(ConfigError) as info:
        load_experiment(write(tmp_path, text))
    assert len(info.value.lines()) == 3


def test_trainer_options_checked_against_trainer_model(tmp_path: Path) -> None:
    text = GOOD + "  no_such_option: 1\n"
    with pytest.raises(ConfigError) as info:
        load_experiment(write(tmp_path, text))
    assert "trainer.no_such_option" in str(info.value)
    assert f":{_line_of(text, 'no_such_option')}:" in str(info.value)


def test_the_trainer_options_the_service_reads_are_typed(tmp_path: Path) -> None:
    """The service reads model, objective and matryoshka_dims through TrainerKnobs: their values when
    of the type it reads (a local model made absolute), the defaults when absent or of another type."""
    from mixopt.config import TrainerConfig, TrainerKnobs

    (tmp_path / "model").mkdir()
    text = GOOD + "  model: ./model\n  objective: mean_kind\n  matryoshka_dims: [64, 32]\n"
    knobs = load_experiment(write(tmp_path, text)).trainer.knobs
    assert knobs == TrainerKnobs(
        model=str(tmp_path / "model"), objective="mean_kind", matryoshka_dims=[64, 32]
    )
    assert load_experiment(write(tmp_path, GOOD)).trainer.knobs == TrainerKnobs()
    odd = TrainerConfig(
        target="my.trainer:train", model={"hub": "x"}, matryoshka_dims="64", objective="mean_kind"
    )
    assert odd.knobs == TrainerKnobs(objective="mean_kind")


def test_validate_cli_prints_resolved_config_or_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mixopt.cli import app

    good = write(tmp_path, GOOD)
    result = CliRunner().invoke(app, ["validate", str(good)])
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.output)
    assert resolved["optimizer"]["beta"] == 2.0 and resolved["tasks"][0]["metric"] == "ndcg@10"

    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("max_trials: 8", "max_trials: 0"))
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code != 0
    assert f"{bad}:{_line_of(GOOD, 'max_trials')}: optimizer.max_trials" in result.output
