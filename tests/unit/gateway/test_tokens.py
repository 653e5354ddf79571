"""Token format and hashing: the database only ever sees a sha256."""

from __future__ import annotations

import hashlib

import pytest

from jobsprint.gateway.tokens import (
    SCOPES,
    Principal,
    hash_token,
    new_hook_token,
    new_token,
    same_hash,
    well_formed,
)

pytestmark = pytest.mark.unit


def test_tokens_are_prefixed_random_and_well_formed() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert token.startswith("jsp_") and len(token) == 4 + 43
        assert well_formed(token)


@pytest.mark.parametrize(
    "token",
    ["", "jsp_", "jsp_short", "abc_" + "a" * 43, "jsp_" + "a" * 40 + " x", "jsp_" + "é" * 30],
)
def test_malformed_tokens_are_recognised(token: str) -> None:
    assert not well_formed(token)


def test_the_stored_hash_is_sha256_and_compared_in_constant_time() -> None:
    token = new_token()
    digest = hash_token(token)
    assert digest == hashlib.sha256(token.encode()).digest()
    assert len(digest) == 32 and token.encode() not in digest
    assert same_hash(digest, hash_token(token))
    assert not same_hash(digest, hash_token(new_token()))


def test_hook_tokens_are_url_safe() -> None:
    token = new_hook_token()
    assert len(token) == 32 and all(c.isalnum() or c in "-_" for c in token)


def test_principal_scopes() -> None:
    principal = Principal("tok_1", "ws_1", frozenset({"executions:read"}))
    assert principal.allows_any(("executions:read", "workflows:write"))
    assert not principal.allows_any(("executions:write",))
    assert set(SCOPES) == {"executions:read", "executions:write", "workflows:write"}
