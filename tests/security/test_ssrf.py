"""`http` steps and server-side request forgery: loopback, private, link-local and cloud
metadata addresses — by IP, by DNS name, in odd spellings, or behind a redirect — are
refused unless allow-listed, and the refused target never sees a request."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.e2e.system import System
from tests.security.conftest import (
    ALLOWED_HOST,
    Target,
    client_for,
    create_workflow,
    tenant,
)

pytestmark = pytest.mark.e2e

CALL: dict[str, Any] = {
    "name": "Call a URL",
    "steps": [
        {
            "id": "call",
            "name": "Call",
            "type": "http",
            "params": {"url": "{{ input.url }}", "timeoutSeconds": 5},
        }
    ],
}


async def outcome(api: httpx.AsyncClient, workflow_id: str, url: str) -> dict[str, Any]:
    response = await api.post(
        f"/v1/workflows/{workflow_id}/execute",
        json={"inputData": {"url": url}, "options": {"waitForCompletion": True, "timeout": 30}},
    )
    assert response.status_code == 200, (url, response.text)
    execution_id = response.json()["data"]["executionId"]
    detail = (await api.get(f"/v1/executions/{execution_id}")).json()["data"]
    return {"url": url, "status": detail["status"], "error": detail.get("error"), "detail": detail}


async def test_internal_addresses_are_refused_unless_allow_listed(
    secured: System, allowed_target: Target, internal_target: Target
) -> None:
    owner = tenant(secured)
    port = internal_target.port
    refused_urls = [
        f"http://127.0.0.1:{port}/secret",  # loopback
        f"http://localhost:{port}/secret",  # a DNS name of loopback
        f"http://[::1]:{port}/secret",  # IPv6 loopback
        f"http://[::ffff:127.0.0.1]:{port}/secret",  # IPv4-mapped IPv6
        f"http://2130706433:{port}/secret",  # 127.0.0.1 as one decimal number
        f"http://0177.0.0.1:{port}/secret",  # ... in octal
        f"http://127.1:{port}/secret",  # ... abbreviated
        f"http://0.0.0.0:{port}/secret",  # unspecified (reaches loopback on Linux)
        "http://10.0.0.1/",  # private
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/iam/",  # cloud metadata (AWS, GCP, Azure)
        "http://[fd00:ec2::254]/latest/meta-data/",  # AWS metadata over IPv6
        "http://169.254.1.1/",  # link-local
        "http://100.100.100.200/latest/meta-data/",  # Alibaba metadata (shared address space)
        "http://[fe80::1]/",  # IPv6 link-local
        "http://[fc00::1]/",  # IPv6 unique local
        # redirects from an allowed host to forbidden ones
        f"{allowed_target.url}/redirect?to=http://127.0.0.1:{port}/secret",
        f"{allowed_target.url}/redirect?to=http://localhost:{port}/secret",
        f"{allowed_target.url}/redirect?to=http://169.254.169.254/latest/meta-data/",
        f"{allowed_target.url}/redirect?to="
        f"{allowed_target.url}/redirect%3Fto%3Dhttp://127.0.0.1:{port}/secret",
    ]
    async with client_for(secured, owner) as api:
        workflow_id = await create_workflow(api, CALL)
        allowed = await outcome(api, workflow_id, f"{allowed_target.url}/ok")
        hops = await outcome(
            api, workflow_id, f"{allowed_target.url}/redirect?to={allowed_target.url}/ok"
        )
        refused = await asyncio.gather(*(outcome(api, workflow_id, u) for u in refused_urls))

    assert allowed["status"] == "success", allowed
    assert allowed["detail"]["outputData"]["body"] == {"ok": True}
    assert hops["status"] == "success", hops  # redirects inside the allow-list are followed
    wrong = [
        (r["url"], r["status"], r["error"])
        for r in refused
        if r["status"] != "error" or (r["error"] or {}).get("code") != "http_forbidden_address"
    ]
    assert not wrong, wrong
    assert internal_target.hits["/secret"] == 0, (
        f"the internal server was reached: {internal_target.hits}"
    )
    assert ALLOWED_HOST in allowed_target.url


async def test_the_allow_list_opens_exactly_what_it_names(
    spare: System, internal_target: Target
) -> None:
    """A second system whose allow-list names 127.0.0.1 reaches the same internal server
    that the first one may not: the refusals above come from the guard, not from the
    network."""
    opened = spare
    owner = tenant(opened)
    async with client_for(opened, owner) as api:
        workflow_id = await create_workflow(api, CALL)
        reached = await outcome(api, workflow_id, f"{internal_target.url}/open")
        metadata = await outcome(api, workflow_id, "http://169.254.169.254/latest/meta-data/")
    assert reached["status"] == "success", reached
    assert internal_target.hits["/open"] == 1
    assert metadata["error"]["code"] == "http_forbidden_address", metadata
