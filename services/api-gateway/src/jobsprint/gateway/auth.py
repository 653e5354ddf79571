"""Bearer-token authentication, scopes and per-token rate limiting (`Authenticator`, called
by the `require` FastAPI dependency or directly by a plain route).

Tokens are looked up by their sha256 (the only thing stored) and compared in constant time;
lookups are cached for `token_cache_seconds` (also the delay before a revocation bites).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from jobsprint.gateway.errors import Forbidden, Unauthenticated
from jobsprint.gateway.limits import RateLimiter
from jobsprint.gateway.tokens import (
    QUERY_TOKEN_PARAMS,
    Principal,
    hash_token,
    same_hash,
    well_formed,
)

if TYPE_CHECKING:
    from jobsprint.gateway.repository import Repository

_MAX_CACHED = 10_000


class Authenticator:
    def __init__(
        self,
        repository: Repository,
        limiter: RateLimiter,
        *,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repository = repository
        self.limiter = limiter
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}

    async def principal(self, token: str) -> Principal | None:
        """The live token's principal; None for unknown or revoked tokens."""
        digest = hash_token(token)
        now = self.clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        row = await self.repository.token_by_hash(digest)
        found: Principal | None = None
        if row is not None and row["revoked_at"] is None and same_hash(row["token_hash"], digest):
            found = Principal(row["id"], row["workspace_id"], frozenset(row["scopes"]))
        if self.cache_seconds > 0:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[digest] = (now + self.cache_seconds, found)
        return found

    async def authenticate(self, request: Request, scopes: tuple[str, ...]) -> Principal:
        if request.scope["query_string"]:  # (parsing even an empty one costs every request)
            for name in QUERY_TOKEN_PARAMS:
                if name in request.query_params:
                    raise Unauthenticated(
                        f"tokens are accepted only in the Authorization header, not as ?{name}=",
                        error="invalid_request",
                    )
        header = request.headers.get("authorization")
        if not header:
            raise Unauthenticated("missing Authorization: Bearer <token> header")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not well_formed(token):
            raise Unauthenticated("malformed bearer token", error="invalid_token")
        principal = await self.principal(token)
        if principal is None:
            raise Unauthenticated("unknown or revoked token", error="invalid_token")
        if not principal.allows_any(scopes):
            raise Forbidden(
                f"this token lacks the scope {' or '.join(scopes)}",
                {"requiredScopes": list(scopes)},
            )
        self.limiter.check(f"token:{principal.token_id}")
        return principal


# documents the scheme in OpenAPI; the checks themselves are Authenticator's
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer jsp_…`")


def require(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency: the caller's principal, holding at least one of `scopes`."""

    async def dependency(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    ) -> Principal:
        authenticator: Authenticator = request.app.state.gateway.auth
        principal = await authenticator.authenticate(request, scopes)
        request.state.principal = principal
        return principal

    return dependency
