"""Authentication, scopes, tenancy and rate limits, with tokens made by the CLI."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest

from jobsprint.gateway import cli
from jobsprint.gateway.settings import GatewaySettings
from jobsprint.gateway.tokens import READ, WORKFLOWS, hash_token
from tests.integration.gateway.conftest import MakeCaller
from tests.integration.gateway.support import Caller, ReadModel, create_workflow, running

pytestmark = pytest.mark.integration

CHALLENGE = 'Bearer realm="jobsprint"'


async def test_cli_prints_only_the_token_and_stores_only_its_hash(
    read_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--database-url",
        read_model,
        "admin",
        "token",
        "create",
        "--workspace",
        "cli-ws",
        "--scope",
        READ,
        "--name",
        "ci",
    ]
    assert await asyncio.to_thread(cli.main, argv) == 0
    out = capsys.readouterr().out
    token = out.strip()
    assert out.count("\n") == 1 and token.startswith("jsp_") and len(token) > 40

    listed = await asyncio.to_thread(
        cli.main, ["--database-url", read_model, "admin", "token", "list", "--workspace", "cli-ws"]
    )
    assert listed == 0
    listing = capsys.readouterr().out
    assert token not in listing and hash_token(token).hex() not in listing
    assert READ in listing and "ci" in listing
    token_id = listing.splitlines()[1].split("\t")[0]
    assert token_id.startswith("tok_")

    revoke = ["--database-url", read_model, "admin", "token", "revoke", token_id]
    assert await asyncio.to_thread(cli.main, revoke) == 0
    assert await asyncio.to_thread(cli.main, revoke) == 1  # already revoked
    capsys.readouterr()
    await asyncio.to_thread(
        cli.main, ["--database-url", read_model, "admin", "token", "list", "--workspace", "cli-ws"]
    )
    revoked_line = capsys.readouterr().out.splitlines()[1]
    assert not revoked_line.endswith("\t-")  # a revocation time is shown


async def test_missing_malformed_unknown_tokens_answer_401_with_a_challenge(
    gateway: httpx.AsyncClient,
) -> None:
    missing = await gateway.get("/v1/executions")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == CHALLENGE
    assert missing.json()["success"] is False
    assert missing.json()["error"]["code"] == "unauthorized"

    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer not-a-token", "jsp_abc"):
        answer = await gateway.get("/v1/executions", headers={"Authorization": header})
        assert answer.status_code == 401, header
        assert answer.headers["www-authenticate"].startswith(CHALLENGE + ', error="invalid_token"')

    unknown = "jsp_" + "A" * 43
    answer = await gateway.get("/v1/executions", headers={"Authorization": f"Bearer {unknown}"})
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]


async def test_a_token_in_the_query_string_is_refused_even_with_a_valid_header(
    gateway: httpx.AsyncClient, caller: Caller
) -> None:
    assert (await gateway.get("/v1/executions", headers=caller.headers)).status_code == 200
    for name in ("access_token", "token", "api_key"):
        answer = await gateway.get(
            "/v1/executions", params={name: caller.token}, headers=caller.headers
        )
        assert answer.status_code == 401, name
        assert "Authorization header" in answer.json()["error"]["message"]


async def test_execute_wants_its_token_in_the_header_and_answers_401_with_a_challenge(
    gateway: httpx.AsyncClient, caller: Caller
) -> None:
    workflow = await create_workflow(gateway, caller)
    url = f"/v1/workflows/{workflow['id']}/execute"
    for name in ("access_token", "token", "api_key"):
        answer = await gateway.post(
            url, params={name: caller.token}, json={}, headers=caller.headers
        )
        assert answer.status_code == 401, name
        assert answer.json()["error"]["code"] == "unauthorized"
        assert "Authorization header" in answer.json()["error"]["message"]
        assert answer.headers["www-authenticate"].startswith(
            CHALLENGE + ', error="invalid_request"'
        )
    other_query = await gateway.post(url, params={"x": "1"}, json={}, headers=caller.headers)
    assert other_query.status_code == 202, other_query.text

    missing = await gateway.post(url, json={})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == CHALLENGE
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer not-a-token", "jsp_abc"):
        answer = await gateway.post(url, json={}, headers={"Authorization": header})
        assert answer.status_code == 401, header
        assert answer.headers["www-authenticate"].startswith(CHALLENGE + ', error="invalid_token"')
    unknown = {"Authorization": "Bearer jsp_" + "A" * 43}
    answer = await gateway.post(url, json={}, headers=unknown)
    assert answer.status_code == 401
    assert answer.json()["error"]["message"] == "unknown or revoked token"


async def test_a_revoked_token_stops_working(
    settings: GatewaySettings, caller: Caller, read_model: str
) -> None:
    fresh = dataclasses.replace(caller)
    no_cache = settings.model_copy(update={"token_cache_seconds": 0})
    async with running(no_cache) as (client, _):
        assert (await client.get("/v1/workflows", headers=fresh.headers)).status_code == 200
        assert await cli.revoke_token(read_model, fresh.token_id)
        answer = await client.get("/v1/workflows", headers=fresh.headers)
        assert answer.status_code == 401
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]


async def test_scopes_are_enforced_with_403(
    gateway: httpx.AsyncClient, make_caller: MakeCaller
) -> None:
    reader = await make_caller("acme", [READ])
    author = await make_caller("acme", [WORKFLOWS])
    writer = await make_caller("acme", ["executions:write"])

    denied = await gateway.post("/v1/workflows", json={}, headers=reader.headers)
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "forbidden"
    assert denied.json()["error"]["details"] == {"requiredScopes": [WORKFLOWS]}

    workflow = await create_workflow(gateway, author)
    # workflows:write may read workflows, executions:read may too; executions:write may not
    assert (await gateway.get("/v1/workflows", headers=author.headers)).status_code == 200
    assert (await gateway.get("/v1/workflows", headers=reader.headers)).status_code == 200
    assert (await gateway.get("/v1/workflows", headers=writer.headers)).status_code == 403
    # executing needs executions:write
    url = f"/v1/workflows/{workflow['id']}/execute"
    assert (await gateway.post(url, json={}, headers=author.headers)).status_code == 403
    assert (await gateway.post(url, json={}, headers=reader.headers)).status_code == 403
    assert (await gateway.get("/v1/executions", headers=author.headers)).status_code == 403
    assert (await gateway.get("/v1/executions", headers=writer.headers)).status_code == 403


async def test_another_workspaces_ids_answer_404_everywhere(
    gateway: httpx.AsyncClient, make_caller: MakeCaller, rows: ReadModel
) -> None:
    owner = await make_caller("acme")
    stranger = await make_caller("globex")
    workflow = await create_workflow(gateway, owner)
    failed = await rows.add_execution(owner.workspace_id, status="error")
    wf, ex = workflow["id"], failed

    requests = [
        ("GET", f"/v1/workflows/{wf}", None),
        (
            "PUT",
            f"/v1/workflows/{wf}",
            {
                "name": "x",
                "trigger": {"type": "manual"},
                "steps": [{"id": "a", "name": "A", "type": "log", "params": {"message": "m"}}],
            },
        ),
        ("DELETE", f"/v1/workflows/{wf}", None),
        ("POST", f"/v1/workflows/{wf}/execute", {}),
        ("GET", f"/v1/executions/{ex}", None),
        ("GET", f"/v1/executions/{ex}/logs", None),
        ("POST", f"/v1/executions/{ex}/cancel", None),
        ("POST", f"/v1/executions/{ex}/retry", {}),
        ("DELETE", f"/v1/executions/{ex}", None),
    ]
    for method, url, body in requests:
        answer = await gateway.request(method, url, json=body, headers=stranger.headers)
        assert answer.status_code == 404, (method, url, answer.text)
        assert answer.json()["error"]["code"] == "not_found"
    listed = await gateway.get("/v1/executions", headers=stranger.headers)
    assert listed.json()["data"] == []
    listed = await gateway.get("/v1/workflows", headers=stranger.headers)
    assert listed.json()["data"] == []
    # and the owner still sees both
    assert (await gateway.get(f"/v1/workflows/{wf}", headers=owner.headers)).status_code == 200
    assert (await gateway.get(f"/v1/executions/{ex}", headers=owner.headers)).status_code == 200


async def test_each_token_is_rate_limited_with_429_and_retry_after(
    settings: GatewaySettings, make_caller: MakeCaller
) -> None:
    limited = settings.model_copy(update={"rate_limit_per_s": 0.5, "rate_limit_burst": 3})
    first = await make_caller("acme")
    second = await make_caller("acme")
    async with running(limited) as (client, _):
        codes = [
            (await client.get("/v1/workflows", headers=first.headers)).status_code for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        refused = await client.get("/v1/workflows", headers=first.headers)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 2
        # another token has its own bucket
        assert (await client.get("/v1/workflows", headers=second.headers)).status_code == 200


async def test_execute_is_rate_limited_per_token_before_its_body_is_read(
    settings: GatewaySettings, make_caller: MakeCaller
) -> None:
    limited = settings.model_copy(update={"rate_limit_per_s": 0.5, "rate_limit_burst": 3})
    author = await make_caller("acme")
    runner = await make_caller("acme")
    async with running(limited) as (client, _):
        workflow = await create_workflow(client, author)
        url = f"/v1/workflows/{workflow['id']}/execute"
        codes = [
            (await client.post(url, json={}, headers=runner.headers)).status_code for _ in range(3)
        ]
        assert codes == [202, 202, 202]
        refused = await client.post(url, json={"options": {"timeout": 0}}, headers=runner.headers)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 2
        assert refused.json()["error"]["details"] == {
            "retryAfter": int(refused.headers["retry-after"])
        }
        # the author's token has its own bucket
        assert (await client.post(url, json={}, headers=author.headers)).status_code == 202
