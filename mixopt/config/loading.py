"""Experiment YAML in, a validated :class:`~mixopt.config.models.Experiment` out.

Validation happens once, here, at the edge. Every problem is reported as one line
``FILE:LINE: yaml.path: what is wrong`` and all problems are reported together, so a user
fixes a config in one pass. Nothing downstream ever sees a raw dict.

Strings may reference environment variables as ``${VAR}`` or ``${VAR:-default}`` (for
cluster jobs that pass the data root, storage URI or tracking server by environment).
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mixopt.config.checks import clean_loc, cross_problems, nothing_to_optimise, trainer_option_problems
from mixopt.config.models import Experiment
from mixopt.datasets import is_local_reference
from mixopt.task import TaskConfig

# ${VAR} or ${VAR:-default} inside a YAML string.
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    line: int | None = None


class ConfigError(ValueError):
    """All problems in one config, each as ``FILE:LINE: path: message``."""

    def __init__(self, problems: list[Problem], source: str | None = None):
        self.problems = problems
        self.source = source
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        out = []
        for p in self.problems:
            where = self.source or "<config>"
            if p.line is not None:
                where = f"{where}:{p.line}"
            out.append(
                f"{where}: {p.path or '(top level)'}: {p.message}" if p.path else f"{where}: {p.message}"
            )
        return out


# --------------------------------------------------------------------------- YAML with lines


def _expand_env(text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        value = os.environ.get(name)
        if value is None or value == "":
            if default is None:
                raise KeyError(name)
            return default
        return value

    return _ENV_RE.sub(sub, text)


# An experiment config holds a few hundred values and nests a few levels deep. Aliases make a YAML
# a graph: nine nested aliases of nine expand to 9**9 values ("billion laughs") and an alias inside
# its own anchor (`a: &x [*x]`) to an infinite list. Construction stops at these bounds instead.
MAX_VALUES = 100_000
MAX_DEPTH = 64


# The tags a plain YAML value resolves to (explicit ``!!str``, ``!!int``... too). Any other tag
# (``!!python/name:...``, ``!!binary``, a custom ``!tag``) asks a loader to build an object an
# experiment config never holds.
_CORE = "tag:yaml.org,2002:"
PLAIN_TAGS = frozenset(_CORE + t for t in ("str", "int", "float", "bool", "null", "seq", "map"))


def _shown_tag(tag: str) -> str:
    """A tag as the YAML wrote it: ``!!python/name:os.system`` rather than its resolved URI."""
    return repr("!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag)


class _Bounds:
    """What one construction has built so far: the value count and the nodes on the current path."""

    def __init__(self) -> None:
        self.values = 0
        self.open: set[int] = set()


class _Stop(Exception):
    """A problem that stops construction (a value too big or too deep, a recursive alias, a tag)."""

    def __init__(self, problem: Problem):
        self.problem = problem


def _construct(
    node: yaml.Node,
    path: tuple,
    lines: dict[tuple, int],
    problems: list[Problem],
    bounds: _Bounds | None = None,
) -> Any:
    """Build Python data from a composed YAML node, recording each value's 1-based line.

    Raises :class:`_Stop` past :data:`MAX_VALUES` values or :data:`MAX_DEPTH` levels, on an
    alias that refers to a node containing it, or on a tag outside :data:`PLAIN_TAGS`.
    """
    bounds = bounds or _Bounds()
    line = node.start_mark.line + 1
    bounds.values += 1
    if bounds.values > MAX_VALUES:
        raise _Stop(
            Problem(
                _fmt_path(path),
                f"the YAML expands to more than {MAX_VALUES:,} values (aliases nested in aliases?); "
                "an experiment config is far smaller: write the values out instead of nesting aliases",
                line,
            )
        )
    if len(path) > MAX_DEPTH:
        raise _Stop(
            Problem(
                _fmt_path(path[:3]) + "…",
                f"nested more than {MAX_DEPTH} levels deep; an experiment config is a few levels deep",
                line,
            )
        )
    lines[path] = line
    if node.tag not in PLAIN_TAGS:
        raise _Stop(
            Problem(
                _fmt_path(path),
                f"the YAML tag {_shown_tag(node.tag)} is not allowed: an experiment config holds plain "
                "values (strings, numbers, booleans, lists, mappings); remove the tag",
                line,
            )
        )
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if id(node) in bounds.open:
            raise _Stop(
                Problem(
                    _fmt_path(path),
                    f"a recursive alias: the value anchored at line {line} contains an alias to itself "
                    "(an infinite value); remove the alias",
                    line,
                )
            )
        bounds.open.add(id(node))
        try:
            return _construct_collection(node, path, lines, problems, bounds)
        finally:
            bounds.open.discard(id(node))
    value = _scalar(node) if node.tag != "tag:yaml.org,2002:str" else node.value
    if isinstance(value, str) and "${" in value:
        try:
            value = _expand_env(value)
            # An expanded scalar is re-read as YAML so ${N_TRIALS} can still be a number.
            if node.style is None:
                value = yaml.safe_load(value) if value.strip() else value
        except KeyError as e:
            problems.append(
                Problem(
                    _fmt_path(path),
                    f"environment variable {e.args[0]} is not set "
                    f"(use ${{{e.args[0]}:-default}} for a default)",
                    node.start_mark.line + 1,
                )
            )
    return value


def _construct_collection(
    node: yaml.Node, path: tuple, lines: dict[tuple, int], problems: list[Problem], bounds: _Bounds
) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, path + (i,), lines, problems, bounds) for i, v in enumerate(node.value)]
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise _Stop(
                Problem(
                    _fmt_path(path), "a key must be a plain value, not a list or mapping", _line_of(key_node)
                )
            )
        if key_node.tag not in PLAIN_TAGS:
            raise _Stop(
                Problem(
                    _fmt_path(path),
                    f"the YAML tag {_shown_tag(key_node.tag)} is not allowed on a key; remove the tag",
                    _line_of(key_node),
                )
            )
        key = _scalar(key_node) if key_node.tag != "tag:yaml.org,2002:str" else key_node.value
        if key in out:
            problems.append(Problem(_fmt_path(path + (key,)), "duplicate key", _line_of(key_node)))
        out[key] = _construct(value_node, path + (key,), lines, problems, bounds)
        # The key's line is more useful than a block value's first line.
        lines[path + (key,)] = _line_of(key_node)
    return out


def _line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _scalar(node: yaml.Node) -> Any:
    """The Python value of a resolved scalar node (a blank value is None, as in YAML)."""
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _fmt_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _line_for(loc: tuple, lines: dict[tuple, int]) -> int | None:
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def _pydantic_problems(err: ValidationError, lines: dict[tuple, int]) -> list[Problem]:
    problems = []
    seen = set()
    for e in err.errors(include_url=False):
        loc = clean_loc(tuple(e["loc"]))
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if e["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "int_type" and isinstance(e.get("input"), bool):
            msg = f"must be an integer, got {str(e['input']).lower()} (a YAML boolean)"
        elif e["type"] in ("bool_type", "bool_parsing"):
            msg = f"{msg} (true or false), got {e['input']!r}"
        elif e.get("input", ...) is None and loc and _line_for(loc, lines) is not None:
            msg = f"the key has no value (left blank?): {msg[0].lower()}{msg[1:]}"
        key = (loc, msg)
        if key in seen:
            continue
        seen.add(key)
        problems.append(Problem(_fmt_path(loc), msg, _line_for(loc, lines)))
    return problems


# YAML keys the product no longer has: path -> (the value that means what the product does now,
# why the key went). Every sweep's config.yaml records the defaults it ran with, so a recorded
# config written before a removal names that value: it is dropped and the config still loads
# (soup, report, --resume). Any other value is refused with one line saying what became of it.
REMOVED_KEYS: dict[tuple[str, ...], tuple[Any, str]] = {
    ("optimizer", "surrogate"): (
        "single",
        "one GP on the objective is the only model (the per-task composite GP lost on its "
        "benchmark: bench/JOURNAL.md, 2026-12-07)",
    ),
    ("optimizer", "proxy"): (
        None,
        "the optimizer learns from trained trials only (the merged-experts proxy lost on its "
        "benchmark: bench/JOURNAL.md, 2026-12-07)",
    ),
}


def drop_removed(data: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[tuple[str, ...], Any, str]]]:
    """``data`` without the :data:`REMOVED_KEYS` (a copy where any was there), and ``(path, value,
    why)`` of those that held anything but what the product does now."""
    refused: list[tuple[tuple[str, ...], Any, str]] = []
    for path, (kept, why) in REMOVED_KEYS.items():
        *parents, key = path
        node: Any = data
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict) or key not in node:
            continue
        if node[key] != kept:
            refused.append((path, node[key], why))
        data = copy.deepcopy(data)
        node = data
        for p in parents:
            node = node[p]
        del node[key]
    return data, refused


def _removed_problems(
    refused: list[tuple[tuple[str, ...], Any, str]], lines: dict[tuple, int]
) -> list[Problem]:
    return [
        Problem(
            _fmt_path(path),
            f"{value!r} is no longer an option: {why}; delete the key",
            _line_for(path, lines),
        )
        for path, value, why in refused
    ]


def experiment_from_dict(
    data: Any,
    *,
    source: str | None = None,
    lines: dict[tuple, int] | None = None,
    check_trainer: bool = True,
    base_dir: Path | None = None,
    sweep: bool = False,
) -> Experiment:
    """Validate a plain dict into an :class:`Experiment`; raise :class:`ConfigError` listing every problem.

    ``sweep``: also refuse a config whose sweep has nothing to optimise (one mixture only and no
    hyperparameter searched), for the commands that run or validate a sweep.

    Relative paths (tasks, ``storage``, ``tracking.uri``'s sqlite file, ``trainer.model``,
    ``optimizer.warm_start.state``) are resolved against ``base_dir`` when given (the working
    directory otherwise), so a sweep's trials, which may run elsewhere, get absolute paths.
    """
    lines = lines or {}
    if not isinstance(data, dict):
        raise ConfigError([Problem("", "the config must be a mapping of keys to values", 1)], source)
    data, refused = drop_removed(data)
    removed = _removed_problems(refused, lines)
    try:
        exp = Experiment.model_validate(data)
    except ValidationError as err:
        raise ConfigError(removed + _pydantic_problems(err, lines), source) from None
    if removed:
        raise ConfigError(removed, source)
    cross = cross_problems(exp)
    if sweep:
        cross += nothing_to_optimise(exp)
    if check_trainer:
        cross += trainer_option_problems(exp)
    if cross:
        raise ConfigError([Problem(_fmt_path(loc), msg, _line_for(loc, lines)) for loc, msg in cross], source)
    exp = _resolve_paths(exp, (base_dir or Path.cwd()).resolve())
    problem = _storage_problem(Path(exp.storage), exp.name)
    if problem:
        raise ConfigError([Problem("storage", problem, _line_for(("storage",), lines))], source)
    return exp


def _storage_problem(storage: Path, name: str) -> str | None:
    """What stands where the sweep makes its folders (``storage/<name>/sweep-<id>``): a file at
    ``storage``, above it, or at ``storage/<name>``; None when nothing does."""
    for p in (storage / name, storage, *storage.parents):
        if p.is_dir():
            return None
        if os.path.lexists(p):
            what = "a file" if p.is_file() else "not a folder"
            where = f"storage {storage} is" if p == storage else f"{p} is"
            return f"{where} {what}: give a folder for the trial checkpoints (the sweep writes under {storage / name})"
    return None


def _resolve_paths(exp: Experiment, base: Path) -> Experiment:
    """Every relative path the YAML gives, made absolute against ``base`` (the YAML's folder).

    A sweep's trials may run on other nodes and in other working directories, and a YAML names
    its data next to itself (``../data/synthetic``) wherever it is run from. Paths the YAML does
    not give (the default ``storage: ./runs``, the default MLflow store) stay in the working
    directory, where the user runs the command.
    """
    tasks = [
        t.model_copy(
            update={k: _under(base, v) for k in ("path", "train", "dev") if (v := getattr(t, k)) is not None}
            | _resolved_dataset(t, base)
        )
        for t in exp.tasks
    ]
    update: dict[str, Any] = {"tasks": tasks}
    warm = exp.optimizer.warm_start
    if warm is not None and warm.state is not None and not warm.state.is_absolute():
        update["optimizer"] = exp.optimizer.model_copy(
            update={"warm_start": warm.model_copy(update={"state": _under(base, warm.state)})}
        )
    storage_base = base if "storage" in exp.model_fields_set else Path.cwd().resolve()
    update["storage"] = str(_under(storage_base, exp.storage))
    if exp.tracking.uri is not None:
        update["tracking"] = exp.tracking.model_copy(update={"uri": _resolved_uri(exp.tracking.uri, base)})
    model = exp.trainer.knobs.model
    if model is not None and _is_local_model(model, base):
        update["trainer"] = exp.trainer.model_copy(update={"model": str(_under(base, model))})
    return exp.model_copy(update=update)


def _resolved_uri(uri: str, base: Path) -> str:
    """A sqlite store's relative file (``sqlite:///mlflow.db``) or a bare relative folder, made absolute."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        rest = uri[len(prefix) :]
        if rest and not rest.startswith("/") and not rest.startswith(":memory:"):
            return prefix + str(_under(base, rest))
        return uri
    if "://" in uri or uri.startswith("file:") or Path(uri).expanduser().is_absolute():
        return uri
    return str(_under(base, uri))


def _under(base: Path, path: str | Path) -> Path:
    """``path`` made absolute against ``base``; ``..`` folded away so the printed config reads plainly."""
    return Path(os.path.normpath(base / Path(path).expanduser()))


def _is_local_model(model: str, base: Path) -> bool:
    """Whether ``trainer.model`` is a relative local path (``org/name`` is a hub id unless ``org/`` is here)."""
    if "://" in model or Path(model).expanduser().is_absolute():
        return False
    if model.startswith(("./", "../", "~")):
        return True
    parts = model.split("/")
    return len(parts) > 2 or (base / parts[0]).is_dir() or (base / model).exists()


def _resolved_dataset(task: TaskConfig, base: Path) -> dict[str, Any]:
    """A relative local ``dataset`` path made absolute against ``base``; hub ids are left as they are."""
    d = task.dataset
    if not d or not is_local_reference(d) and not (base / d).exists():
        return {}
    return {"dataset": str(_under(base, d))}


def parse_yaml(text: str, source: str = "<string>") -> tuple[Any, dict[tuple, int]]:
    """Parse YAML text into data and a map from key path to line; YAML errors become ConfigError."""
    problems: list[Problem] = []
    lines: dict[tuple, int] = {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise ConfigError(
            [Problem("", f"nested too deeply; an experiment config is at most {MAX_DEPTH} levels deep")],
            source,
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        if isinstance(e, yaml.reader.ReaderError):  # a control character: likely a binary file
            line = text[: e.position].count("\n") + 1
            code = ord(e.character) if isinstance(e.character, str) else e.character
            reason = f"not a text file (character 0x{code:02x}); is this the experiment YAML?"
        else:
            reason = f"invalid YAML: {getattr(e, 'problem', None) or e}"
        raise ConfigError([Problem("", reason, line)], source) from None
    if node is None:
        raise ConfigError([Problem("", "the file is empty", 1)], source)
    try:
        data = _construct(node, (), lines, problems)
    except _Stop as e:
        raise ConfigError([e.problem], source) from None
    if problems:
        raise ConfigError(problems, source)
    return data, lines


def load_experiment(path: str | Path, *, check_trainer: bool = True, sweep: bool = False) -> Experiment:
    """Load and validate an experiment YAML. Raises :class:`ConfigError` naming file, line and key.

    ``sweep``: as :func:`experiment_from_dict`'s, for the commands that run or validate a sweep."""
    path = Path(path)
    if not path.exists():
        raise ConfigError([Problem("", "no such file")], str(path))
    if path.is_dir():
        raise ConfigError([Problem("", "is a directory; give the experiment YAML file")], str(path))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(
            [Problem("", f"not UTF-8 (byte 0x{raw[e.start]:02x}); is this the experiment YAML?", line)],
            str(path),
        ) from None
    data, lines = parse_yaml(text, str(path))
    return experiment_from_dict(
        data,
        source=str(path),
        lines=lines,
        check_trainer=check_trainer,
        base_dir=path.resolve().parent,
        sweep=sweep,
    )


def dump_experiment(exp: Experiment) -> str:
    """The resolved config as YAML (defaults filled in, paths absolute)."""
    data = exp.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False)
