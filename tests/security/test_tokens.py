"""Bearer tokens: missing, malformed, unknown, revoked, lacking a scope, or sent in the query
string are refused (401/403); the database holds only their hashes; the check that accepts
one compares in constant time."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from jobsprint.gateway.auth import Authenticator
from jobsprint.gateway.limits import RateLimiter
from jobsprint.gateway.tokens import hash_token
from tests.e2e.system import System
from tests.security.conftest import client_for, create_workflow, tenant

TWO: dict[str, Any] = {
    "name": "Two",
    "steps": [{"id": "a", "name": "A", "type": "transform", "params": {"output": 1}}],
}


def cli(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobsprint.gateway.cli", "admin", "token", *args],
        env=system.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.e2e
async def test_missing_malformed_unknown_and_query_tokens_answer_401(secured: System) -> None:
    owner = tenant(secured)
    valid = owner.token
    async with client_for(secured) as anonymous:
        cases: list[tuple[str, dict[str, str], dict[str, str]]] = [
            ("missing", {}, {}),
            ("empty", {"Authorization": ""}, {}),
            ("scheme only", {"Authorization": "Bearer"}, {}),
            ("wrong scheme", {"Authorization": f"Basic {valid}"}, {}),
            ("no prefix", {"Authorization": f"Bearer {valid[4:]}"}, {}),
            ("bad characters", {"Authorization": "Bearer jsp_" + "!" * 43}, {}),
            ("too long", {"Authorization": "Bearer jsp_" + "a" * 5000}, {}),
            ("unknown", {"Authorization": "Bearer jsp_" + "A" * 43}, {}),
            (
                "off by one character",
                {"Authorization": f"Bearer {valid[:-1]}{chr(ord(valid[-1]) ^ 1)}"},
                {},
            ),
            ("in the query", {}, {"access_token": valid}),
            ("as ?token=", {}, {"token": valid}),
            ("as ?api_key=", {}, {"api_key": valid}),
            ("header and query", {"Authorization": f"Bearer {valid}"}, {"access_token": valid}),
        ]
        for name, headers, params in cases:
            for method, path in (("GET", "/v1/executions"), ("POST", "/v1/workflows")):
                response = await anonymous.request(
                    method,
                    path,
                    headers=headers,
                    params=params,
                    json={} if method == "POST" else None,
                )
                assert response.status_code == 401, (
                    name,
                    method,
                    response.status_code,
                    response.text,
                )
                body = response.json()
                assert body["success"] is False and body["error"]["code"] == "unauthorized", name
                assert response.headers["www-authenticate"].startswith("Bearer"), name
                assert valid not in response.text, name
        # the token itself works, so the refusals above are about how it was sent
        fine = await anonymous.get("/v1/executions", headers={"Authorization": f"Bearer {valid}"})
        assert fine.status_code == 200, fine.text


@pytest.mark.e2e
async def test_a_revoked_token_is_refused(secured: System) -> None:
    owner = tenant(secured)
    async with client_for(secured, owner) as api:
        assert (await api.get("/v1/executions")).status_code == 200
        listed = cli(secured, "list", "--workspace", owner.workspace)
        assert listed.returncode == 0, listed.stderr
        assert owner.token not in listed.stdout  # the listing never shows tokens
        [token_id] = [line.split("\t")[0] for line in listed.stdout.splitlines()[1:]]
        revoked = cli(secured, "revoke", token_id)
        assert revoked.returncode == 0, revoked.stderr
        # the gateway of the security system caches nothing (JOBSPRINT_TOKEN_CACHE_SECONDS=0)
        for method, path in (("GET", "/v1/executions"), ("GET", "/v1/workflows")):
            response = await api.request(method, path)
            assert response.status_code == 401, response.text
            assert "revoked" in response.json()["error"]["message"]


@pytest.mark.e2e
async def test_a_token_without_the_scope_gets_403(secured: System) -> None:
    owner = tenant(secured)
    async with client_for(secured, owner) as api:
        workflow_id = await create_workflow(api, TWO)
        done = await api.post(
            f"/v1/workflows/{workflow_id}/execute", json={"options": {"waitForCompletion": True}}
        )
        execution_id = done.json()["data"]["executionId"]
    reader = secured.create_token(owner.workspace, "executions:read")
    writer = secured.create_token(owner.workspace, "executions:write")
    designer = secured.create_token(owner.workspace, "workflows:write")
    refused = [
        (reader, "POST", f"/v1/workflows/{workflow_id}/execute", {}),
        (reader, "POST", f"/v1/executions/{execution_id}/retry", {}),
        (reader, "POST", f"/v1/executions/{execution_id}/cancel", None),
        (reader, "DELETE", f"/v1/executions/{execution_id}", None),
        (reader, "POST", "/v1/workflows", TWO),
        (reader, "PUT", f"/v1/workflows/{workflow_id}", TWO),
        (reader, "DELETE", f"/v1/workflows/{workflow_id}", None),
        (writer, "GET", "/v1/executions", None),
        (writer, "GET", f"/v1/executions/{execution_id}", None),
        (writer, "GET", f"/v1/executions/{execution_id}/logs", None),
        (writer, "GET", "/v1/executions/metrics", None),
        (writer, "POST", "/v1/workflows", TWO),
        (designer, "POST", f"/v1/workflows/{workflow_id}/execute", {}),
        (designer, "GET", "/v1/executions", None),
    ]
    async with client_for(secured) as anonymous:
        for token, method, path, body in refused:
            response = await anonymous.request(
                method, path, json=body, headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 403, (method, path, response.status_code, response.text)
            assert response.json()["error"]["code"] == "forbidden"
        # nothing was done by the refused requests
        detail = await anonymous.get(
            f"/v1/executions/{execution_id}", headers={"Authorization": f"Bearer {reader}"}
        )
        assert detail.status_code == 200 and detail.json()["data"]["status"] == "success"
        listed = await anonymous.get(
            "/v1/executions",
            params={"workflowId": workflow_id},
            headers={"Authorization": f"Bearer {reader}"},
        )
        assert len(listed.json()["data"]) == 1


@pytest.mark.e2e
async def test_the_database_and_the_logs_hold_only_token_hashes(secured: System) -> None:
    owner = tenant(secured)
    async with client_for(secured, owner) as api:
        assert (await api.get("/v1/executions")).status_code == 200
    secret_part = owner.token[4:]
    with psycopg.connect(secured.database_url) as conn:
        rows = conn.execute("SELECT token_hash FROM api_tokens").fetchall()
        assert (hashlib.sha256(owner.token.encode()).digest(),) in [(bytes(r[0]),) for r in rows]
        assert all(len(bytes(r[0])) == 32 for r in rows)
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables"
                " WHERE table_type = 'BASE TABLE'"
                " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
        ]
        holding = [
            table
            for table in tables
            if conn.execute(
                f"SELECT count(*) FROM {table} t WHERE t::text LIKE %s", (f"%{secret_part}%",)
            ).fetchone()
            != (0,)
        ]
    assert tables and not holding, holding
    for name in secured.processes:
        assert secret_part not in secured.log_tail(name, 10_000_000), f"the token is in {name}.log"


class _Repository:
    def __init__(self, row: dict[str, Any] | None) -> None:
        self.row = row
        self.asked: list[Any] = []

    async def token_by_hash(self, token_hash: bytes) -> dict[str, Any] | None:
        self.asked.append(token_hash)
        return self.row


@pytest.mark.unit
async def test_tokens_are_looked_up_by_hash_and_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lookup key is the token's sha256 (a timing difference in the index lookup says
    nothing about the token), and the stored hash is confirmed with hmac.compare_digest."""
    import hmac

    from jobsprint.gateway import tokens

    token = "jsp_" + "k" * 43
    digest = hash_token(token)
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    row = {
        "id": "tok_1",
        "workspace_id": "ws_1",
        "token_hash": digest,
        "scopes": ["executions:read"],
        "revoked_at": None,
    }
    repository = _Repository(row)
    auth = Authenticator(repository, RateLimiter(10, 10), cache_seconds=0)  # type: ignore[arg-type]
    principal = await auth.principal(token)
    assert principal is not None and principal.workspace_id == "ws_1"
    assert repository.asked == [digest]
    assert token.encode() not in repository.asked
    assert compared == [(digest, digest)]
    # a stored hash that differs (say a lookup collision) is refused by the same comparison
    repository.row = {**row, "token_hash": hashlib.sha256(b"other").digest()}
    assert await auth.principal(token) is None
    assert len(compared) == 2
