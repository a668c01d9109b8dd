"""The image and cluster specs agree with the project (no Docker engine runs here, so nothing builds).

What would otherwise only show up in a failed image build or a broken cluster run:

- docker/Dockerfile: its base image is the Ray release pinned in docker/constraints.txt, for the
  Python CI tests; its install line names extras that pyproject.toml defines and uses the pins;
  torch is a CUDA build of a release inside pyproject's range, from the base image's CUDA; the
  final user is not root; `mixopt --help` runs after the install.
- docker/constraints.txt: one ``==`` pin per package, every dependency of the project and of the
  installed extras pinned inside pyproject's specifier (checked with ``packaging``), torch absent.
- docker/cluster.yaml is valid for Ray's own cluster-launcher schema, docker/rayjob.yaml is a
  RayJob of the pinned Ray; both pass every ``${VAR}`` experiments/embeddinggemma.yaml reads,
  point storage and data at a filesystem mounted at the same path on every node, and track to an
  MLflow server rather than a per-machine sqlite file.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
EXPERIMENT = ROOT / "experiments" / "embeddinggemma.yaml"
IMAGE_PYTHON = "3.11"
# Markers of the image's platform: CPython 3.11 on x86_64 Linux.
IMAGE_ENV = {
    "python_version": IMAGE_PYTHON,
    "python_full_version": f"{IMAGE_PYTHON}.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}


# --------------------------------------------------------------------------- parsing helpers


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``[(INSTRUCTION, arguments)]``: comments dropped, backslash continuations joined."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def parse_pins(text: str, where: str = "constraints") -> dict[str, Version]:
    """``{canonical name: version}`` of a constraints file; each line must be ``name==version``."""
    pins: dict[str, Version] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{where}:{n}: {line!r} is not an exact pin"
        name = canonicalize_name(req.name)
        assert name not in pins, f"{where}:{n}: {req.name} is pinned twice"
        pins[name] = Version(specs[0].version)
    return pins


def pin_problems(requirements: list[Requirement], pins: dict[str, Version], provided: set[str]) -> list[str]:
    """Requirements (for the image's platform) that no pin satisfies; ``provided`` are installed otherwise."""
    problems = []
    for req in requirements:
        name = canonicalize_name(req.name)
        if name in provided or (req.marker is not None and not req.marker.evaluate(IMAGE_ENV)):
            continue
        if name not in pins:
            problems.append(f"{req}: no pin")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req}: pinned {pins[name]}, outside {req.specifier}")
    return problems


def install_extras(install_args: str) -> set[str]:
    """The extras of the ``.`` / ``.[a,b]`` target on a pip install line."""
    targets = [a for a in shlex.split(install_args) if a == "." or a.startswith(".[")]
    assert len(targets) == 1, f"expected one '.' or '.[extras]' target in: {install_args}"
    m = re.fullmatch(r"\.(?:\[([^\]]*)\])?", targets[0])
    assert m, targets[0]
    return {canonicalize_name(e) for e in (m.group(1) or "").split(",") if e.strip()}


# Read by the experiment but optional on a cluster: unset means "one trial per GPU at start".
OPTIONAL_ENV = {"MAX_CONCURRENT"}


