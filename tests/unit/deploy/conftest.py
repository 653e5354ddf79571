"""Renders of every kustomization under deploy/k8s, made once per session, offline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.unit.deploy.support import K8S, render

# name -> kustomization directory; "executor-hpa" is base plus the optional HPA component,
# rendered the way an overlay would use it
VARIANTS = ("base", "dev", "prod", "executor-hpa")


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {
        "base": render(K8S / "base"),
        "dev": render(K8S / "overlays" / "dev"),
        "prod": render(K8S / "overlays" / "prod"),
    }
    folder = tmp_path_factory.mktemp("executor-hpa")
    # kustomize accepts only relative paths to other kustomizations
    up = Path(os.path.relpath(K8S, folder)).as_posix()
    (folder / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        "namespace: jobsprint-test\n"
        f"resources:\n  - {up}/base\n"
        f"components:\n  - {up}/components/executor-hpa\n"
    )
    out["executor-hpa"] = render(folder)
    return out


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def objects(rendered: dict[str, list[dict[str, Any]]], variant: str) -> list[dict[str, Any]]:
    return rendered[variant]
