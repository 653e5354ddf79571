"""Postgres adapters: versioned SQL migrations and connection pools."""

from __future__ import annotations

import logging
import re
from importlib.resources.abc import Traversable

import psycopg
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_ID = 727_001  # pg_advisory_xact_lock key serialising migrations across processes


def migration_files(folder: Traversable) -> list[tuple[int, str, str]]:
    """(version, name, sql) of every `NNNN_name.sql` file, in version order."""
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {folder}")
    return found


async def migrate(conninfo: str, component: str, folder: Traversable) -> list[str]:
    """Apply the component's pending migrations, each in its own transaction; idempotent and
    safe when several processes start at once. Returns the names applied."""
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS jobsprint_migrations ("
            " component text NOT NULL, version int NOT NULL, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (component, version))"
        )
        for version, name, sql in migration_files(folder):
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                cur = await conn.execute(
                    "SELECT 1 FROM jobsprint_migrations WHERE component = %s AND version = %s",
                    (component, version),
                )
                if await cur.fetchone():
                    continue
                await conn.execute(sql.encode())
                await conn.execute(
                    "INSERT INTO jobsprint_migrations (component, version, name)"
                    " VALUES (%s, %s, %s)",
                    (component, version, name),
                )
                applied.append(name)
                log.info("applied migration %s/%s", component, name)
    return applied


def make_pool(
    conninfo: str, *, min_size: int = 1, max_size: int = 10, name: str
) -> AsyncConnectionPool:
    """A pool that is opened by the caller (`await pool.open()`), never at import time."""
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        timeout=5.0,
        kwargs={"autocommit": True},
    )
