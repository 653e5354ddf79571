"""Upkeep of `execution_requests`, run by every gateway on an interval (one gateway at a
time, under an advisory lock):

- once the projector has written (or deleted) a request's execution, remove the request
  when it has no idempotency key (nothing is left for it to answer), else mark it
  projected, so the execution list stops showing it as an in-flight `pending` row;
- drop requests a gateway recorded but never produced (it died in between; the client got
  no 2xx, so nothing accepted is lost);
- prune projected requests older than the idempotency window, in bounded batches."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from jobsprint.events import utcnow

log = logging.getLogger(__name__)

UPKEEP_LOCK = 727_002  # pg_advisory_xact_lock key: one gateway tidies at a time
PRUNE_BATCH = 5_000
MARK_BATCH = 10_000


# in a query over `execution_requests r`: the projector has seen r's execution
_PROJECTED = (
    "(EXISTS (SELECT 1 FROM executions e WHERE e.id = r.id)"
    " OR EXISTS (SELECT 1 FROM projector_deleted_executions d WHERE d.execution_id = r.id))"
)


@dataclass(frozen=True)
class Tidied:
    removed_projected: int
    marked_projected: int
    dropped_unpublished: int
    pruned: int


async def tidy_requests(
    pool: AsyncConnectionPool[Any], *, abandoned_after: timedelta, keep_for: timedelta
) -> Tidied | None:
    """One upkeep pass; None when another gateway holds the lock."""
    now = utcnow()
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (UPKEEP_LOCK,))
        locked = await cur.fetchone()
        if not (locked and locked[0]):
            return None
        # bounded, so the first pass after an upgrade (every old row unmarked) stays short.
        # Removed, not kept for the idempotency window, unless keyed: kept, they made a
        # table of a million rows whose automatic ANALYZE took a fifth of a core for
        # seconds, and every request on a busy box queued behind it.
        removed = await conn.execute(
            "DELETE FROM execution_requests WHERE ctid = ANY(ARRAY("
            " SELECT r.ctid FROM execution_requests r WHERE NOT r.projected"
            f" AND r.idempotency_key IS NULL AND {_PROJECTED} LIMIT %s))",
            (MARK_BATCH,),
        )
        marked = await conn.execute(
            "UPDATE execution_requests SET projected = true WHERE ctid = ANY(ARRAY("
            f" SELECT r.ctid FROM execution_requests r WHERE NOT r.projected AND {_PROJECTED}"
            " LIMIT %s))",
            (MARK_BATCH,),
        )
        dropped = await conn.execute(
            "DELETE FROM execution_requests"
            " WHERE NOT projected AND published_at IS NULL AND requested_at < %s",
            (now - abandoned_after,),
        )
        pruned = await conn.execute(
            "DELETE FROM execution_requests WHERE ctid = ANY(ARRAY("
            " SELECT ctid FROM execution_requests WHERE projected AND requested_at < %s"
            " LIMIT %s))",
            (now - keep_for, PRUNE_BATCH),
        )
    return Tidied(removed.rowcount, marked.rowcount, dropped.rowcount, pruned.rowcount)


async def run_upkeep(
    pool: AsyncConnectionPool[Any],
    *,
    interval_s: float,
    abandoned_after: timedelta,
    keep_for: timedelta,
) -> None:
    """Tidy every `interval_s` until cancelled; a database outage only skips passes."""
    while True:
        try:
            tidied = await tidy_requests(pool, abandoned_after=abandoned_after, keep_for=keep_for)
            if tidied and (tidied.dropped_unpublished or tidied.pruned):
                log.info(
                    "execution requests: %d dropped (never produced), %d pruned",
                    tidied.dropped_unpublished,
                    tidied.pruned,
                )
        except (psycopg.Error, PoolTimeout) as exc:
            log.debug("request upkeep skipped: %s", exc)
        await asyncio.sleep(interval_s)
