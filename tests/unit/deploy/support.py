"""Helpers for the deployment tests: the services' settings classes, the Dockerfile's stages,
offline kustomize renders and the pinned schemas of KEDA and the Compose specification.

Tools (installed by CI, see docs in the report / .ci/run):
- kustomize: `go install sigs.k8s.io/kustomize/kustomize/v5@KUSTOMIZE_VERSION`; `$KUSTOMIZE`,
  `kustomize` on PATH, `$(go env GOPATH)/bin/kustomize`, else `kubectl kustomize`.
- Kubernetes schemas: PyPI `kubernetes-validate` (bundled, offline).
- KEDA CRD and Compose schema: Go modules in the module cache, put there by
  `go mod download MODULE@VERSION`; read with GOPROXY=off, so a test never downloads.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "k8s"
DOCKERFILE = REPO / "Dockerfile"
COMPOSE_FILE = REPO / "docker-compose.yml"

KUSTOMIZE_VERSION = "v5.8.1"
KEDA_MODULE, KEDA_VERSION = "github.com/kedacore/keda/v2", "v2.18.0"
COMPOSE_GO_MODULE, COMPOSE_GO_VERSION = "github.com/compose-spec/compose-go/v2", "v2.16.2"

# oldest and newest Kubernetes minor the manifests must be valid for
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")


@dataclass(frozen=True)
class Service:
    name: str  # Dockerfile target, image name, Deployment name and component label
    directory: str  # under services/
    dist: str
    settings: str  # "module:Class"
    host_field: str
    port_field: str

    @property
    def pyproject(self) -> Path:
        return REPO / "services" / self.directory / "pyproject.toml"


SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service(
            "api-gateway",
            "api-gateway",
            "jobsprint-api-gateway",
            "jobsprint.gateway.settings:GatewaySettings",
            "http_host",
            "http_port",
        ),
        Service(
            "executor",
            "executor",
            "jobsprint-executor",
            "jobsprint.executor.settings:ExecutorSettings",
            "executor_http_host",
            "executor_http_port",
        ),
        Service(
            "projector",
            "projector",
            "jobsprint-projector",
            "jobsprint.projector.settings:ProjectorSettings",
            "projector_http_host",
            "projector_http_port",
        ),
        Service(
            "metrics",
            "metrics",
            "jobsprint-metrics",
            "jobsprint.metrics.settings:MetricsSettings",
            "metrics_http_host",
            "metrics_http_port",
        ),
    )
}


# ---------------------------------------------------------------------------------------
# settings classes


def settings_class(service: str) -> type[BaseSettings]:
    """The service's settings class; skips the test while the service has not written it."""
    module, name = SERVICES[service].settings.split(":")
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            pytest.skip(f"{module} does not exist yet")
        raise
    cls = getattr(loaded, name, None)
    if cls is None:
        pytest.skip(f"{module}.{name} does not exist yet")
    assert isinstance(cls, type) and issubclass(cls, BaseSettings)
    return cls


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Environment variable -> field name."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper(): name for name in cls.model_fields}


def load_settings(cls: type[BaseSettings], env: Mapping[str, str | None]) -> Any:
    """The settings a process with exactly `env` would get (unknown values left out)."""
    known = {k: v for k, v in env.items() if v is not None}
    with mock.patch.dict(os.environ, known, clear=True):
        return cls()


def field_default(cls: type[BaseSettings], name: str) -> Any:
    return cls.model_fields[name].default


def console_scripts(service: str) -> dict[str, str]:
    data = tomllib.loads(SERVICES[service].pyproject.read_text())
    return dict(data["project"].get("scripts", {}))


# ---------------------------------------------------------------------------------------
# Dockerfile


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, rest)


def _logical_lines(text: str) -> Iterator[str]:
    """Instructions with their `\\` continuations joined; comment lines dropped."""
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            yield current.strip()
        current = ""
    if current.strip():
        yield current.strip()


