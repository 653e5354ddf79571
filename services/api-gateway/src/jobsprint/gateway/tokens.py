"""API tokens (pure logic): format, hashing, scopes, the authenticated principal."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "jsp_"
READ = "executions:read"
WRITE = "executions:write"
WORKFLOWS = "workflows:write"
SCOPES: tuple[str, ...] = (READ, WRITE, WORKFLOWS)

# `secrets.token_urlsafe(32)` gives 43 url-safe characters; allow some slack, nothing else
_TOKEN_SHAPE = re.compile(r"^jsp_[A-Za-z0-9_-]{20,128}$")
QUERY_TOKEN_PARAMS = ("access_token", "token", "api_key")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    """What the database stores instead of the token: its sha256 digest."""
    return hashlib.sha256(token.encode()).digest()


def well_formed(token: str) -> bool:
    return bool(_TOKEN_SHAPE.match(token))


def same_hash(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def new_hook_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token of one workspace with its scopes."""

    token_id: str
    workspace_id: str
    scopes: frozenset[str]

    def allows_any(self, scopes: tuple[str, ...]) -> bool:
        return any(scope in self.scopes for scope in scopes)
