"""The Dockerfile: one target per service, built with uv from the lock file in two layers,
running the service's own console script as a non-root user, with a healthcheck on the port
the service really listens on. No Docker engine here, so this reads the file."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

from tests.unit.deploy.support import (
    REPO,
    SERVICES,
    console_scripts,
    dockerfile_stages,
    env_names,
    exec_form,
    field_default,
    image_env,
    instructions,
    load_settings,
    settings_class,
    stage_chain,
)

pytestmark = pytest.mark.unit

SERVICE_NAMES = sorted(SERVICES)


def build_stage(target: str) -> str:
    """The stage the target copies its virtualenv from."""
    [copy] = [c for c in instructions(target, "COPY") if "/app/.venv" in c and "--from=" in c]
    found = re.search(r"--from=(\S+)", copy)
    assert found is not None
    return found.group(1)


@pytest.mark.parametrize("target", SERVICE_NAMES)
def test_every_service_is_a_target(target: str) -> None:
    assert target in dockerfile_stages()


@pytest.mark.parametrize("target", SERVICE_NAMES)
def test_the_image_runs_the_services_console_script_as_a_non_root_user(target: str) -> None:
    user = instructions(target, "USER")[-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric uid lets Kubernetes check runAsNonRoot"
    command = exec_form(instructions(target, "CMD")[-1])
    assert command[0] in console_scripts(target), f"{command[0]} is not a script of {target}"
    assert instructions(target, "ENTRYPOINT") == [], (
        "CMD alone, so `docker run … jobsprint …` works"
    )


@pytest.mark.parametrize("target", SERVICE_NAMES)
def test_dependencies_are_a_layer_of_their_own_and_dev_tools_stay_out(target: str) -> None:
    stage = build_stage(target)
    dist = SERVICES[target].dist
    runs = [shlex.split(run) for run in instructions(stage, "RUN") if "uv sync" in run]
    assert len(runs) == 2, "one sync for the dependencies, one for the workspace code"
    for argv in runs:
        assert {"--frozen", "--no-dev", "--no-editable"} <= set(argv)
        assert argv[argv.index("--package") + 1] == dist
    assert "--no-install-workspace" in runs[0] and "--no-install-workspace" not in runs[1]

    # before the dependency sync, only pyproject files and the lock file are in the context
    sequence = [
        (kw, rest)
        for s in stage_chain(stage)
        for kw, rest in s.instructions
        if kw in ("COPY", "RUN")
    ]
    first_sync = next(i for i, (kw, rest) in enumerate(sequence) if "uv sync" in rest)
    for kw, rest in sequence[:first_sync]:
        if kw == "COPY" and "--from=" not in rest:
            *sources, _ = shlex.split(rest)
            assert all(Path(s).name in ("pyproject.toml", "uv.lock") for s in sources), rest
    copied = {
        source
        for kw, rest in sequence[:first_sync]
        if kw == "COPY" and "--from" not in rest
        for source in shlex.split(rest)[:-1]
    }
    members = {
        p.relative_to(REPO).as_posix()
        for p in [*REPO.glob("libs/*/pyproject.toml"), *REPO.glob("services/*/pyproject.toml")]
    }
    assert members | {"pyproject.toml", "uv.lock"} <= copied, (
        "uv needs every workspace member's pyproject"
    )
    # the code layer has the service and the libs, nothing of a sibling service
    later = [shlex.split(r)[0] for k, r in sequence[first_sync:] if k == "COPY"]
    assert f"services/{SERVICES[target].directory}" in later
    assert not [s for s in later if s.startswith("services/") and target not in s]


@pytest.mark.parametrize("target", SERVICE_NAMES)
def test_healthcheck_probes_healthz_on_the_services_port(target: str) -> None:
    service = SERVICES[target]
    cls = settings_class(target)
    [healthcheck] = instructions(target, "HEALTHCHECK")[-1:]
    command = exec_form(healthcheck)
    assert command[:2] == ["python", "-c"], "no curl in the image: a Python one-liner"
    code = command[2]
    ast.parse(code)
    assert "/healthz" in code
    port_var = f"JOBSPRINT_{service.port_field.upper()}"
    found = re.search(r"os\.environ\.get\('(\w+)', '(\d+)'\)", code)
    assert found is not None, code
    assert found.group(1) == port_var
    assert int(found.group(2)) == field_default(cls, service.port_field)
    assert [p for p in instructions(target, "EXPOSE")] == [found.group(2)]


@pytest.mark.parametrize("target", SERVICE_NAMES)
def test_image_env_names_settings_fields_and_binds_all_interfaces(target: str) -> None:
    cls = settings_class(target)
    env = {k: v for k, v in image_env(target).items() if k.startswith("JOBSPRINT_")}
    assert set(env) <= set(env_names(cls))
    settings = load_settings(cls, env)
    assert getattr(settings, SERVICES[target].host_field) == "0.0.0.0"


def test_build_and_runtime_use_the_same_python() -> None:
    # the virtualenv's interpreter is a symlink into the base image
    stages = dockerfile_stages()
    assert stages["build-base"].base == stages["runtime"].base
    assert re.fullmatch(r"python:3\.11[\w.-]*", stages["runtime"].base)


def test_dockerignore_sends_only_the_workspace() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def sent(path: str) -> bool:
        included = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            glob = pattern.lstrip("!").rstrip("/")
            regex = re.escape(glob).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
            parts = path.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(re.fullmatch(regex, p) for p in prefixes):
                included = negated
        return included

    needed = ["pyproject.toml", "uv.lock", "libs/workflows/README.md"]
    needed += [
        p.relative_to(REPO).as_posix()
        for folder in ("libs", "services")
        for p in (REPO / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert [p for p in needed if not sent(p)] == []
    for private in (
        ".git/HEAD",
        ".venv/bin/python",
        ".local/kafka/data/x.log",
        "tests/unit/test_x.py",
        "services/executor/src/jobsprint/executor/__pycache__/x.cpython-311.pyc",
        "services/executor/.env",
    ):
        assert not sent(private), private