@functools.cache
def dockerfile_stages() -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    args: dict[str, str] = {}
    current: Stage | None = None
    for line in _logical_lines(DOCKERFILE.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else f"#{len(stages)}"
            current = Stage(name=name, base=base)
            stages[name] = current
        elif current is None:
            if keyword == "ARG" and "=" in rest:
                key, _, value = rest.partition("=")
                args[key] = value
        else:
            current.instructions.append((keyword, rest))
    return stages


def stage_chain(target: str) -> list[Stage]:
    """The stage and the stages it is built FROM, base first."""
    stages = dockerfile_stages()
    chain = []
    name: str | None = target
    while name in stages:
        chain.append(stages[name])
        name = stages[name].base
    return list(reversed(chain))


def instructions(target: str, keyword: str) -> list[str]:
    return [
        rest for stage in stage_chain(target) for kw, rest in stage.instructions if kw == keyword
    ]


def image_env(target: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in instructions(target, "ENV"):
        for token in shlex.split(rest):
            key, sep, value = token.partition("=")
            if sep:
                env[key] = value
    return env


def exec_form(rest: str) -> list[str]:
    """The JSON array of a CMD/HEALTHCHECK CMD in exec form."""
    start = rest.index("[")
    value = json.loads(rest[start:])
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


# ---------------------------------------------------------------------------------------
# kustomize


def _go_env(name: str) -> str:
    go = shutil.which("go")
    if go is None:
        return ""
    return subprocess.run(
        [go, "env", name], capture_output=True, text=True, check=True
    ).stdout.strip()


@functools.cache
def kustomize_command() -> tuple[str, ...]:
    explicit = os.environ.get("KUSTOMIZE")
    if explicit:
        return (explicit, "build")
    found = shutil.which("kustomize")
    if found is None:
        gobin = _go_env("GOBIN") or (
            str(Path(_go_env("GOPATH")) / "bin") if _go_env("GOPATH") else ""
        )
        candidate = Path(gobin) / "kustomize" if gobin else None
        found = str(candidate) if candidate is not None and candidate.exists() else None
    if found is not None:
        return (found, "build")
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        return (kubectl, "kustomize")
    pytest.fail(
        "kustomize is needed: go install "
        f"sigs.k8s.io/kustomize/kustomize/v5@{KUSTOMIZE_VERSION} (or set $KUSTOMIZE)"
    )


def render(path: Path) -> list[dict[str, Any]]:
    """`kustomize build` of a kustomization directory, as a list of objects. Offline: every
    resource is a local file."""
    result = subprocess.run(
        [*kustomize_command(), str(path)], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        pytest.fail(f"kustomize build {path} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_env(
    container: dict[str, Any], objects: list[dict[str, Any]]
) -> dict[str, str | None]:
    """Every environment variable a container gets from the manifests. Values held by a
    Secret that is not rendered (created outside git) are None."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            cm = one(objects, "ConfigMap", source["configMapRef"]["name"])
            env.update({prefix + k: v for k, v in cm.get("data", {}).items()})
        if "secretRef" in source:
            for secret in find(objects, "Secret", source["secretRef"]["name"]):
                env.update({prefix + k: v for k, v in secret_data(secret).items()})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item.get("valueFrom", {})
        value: str | None = None
        if "secretKeyRef" in ref:
            for secret in find(objects, "Secret", ref["secretKeyRef"]["name"]):
                value = secret_data(secret).get(ref["secretKeyRef"]["key"])
        elif "configMapKeyRef" in ref:
            cm = one(objects, "ConfigMap", ref["configMapKeyRef"]["name"])
            value = cm.get("data", {}).get(ref["configMapKeyRef"]["key"])
        env[item["name"]] = value
    return env


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    import base64

    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    data.update(secret.get("stringData", {}))
    return data


# ---------------------------------------------------------------------------------------
# pinned schemas from Go modules


def go_module_dir(module: str, version: str) -> Path:
    """The module's folder in the Go module cache, without touching the network."""
    go = shutil.which("go")
    hint = f"go mod download {module}@{version}"
    if go is None:
        pytest.fail(f"Go is needed to locate {module}; then run: {hint}")
    result = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        env={**os.environ, "GOPROXY": "off", "GOFLAGS": "-mod=mod"},
        cwd=REPO,
        timeout=60,
    )
    info = json.loads(result.stdout or "{}")
    if result.returncode != 0 or "Dir" not in info:
        pytest.fail(f"{module}@{version} is not in the Go module cache; run: {hint}")
    return Path(info["Dir"])


@functools.cache
def keda_scaledobject_schema() -> dict[str, Any]:
    crd_path = (
        go_module_dir(KEDA_MODULE, KEDA_VERSION)
        / "config"
        / "crd"
        / "bases"
        / "keda.sh_scaledobjects.yaml"
    )
    crd = yaml.safe_load(crd_path.read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return strict_structural(version["schema"]["openAPIV3Schema"])


@functools.cache
def keda_kafka_scaler_source() -> str:
    path = go_module_dir(KEDA_MODULE, KEDA_VERSION) / "pkg" / "scalers" / "kafka_scaler.go"
    return path.read_text()


@functools.cache
def compose_spec_schema() -> dict[str, Any]:
    path = go_module_dir(COMPOSE_GO_MODULE, COMPOSE_GO_VERSION) / "schema" / "compose-spec.json"
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def strict_structural(schema: Any) -> Any:
    """A CRD's structural schema as the API server applies it: fields it does not know are
    pruned, silently. Forbidding them instead turns a misspelt field into a test failure."""
    if isinstance(schema, list):
        return [strict_structural(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_structural(v) for k, v in schema.items()}
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


# ---------------------------------------------------------------------------------------
# compose


@functools.cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


# ---------------------------------------------------------------------------------------
# quantities


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "m": 10**-3}


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity as a number (bytes, or cores)."""
    text = str(value)
    for suffix, factor in {**_BINARY, **_DECIMAL}.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)
