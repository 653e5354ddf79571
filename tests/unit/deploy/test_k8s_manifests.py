"""deploy/k8s: every kustomization renders offline, every object is valid for the Kubernetes
API (and the ScaledObject for KEDA's CRD), and the manifests agree with the services: ports,
probe paths, settings names, consumer group, partitions, grace periods."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest

from tests.unit.deploy.support import (
    KUBERNETES_VERSIONS,
    REPO,
    SERVICES,
    console_scripts,
    container_env,
    env_names,
    find,
    instructions,
    keda_kafka_scaler_source,
    keda_scaledobject_schema,
    load_settings,
    one,
    quantity,
    selects,
    settings_class,
)

pytestmark = pytest.mark.unit

Obj = dict[str, Any]

COMPONENT = "app.kubernetes.io/component"
# Secrets that an overlay expects to be created outside git (by a secret manager)
EXTERNAL_SECRETS = {
    "base": set(),
    "dev": set(),
    "prod": {"jobsprint-postgres", "jobsprint-clickhouse"},
    "executor-hpa": set(),
}
MEMORY_LIMIT_MAX = {
    "api-gateway": 256 * 2**20,
    "executor": 256 * 2**20,
    "projector": 256 * 2**20,
    "metrics": 2**30,
}


def deployment(objects: list[Obj], service: str) -> Obj:
    return one(objects, "Deployment", service)


def pod_spec(dep: Obj) -> Obj:
    spec: Obj = dep["spec"]["template"]["spec"]
    return spec


def workloads(objects: list[Obj]) -> dict[str, Obj]:
    """Every pod template: Deployments and CronJobs, by object name."""
    out = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in find(objects, "Deployment")
    }
    for cj in find(objects, "CronJob"):
        out[cj["metadata"]["name"]] = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return out


def main_container(dep: Obj) -> Obj:
    [container] = [c for c in pod_spec(dep)["containers"] if c["name"] == dep["metadata"]["name"]]
    return container


def service_settings(objects: list[Obj], service: str) -> Any:
    cls = settings_class(service)
    return load_settings(cls, container_env(main_container(deployment(objects, service)), objects))


def named_port(container: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    return int(number)


def autoscaler_targets(objects: list[Obj]) -> dict[str, list[str]]:
    """Deployment name -> the autoscalers that own its replicas."""
    owners: dict[str, list[str]] = {}
    for hpa in find(objects, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["kind"] == "Deployment":
            owners.setdefault(ref["name"], []).append(f"HPA/{hpa['metadata']['name']}")
    for so in find(objects, "ScaledObject"):
        ref = so["spec"]["scaleTargetRef"]
        if ref.get("kind", "Deployment") == "Deployment":
            owners.setdefault(ref["name"], []).append(f"ScaledObject/{so['metadata']['name']}")
    return owners


def min_replicas(objects: list[Obj], name: str) -> int:
    for hpa in find(objects, "HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"]["name"] == name:
            return int(hpa["spec"].get("minReplicas", 1))
    for so in find(objects, "ScaledObject"):
        if so["spec"]["scaleTargetRef"]["name"] == name:
            return int(so["spec"].get("minReplicaCount", 0))
    return int(deployment(objects, name)["spec"].get("replicas", 1))


# ---------------------------------------------------------------------------------------
# schemas


@pytest.mark.parametrize("k8s_version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_for_the_kubernetes_api(objects: list[Obj], k8s_version: str) -> None:
    errors = []
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: validated against KEDA's schema below
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.absolute_path)
            errors.append(f"{where}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{where}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_scaled_objects_are_valid_for_kedas_crd(objects: list[Obj]) -> None:
    validator = jsonschema.Draft7Validator(keda_scaledobject_schema())
    errors = []
    for so in find(objects, "ScaledObject"):
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", so["metadata"]["name"])
        errors += [
            f"ScaledObject/{so['metadata']['name']}: {'/'.join(map(str, e.absolute_path))}: "
            f"{e.message}"
            for e in validator.iter_errors(so)
        ]
    assert not errors, "\n".join(errors)


def test_the_keda_schema_check_rejects_a_misspelt_field() -> None:
    # the strictness above is ours (the API server would prune the field silently)
    so = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"name": "executor"},
            "maxReplicas": 6,
            "triggers": [{"type": "kafka", "metadata": {}}],
        },
    }
    errors = list(jsonschema.Draft7Validator(keda_scaledobject_schema()).iter_errors(so))
    assert any("maxReplicas" in e.message for e in errors)


# ---------------------------------------------------------------------------------------
# the services


def test_one_deployment_per_service_with_its_image(objects: list[Obj]) -> None:
    assert {d["metadata"]["name"] for d in find(objects, "Deployment")} == set(SERVICES)
    for name in SERVICES:
        dep = deployment(objects, name)
        assert dep["spec"]["template"]["metadata"]["labels"][COMPONENT] == name
        image = main_container(dep)["image"]
        repository, _, tag = image.rpartition(":")
        # the image is the Dockerfile target of the same name
        assert repository.rsplit("/", 1)[-1] == name, image
        assert tag and tag != "latest", f"{name}: pin the image tag, got {image!r}"


def test_every_env_var_is_a_settings_field(objects: list[Obj]) -> None:
    for name in SERVICES:
        cls = settings_class(name)
        env = container_env(main_container(deployment(objects, name)), objects)
        unknown = sorted(set(env) - set(env_names(cls)))
        assert not unknown, f"{name} sets variables {cls.__name__} does not read: {unknown}"
        load_settings(cls, env)  # and the values validate


def test_probes_hit_the_served_paths_and_ports(objects: list[Obj]) -> None:
    for name, service in SERVICES.items():
        container = main_container(deployment(objects, name))
        settings = service_settings(objects, name)
        port = getattr(settings, service.port_field)
        assert getattr(settings, service.host_field) == "0.0.0.0", (
            f"{name} must listen on all interfaces in a pod (set "
            f"JOBSPRINT_{service.host_field.upper()}=0.0.0.0)"
        )
        assert port in [p["containerPort"] for p in container["ports"]]
        expected = {
            "livenessProbe": "/healthz",
            "startupProbe": "/healthz",
            "readinessProbe": "/readyz",
        }
        for probe_name, path in expected.items():
            probe = container.get(probe_name)
            assert probe is not None, f"{name} has no {probe_name}"
            get = probe["httpGet"]
            assert get["path"] == path, f"{name} {probe_name}"
            assert named_port(container, get["port"]) == port, f"{name} {probe_name} port"
            assert get.get("scheme", "HTTP") == "HTTP"


def test_services_route_to_container_ports(objects: list[Obj]) -> None:
    deployments = find(objects, "Deployment")
    for svc in find(objects, "Service"):
        selector = svc["spec"]["selector"]
        matched = [
            d for d in deployments if selects(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(matched) == 1, f"Service/{svc['metadata']['name']} selects {len(matched)}"
        container = main_container(matched[0])
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            named_port(container, target)  # raises when the name is not a container port


def test_gateway_reaches_the_metrics_service(objects: list[Obj]) -> None:
    url = urlsplit(service_settings(objects, "api-gateway").metrics_url)
    host = (url.hostname or "").split(".")[0]
    svc = one(objects, "Service", host)
    metrics_labels = deployment(objects, "metrics")["spec"]["template"]["metadata"]["labels"]
    assert selects(svc["spec"]["selector"], metrics_labels)
    [port] = [p for p in svc["spec"]["ports"] if p["port"] == (url.port or 80)]
    metrics_port = service_settings(objects, "metrics").metrics_http_port
    assert named_port(main_container(deployment(objects, "metrics")), port["targetPort"]) == (
        metrics_port
    )


def test_referenced_configmaps_and_secrets_exist(objects: list[Obj], variant: str) -> None:
    secrets = {s["metadata"]["name"] for s in find(objects, "Secret")}
    config_maps = {c["metadata"]["name"] for c in find(objects, "ConfigMap")}
    missing = []
    for workload, spec in workloads(objects).items():
        for container in spec["containers"]:
            refs = [
                ("Secret", s["secretRef"]["name"])
                for s in container.get("envFrom", [])
                if "secretRef" in s
            ]
            refs += [
                ("ConfigMap", s["configMapRef"]["name"])
                for s in container.get("envFrom", [])
                if "configMapRef" in s
            ]
            for item in container.get("env", []):
                ref = item.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    refs.append(("Secret", ref["secretKeyRef"]["name"]))
                if "configMapKeyRef" in ref:
                    refs.append(("ConfigMap", ref["configMapKeyRef"]["name"]))
            for kind, name in refs:
                known = secrets | EXTERNAL_SECRETS[variant] if kind == "Secret" else config_maps
                if name not in known:
                    missing.append(f"{workload}: {kind}/{name}")
    assert not missing, missing


def test_prod_keeps_no_secret_in_git(rendered: dict[str, list[Obj]]) -> None:
    assert find(rendered["prod"], "Secret") == []


def test_resources_are_requested_and_limited(objects: list[Obj]) -> None:
    for name in SERVICES:
        resources = main_container(deployment(objects, name))["resources"]
        requests, limits = resources["requests"], resources["limits"]
        assert {"cpu", "memory"} <= set(requests), name
        assert "memory" in limits, name
        assert quantity(requests["memory"]) <= quantity(limits["memory"]) <= MEMORY_LIMIT_MAX[name]
        if "cpu" in limits:
            assert quantity(requests["cpu"]) <= quantity(limits["cpu"])


def test_pods_run_unprivileged_on_a_read_only_root(objects: list[Obj]) -> None:
    for name, spec in workloads(objects).items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        for container in spec["containers"]:
            # the uid the image was built for: the Dockerfile target named like the image
            target = container["image"].rpartition(":")[0].rsplit("/", 1)[-1]
            image_uid = int(instructions(target, "USER")[-1].split(":")[0])
            assert pod["runAsUser"] == image_uid != 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            # Python and its libraries want a writable temp folder
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_termination_grace_outlasts_the_services_own_grace(objects: list[Obj]) -> None:
    for name in SERVICES:
        assert "terminationGracePeriodSeconds" in pod_spec(deployment(objects, name)), name
    executor = pod_spec(deployment(objects, "executor"))
    grace = service_settings(objects, "executor").executor_grace_seconds
    assert executor["terminationGracePeriodSeconds"] > grace

    gateway = pod_spec(deployment(objects, "api-gateway"))
    source = (REPO / "services/api-gateway/src/jobsprint/gateway/__main__.py").read_text()
    found = re.search(r"timeout_graceful_shutdown=(\d+)", source)
    uvicorn_grace = int(found.group(1)) if found else 0
    pre_stop = main_container(deployment(objects, "api-gateway")).get("lifecycle", {})
    sleep = pre_stop.get("preStop", {}).get("exec", {}).get("command", ["sleep", "0"])
    assert gateway["terminationGracePeriodSeconds"] > uvicorn_grace + int(sleep[-1])


def test_autoscaled_deployments_leave_replicas_to_their_one_autoscaler(objects: list[Obj]) -> None:
    for name, owners in autoscaler_targets(objects).items():
        assert len(owners) == 1, f"{name} has competing autoscalers: {owners}"
        assert "replicas" not in deployment(objects, name)["spec"], (
            f"{name}: {owners[0]} owns the replica count; spec.replicas would reset it on apply"
        )
    assert "api-gateway" in autoscaler_targets(objects)
    assert "executor" in autoscaler_targets(objects)


def test_gateway_scales_on_cpu(objects: list[Obj]) -> None:
    hpa = one(objects, "HorizontalPodAutoscaler", "api-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "api-gateway",
    }
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # utilization is relative to the request
    assert "cpu" in main_container(deployment(objects, "api-gateway"))["resources"]["requests"]


@pytest.mark.parametrize("name", ["base", "dev", "prod"])
def test_executor_scales_on_consumer_lag_up_to_the_partition_count(
    rendered: dict[str, list[Obj]], name: str
) -> None:
    objects = rendered[name]
    so = one(objects, "ScaledObject", "executor")
    settings = service_settings(objects, "executor")
    spec = so["spec"]
    assert spec["scaleTargetRef"]["name"] == "executor"
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= settings.partitions
    [trigger] = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == settings.group_id == "jobsprint.executor"
    assert meta["topic"] == settings.topics.commands == "jobsprint.commands"
    assert meta["allowIdleConsumers"] == "false"
    assert int(meta["lagThreshold"]) > 0
    # the bootstrap servers come from the executor's own environment
    env = container_env(main_container(deployment(objects, "executor")), objects)
    assert meta["bootstrapServersFromEnv"] == "JOBSPRINT_KAFKA_BOOTSTRAP"
    assert env["JOBSPRINT_KAFKA_BOOTSTRAP"] == settings.kafka_bootstrap


def test_scaled_object_uses_only_metadata_the_kafka_scaler_reads(objects: list[Obj]) -> None:
    # the CRD types trigger metadata as map[string]string; the scaler's source is the schema
    source = keda_kafka_scaler_source()
    for so in find(objects, "ScaledObject"):
        for trigger in so["spec"]["triggers"]:
            unknown = [key for key in trigger["metadata"] if f'"{key}"' not in source]
            assert not unknown, f"KEDA's kafka scaler does not read {unknown}"


def test_executor_hpa_alternative(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["executor-hpa"]
    assert find(objects, "ScaledObject") == []
    hpa = one(objects, "HorizontalPodAutoscaler", "executor")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "executor"
    partitions = service_settings(objects, "executor").partitions
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= partitions
    assert "cpu" in main_container(deployment(objects, "executor"))["resources"]["requests"]
    # and it is not in any default kustomization
    for name in ("base", "dev", "prod"):
        assert find(rendered[name], "HorizontalPodAutoscaler", "executor") == []


def test_every_deployment_has_a_budget_that_never_blocks_a_drain(objects: list[Obj]) -> None:
    budgets = find(objects, "PodDisruptionBudget")
    for name in SERVICES:
        labels = deployment(objects, name)["spec"]["template"]["metadata"]["labels"]
        [pdb] = [b for b in budgets if selects(b["spec"]["selector"]["matchLabels"], labels)]
        spec = pdb["spec"]
        replicas = min_replicas(objects, name)
        if "maxUnavailable" in spec:
            assert int(spec["maxUnavailable"]) >= 1, name
        else:
            assert int(spec["minAvailable"]) < replicas, f"{name}: a drain could never evict"


def test_metrics_on_chdb_is_one_replica_with_its_volume(objects: list[Obj]) -> None:
    dep = deployment(objects, "metrics")
    settings = service_settings(objects, "metrics")
    env = container_env(main_container(dep), objects)
    assert "metrics" not in autoscaler_targets(objects)
    if "JOBSPRINT_CLICKHOUSE_URL" in env:
        # a ClickHouse server holds the data: stateless, rolling, several replicas welcome
        assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
        assert find(objects, "PersistentVolumeClaim", "metrics-chdb") == []
        assert "JOBSPRINT_CHDB_PATH" not in env
        return
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    assert settings.chdb_path.is_absolute()
    mounts = {m["mountPath"]: m["name"] for m in main_container(dep)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(dep)["volumes"]}
    claim = volumes[mounts[str(settings.chdb_path)]]["persistentVolumeClaim"]["claimName"]
    pvc = one(objects, "PersistentVolumeClaim", claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_prod_runs_metrics_on_a_clickhouse_server(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["prod"]
    env = container_env(main_container(deployment(objects, "metrics")), objects)
    assert "JOBSPRINT_CLICKHOUSE_URL" in env
    assert deployment(objects, "metrics")["spec"]["replicas"] >= 2


def test_only_the_gateway_reaches_the_metrics_port(objects: list[Obj]) -> None:
    deployments = {d["metadata"]["name"]: d for d in find(objects, "Deployment")}
    labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}
    port = service_settings(objects, "metrics").metrics_http_port
    policies = [
        p
        for p in find(objects, "NetworkPolicy")
        if selects(p["spec"]["podSelector"].get("matchLabels", {}), labels["metrics"])
    ]
    assert len(policies) == 1
    spec = policies[0]["spec"]
    # it selects the metrics pods and nothing else
    assert [n for n in labels if selects(spec["podSelector"]["matchLabels"], labels[n])] == [
        "metrics"
    ]
    assert "Ingress" in spec["policyTypes"]
    assert spec["ingress"], "an empty rule list would block the gateway too"
    for rule in spec["ingress"]:
        assert rule["from"], "a rule without `from` admits every source"
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"}, "no namespaceSelector or ipBlock"
            admitted = [n for n in labels if selects(peer["podSelector"]["matchLabels"], labels[n])]
            assert admitted == ["api-gateway"]
        assert [(p.get("protocol", "TCP"), p["port"]) for p in rule["ports"]] == [("TCP", port)]


def test_overlays_set_a_restricted_namespace(rendered: dict[str, list[Obj]]) -> None:
    for name, namespace in (("dev", "jobsprint-dev"), ("prod", "jobsprint")):
        ns = one(rendered[name], "Namespace", namespace)
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        for obj in rendered[name]:
            if obj["kind"] != "Namespace":
                assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]


def test_every_object_is_labelled_part_of_jobsprint(objects: list[Obj]) -> None:
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "jobsprint"


def test_projector_rebuild_runs_only_on_demand(objects: list[Obj]) -> None:
    cron = one(objects, "CronJob", "projector-rebuild")
    assert cron["spec"]["suspend"] is True, "a rebuild must never start by itself"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0 and job["template"]["spec"]["restartPolicy"] == "Never"
    [container] = job["template"]["spec"]["containers"]
    assert container["command"][0] in console_scripts("projector")
    assert container["command"][1:] == ["rebuild"]
    # the live projector's image and settings, so it folds exactly like the live one
    live = main_container(deployment(objects, "projector"))
    assert container["image"] == live["image"]
    cls = settings_class("projector")
    env = container_env(container, objects)
    assert set(env) <= set(env_names(cls))
    rebuild = load_settings(cls, env)
    projector = service_settings(objects, "projector")
    for name in ("kafka_bootstrap", "topic_prefix", "database_url"):
        assert getattr(rebuild, name) == getattr(projector, name), name
    # not selected by the projector's Service, budget or policies
    labels = job["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        for obj in find(objects, kind):
            selector = obj["spec"]["selector"]
            assert not selects(selector.get("matchLabels", selector), labels)
