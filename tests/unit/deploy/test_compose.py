"""docker-compose.yml: valid for the Compose specification, builds real Dockerfile targets,
wires every service to the right infrastructure with settings the services read, starts
nothing before its dependencies are healthy. No Docker engine here, so this reads the file."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest

from tests.unit.deploy.support import (
    REPO,
    SERVICES,
    compose,
    compose_env,
    compose_spec_schema,
    console_scripts,
    dockerfile_stages,
    env_names,
    image_env,
    instructions,
    load_settings,
    settings_class,
)

pytestmark = pytest.mark.unit


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def target(service: dict[str, Any]) -> str | None:
    build = service.get("build")
    return build.get("target") if isinstance(build, dict) else None


def jobsprint_services() -> dict[str, str]:
    """Compose service -> the Jobsprint service (Dockerfile target) it runs."""
    return {name: t for name, s in services().items() if (t := target(s)) in SERVICES}


def effective_env(name: str) -> dict[str, str]:
    """What the process sees: the image's ENV, then the compose file's environment."""
    service = services()[name]
    env = image_env(target(service) or "")
    env.update(compose_env(service))
    return env


def settings_of(name: str) -> Any:
    return load_settings(settings_class(jobsprint_services()[name]), effective_env(name))


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration))


def test_compose_file_is_valid_for_the_compose_specification() -> None:
    validator = jsonschema.Draft202012Validator(compose_spec_schema())
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose())
    ]
    assert not errors, "\n".join(errors)


def test_every_jobsprint_service_is_built_from_a_dockerfile_target() -> None:
    built = {name: s["build"] for name, s in services().items() if "build" in s}
    assert set(jobsprint_services().values()) == set(SERVICES)
    for name, build in built.items():
        assert (REPO / build["context"]).resolve() == REPO, name
        assert (REPO / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()
        assert build["target"] in dockerfile_stages(), f"{name}: no target {build['target']}"


def test_published_ports_do_not_clash() -> None:
    seen: dict[int, str] = {}
    for name, service in services().items():
        ports = service.get("ports", [])
        if ports:
            replicas = service.get("deploy", {}).get("replicas", 1)
            assert replicas == 1, f"{name}: {replicas} replicas cannot share a host port"
        for port in ports:
            parts = str(port).split(":")
            assert len(parts) >= 2, f"{name}: publish {port} on a fixed host port"
            host_port = int(parts[-2])
            assert host_port not in seen, f"{name} and {seen[host_port]} both publish {host_port}"
            seen[host_port] = name


def test_dependencies_exist_and_are_waited_for() -> None:
    every = services()
    for name, service in every.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: use the long form with a condition"
        for dependency, rule in depends.items():
            assert dependency in every, f"{name} depends on unknown {dependency}"
            condition = rule["condition"]
            other = every[dependency]
            if condition == "service_healthy":
                own = other.get("healthcheck")
                from_image = target(other) is not None and instructions(
                    target(other) or "", "HEALTHCHECK"
                )
                assert (own and not own.get("disable")) or from_image, (
                    f"{name} waits for {dependency} to be healthy, which has no healthcheck"
                )
            elif condition == "service_completed_successfully":
                assert other.get("restart", "no") == "no"
            else:
                pytest.fail(f"{name} -> {dependency}: {condition} starts it too early")


def test_infrastructure_has_healthchecks_and_pinned_images() -> None:
    for name in ("kafka", "postgres", "clickhouse"):
        service = services()[name]
        assert service.get("healthcheck", {}).get("test"), name
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), image
    assert services()["kafka"]["image"].startswith("apache/kafka:")
    assert services()["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    major = re.match(r"postgres:(\d+)", services()["postgres"]["image"])
    assert major is not None and int(major.group(1)) >= 15


def test_every_env_var_is_a_settings_field() -> None:
    for name, service_name in jobsprint_services().items():
        cls = settings_class(service_name)
        env = compose_env(services()[name])
        unknown = sorted(set(env) - set(env_names(cls)))
        assert not unknown, f"{name} sets variables {cls.__name__} does not read: {unknown}"
        load_settings(cls, effective_env(name))  # and the values validate


def test_services_listen_on_all_interfaces() -> None:
    for name, service_name in jobsprint_services().items():
        host_field = SERVICES[service_name].host_field
        assert getattr(settings_of(name), host_field) == "0.0.0.0", name


def test_services_reach_kafka_on_its_advertised_listener() -> None:
    kafka = compose_env(services()["kafka"])
    advertised = {
        listener.split("://", 1)[1] for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    for name, service_name in jobsprint_services().items():
        if service_name == "api-gateway" and name != "api-gateway":
            continue  # the admin CLI needs Postgres only
        for server in settings_of(name).kafka_bootstrap.split(","):
            assert server in advertised, f"{name}: {server} is not an advertised listener"
            assert server.split(":")[0] in services()


def test_kafka_keeps_the_events_forever() -> None:
    # the services create their topics without a retention setting: the broker default rules
    assert str(compose_env(services()["kafka"])["KAFKA_LOG_RETENTION_MS"]) == "-1"


def test_database_urls_match_the_postgres_service() -> None:
    pg = compose_env(services()["postgres"])
    for name in jobsprint_services():
        if "JOBSPRINT_DATABASE_URL" not in compose_env(services()[name]):
            continue
        url = urlsplit(settings_of(name).database_url)
        assert url.hostname == "postgres" and (url.port or 5432) == 5432
        assert (url.username, url.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
        assert url.path.strip("/") == pg["POSTGRES_DB"]
    for name in ("api-gateway", "projector", "demo-token"):
        assert "JOBSPRINT_DATABASE_URL" in compose_env(services()[name]), name
    for name in ("executor", "metrics"):
        assert "JOBSPRINT_DATABASE_URL" not in compose_env(services()[name]), "no Postgres there"


def test_metrics_uses_the_clickhouse_server() -> None:
    ch = compose_env(services()["clickhouse"])
    url = urlsplit(settings_of("metrics").clickhouse_url or "")
    assert url.hostname == "clickhouse" and url.port == 8123
    assert (url.username, url.password) == (ch["CLICKHOUSE_USER"], ch["CLICKHOUSE_PASSWORD"])
    deps = services()["metrics"]["depends_on"]
    assert deps["clickhouse"]["condition"] == "service_healthy"


def test_gateway_reaches_the_metrics_service() -> None:
    url = urlsplit(settings_of("api-gateway").metrics_url)
    assert url.hostname in services()
    assert jobsprint_services()[url.hostname] == "metrics"
    assert url.port == settings_of(url.hostname).metrics_http_port


def test_executors_stay_within_partitions_and_outlast_their_grace() -> None:
    executor = services()["executor"]
    settings = settings_of("executor")
    assert executor.get("deploy", {}).get("replicas", 1) <= settings.partitions
    assert seconds(executor["stop_grace_period"]) > settings.executor_grace_seconds


def test_demo_token_prints_a_token_once() -> None:
    demo = services()["demo-token"]
    assert target(demo) == "api-gateway"
    command = demo["command"]
    assert command == ["jobsprint", "admin", "token", "create", "--workspace", "demo"]
    assert command[0] in console_scripts("api-gateway")
    assert demo["restart"] == "no"
    assert demo["depends_on"]["api-gateway"]["condition"] == "service_healthy"
    assert (
        compose_env(demo)["JOBSPRINT_DATABASE_URL"]
        == compose_env(services()["api-gateway"])["JOBSPRINT_DATABASE_URL"]
    )