def experiment_env_vars() -> set[str]:
    """Every ``${VAR}`` / ``${VAR:-default}`` the cluster experiment reads and a cluster must set."""
    return set(re.findall(r"\$\{(\w+)(?::-[^}]*)?\}", EXPERIMENT.read_text())) - OPTIONAL_ENV


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions((DOCKER / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def pins() -> dict[str, Version]:
    return parse_pins((DOCKER / "constraints.txt").read_text())


def _project_install(instructions: list[tuple[str, str]]) -> tuple[int, str]:
    found = [
        (i, args)
        for i, (word, args) in enumerate(instructions)
        if word == "RUN" and "pip install" in args and re.search(r"(^|\s)\"?\.(\[|\"|\s|$)", args)
    ]
    assert len(found) == 1, f"expected one RUN pip install of the project '.', found {found}"
    return found[0]


def _arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    out = {}
    for word, args in instructions:
        if word == "ARG" and "=" in args:
            k, _, v = args.partition("=")
            out[k.strip()] = v.strip().strip('"')
    return out


def _base(instructions: list[tuple[str, str]]) -> re.Match:
    froms = [args for word, args in instructions if word == "FROM"]
    assert len(froms) == 1, f"one build stage expected, got FROM {froms}"
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(cu\d+|gpu)", froms[0])
    assert m, f"FROM {froms[0]}: expected an official Ray GPU image rayproject/ray:<version>-py3XX-cuXXX"
    return m


# --------------------------------------------------------------------------- Dockerfile and pins


def test_base_image_is_the_pinned_ray_release_for_the_tested_python(instructions, pins) -> None:
    m = _base(instructions)
    assert Version(m.group(1)) == pins["ray"], (
        f"base image Ray {m.group(1)} != constraints ray=={pins['ray']}"
    )
    python = f"{m.group(2)}.{m.group(3)}"
    assert python == IMAGE_PYTHON
    assert SpecifierSet(pyproject()["project"]["requires-python"]).contains(python)


def test_install_line_uses_the_pins_and_extras_pyproject_defines(instructions) -> None:
    index, args = _project_install(instructions)
    constraint = re.search(r"(?:-c|--constraint)\s+(\S+)", args)
    assert constraint, f"the project install does not use the pins: {args}"
    copies = [a.split() for w, a in instructions[:index] if w == "COPY"]
    assert any(c[-2:] == ["docker/constraints.txt", constraint.group(1)] for c in copies), (
        f"{constraint.group(1)} is not docker/constraints.txt copied before the install"
    )
    extras = install_extras(args)
    defined = {canonicalize_name(e) for e in pyproject()["project"].get("optional-dependencies", {})}
    assert extras <= defined, f"extras {sorted(extras - defined)} are not in pyproject.toml"


def test_every_dependency_is_pinned_inside_pyprojects_range(instructions, pins) -> None:
    project = pyproject()["project"]
    extras = install_extras(_project_install(instructions)[1])
    optional = {canonicalize_name(k): v for k, v in project.get("optional-dependencies", {}).items()}
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for e in sorted(extras) for r in optional[e]]
    assert "torch" not in pins, "constraints.txt pins torch: that would be the dev box's CPU build"
    assert pin_problems(reqs, pins, provided={"torch"}) == []


def test_pin_check_flags_missing_and_out_of_range_pins() -> None:
    reqs = [
        Requirement("numpy>=1.26"),
        Requirement("scipy>=1.12"),
        Requirement("pywin32>=300; sys_platform == 'win32'"),
        Requirement("torch>=2.5,<3"),
    ]
    pins = parse_pins("numpy==1.25.2\n")
    assert pin_problems(reqs, pins, provided={"torch"}) == [
        "numpy>=1.26: pinned 1.25.2, outside >=1.26",
        "scipy>=1.12: no pin",
    ]
    with pytest.raises(AssertionError, match="not an exact pin"):
        parse_pins("numpy>=2\n")


def test_torch_is_a_cuda_build_in_range_installed_before_the_project(instructions) -> None:
    args = _arg_defaults(instructions)
    (torch_req,) = [
        Requirement(r) for r in pyproject()["project"]["dependencies"] if Requirement(r).name == "torch"
    ]
    assert torch_req.specifier.contains(args["TORCH_VERSION"]), (args["TORCH_VERSION"], str(torch_req))
    cuda = _base(instructions).group(4)
    assert args["TORCH_INDEX"].rstrip("/").endswith(f"/whl/{cuda}"), (
        f"torch comes from {args['TORCH_INDEX']} but the base image is {cuda}"
    )
    torch_runs = [i for i, (w, a) in enumerate(instructions) if w == "RUN" and "torch==${TORCH_VERSION}" in a]
    assert len(torch_runs) == 1 and "${TORCH_INDEX}" in instructions[torch_runs[0]][1]
    # Installed first, so the project install finds torch satisfied instead of fetching PyPI's.
    assert torch_runs[0] < _project_install(instructions)[0]


def test_image_runs_as_a_non_root_user_and_smoke_checks_the_cli(instructions) -> None:
    users = [a for w, a in instructions if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    index, _ = _project_install(instructions)
    assert ("RUN", "mixopt --help") in instructions[index + 1 :]


# --------------------------------------------------------------------------- cluster specs


def _run_options(cluster: dict) -> tuple[dict[str, str], dict[str, str]]:
    """(``-e`` env, ``-v`` host->container mounts) from the launcher's docker run_options."""
    env, mounts = {}, {}
    for opt in cluster["docker"].get("run_options", []):
        words = shlex.split(opt)
        for flag, value in zip(words, words[1:]):
            if flag in ("-e", "--env"):
                k, _, v = value.partition("=")
                env[k] = v
            elif flag in ("-v", "--volume"):
                host, container = value.split(":")[:2]
                mounts[host] = container
    return env, mounts


def _under(path: str, mount: str) -> bool:
    return Path(path).is_relative_to(Path(mount))


def test_cluster_launcher_config_is_valid_and_wires_storage_and_tracking(pins) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    cluster = yaml.safe_load((DOCKER / "cluster.yaml").read_text())
    validate_config(prepare_config(cluster))  # Ray's own schema for `ray up`
    env, mounts = _run_options(cluster)
    assert experiment_env_vars() <= set(env), f"missing {sorted(experiment_env_vars() - set(env))}"
    assert env["MLFLOW_TRACKING_URI"].startswith(("http://", "https://"))
    assert env.get("RAY_AUTH_MODE") == "token"
    shared = [c for h, c in mounts.items() if h == c]
    assert len(shared) == 1, f"expected one host path mounted at the same path in the container: {mounts}"
    assert _under(env["MIXOPT_STORAGE"], shared[0]) and _under(env["DATA_DIR"], shared[0])
    # The host mounts the shared filesystem at that path before the container starts.
    assert any(shared[0] in c and "mount " in c for c in cluster["initialization_commands"])
    image = cluster["docker"]["image"]
    rayjob = _rayjob()
    assert {c["image"] for c in _containers(rayjob)} == {image}


def _docs() -> list[dict]:
    return [d for d in yaml.safe_load_all((DOCKER / "rayjob.yaml").read_text()) if d]


def _rayjob() -> dict:
    (job,) = [d for d in _docs() if d["kind"] == "RayJob"]
    return job


def _groups(job: dict) -> list[dict]:
    spec = job["spec"]["rayClusterSpec"]
    return [spec["headGroupSpec"], *spec["workerGroupSpecs"]]


def _containers(job: dict) -> list[dict]:
    return [c for g in _groups(job) for c in g["template"]["spec"]["containers"]]


def _container_env(container: dict) -> dict[str, str]:
    maps = {d["metadata"]["name"]: d["data"] for d in _docs() if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        env.update(maps[src["configMapRef"]["name"]])  # KeyError: a ConfigMap this file does not define
    for e in container.get("env", []):
        env[e["name"]] = e.get("value", "<from secret>")
    return env


def test_rayjob_runs_the_sweep_on_the_pinned_ray_with_shared_storage(instructions, pins) -> None:
    job = _rayjob()
    assert job["apiVersion"] == "ray.io/v1"
    assert Version(job["spec"]["rayClusterSpec"]["rayVersion"]) == pins["ray"]
    assert job["spec"]["rayClusterSpec"]["authOptions"]["mode"] == "token"
    entry = shlex.split(job["spec"]["entrypoint"])
    assert entry[:2] == ["mixopt", "sweep"]
    workdir = [a for w, a in instructions if w == "WORKDIR"][-1]
    assert Path(entry[2]) == Path(workdir) / EXPERIMENT.relative_to(ROOT), (entry[2], workdir)

    claims = {d["metadata"]["name"]: d for d in _docs() if d["kind"] == "PersistentVolumeClaim"}
    experiment = yaml.safe_load(EXPERIMENT.read_text())
    mounts_by_container = []
    for group in _groups(job):
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"]:
            env = _container_env(c)
            assert experiment_env_vars() <= set(env), (c["name"], sorted(experiment_env_vars() - set(env)))
            assert env["MLFLOW_TRACKING_URI"].startswith(("http://", "https://"))
            shared = [
                m["mountPath"]
                for m in c["volumeMounts"]
                if "persistentVolumeClaim" in volumes[m["name"]]
                and "ReadWriteMany"
                in claims[volumes[m["name"]]["persistentVolumeClaim"]["claimName"]]["spec"]["accessModes"]
            ]
            assert len(shared) == 1, f"{c['name']}: expected one ReadWriteMany volume"
            assert _under(env["MIXOPT_STORAGE"], shared[0]) and _under(env["DATA_DIR"], shared[0])
            mounts_by_container.append(shared[0])
    assert len(set(mounts_by_container)) == 1, "the shared volume must sit at the same path in every pod"
    # Every GPU worker pod fits one trial of the experiment.
    for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        (c,) = group["template"]["spec"]["containers"]
        limits = c["resources"]["limits"]
        assert float(limits["nvidia.com/gpu"]) >= experiment["resources"]["gpus"]
        assert float(limits["cpu"]) >= experiment["resources"]["cpus"]
