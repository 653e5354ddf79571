"""The current definitions of recently executed workflows, so an execute does not read the
workflow from Postgres each time.

Kept exact by notifications: a trigger on `workflows` (migration 0003) sends
`<workspace_id> <workflow_id>` on `jobsprint_workflows` for every update or delete, the
gateway's LISTEN connection (waiters.py) evicts that entry, and the gateway that made the
change evicts it at once itself. Entries are only served while that connection listens:
when it is lost the cache is emptied and bypassed until it is back, so a missed
notification can never leave a stale definition behind. A read that was in flight while any
workflow changed is not stored (its result may predate the change).

Another gateway sees an update when its notification arrives, a millisecond or so after the
commit; the gateway that answered the update sees it at once."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

Row = dict[str, Any]
Key = tuple[str, str]

CHANNEL = "jobsprint_workflows"
MAX_ENTRIES = 10_000
MAX_BYTES = 32 * 1024 * 1024  # of definitions, as JSON


class WorkflowCache:
    def __init__(self, *, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.enabled = False  # only while notifications are being received
        self._rows: OrderedDict[Key, tuple[Row, int]] = OrderedDict()
        self._bytes = 0
        self._generation = 0  # bumped by every change: reads in flight are then not stored
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    async def get(
        self, workspace_id: str, workflow_id: str, load: Callable[[], Awaitable[Row | None]]
    ) -> Row | None:
        """The cached row, or what `load` returns (stored when it is a workflow and nothing
        changed meanwhile). Absent workflows are not cached."""
        key = (workspace_id, workflow_id)
        if self.enabled:
            entry = self._rows.get(key)
            if entry is not None:
                self._rows.move_to_end(key)
                self.hits += 1
                return entry[0]
        self.misses += 1
        generation = self._generation
        row = await load()
        if row is not None and self.enabled and generation == self._generation:
            self._store(key, row)
        return row

    def _store(self, key: Key, row: Row) -> None:
        size = len(orjson.dumps(row.get("definition")))
        if size > self.max_bytes // 16:
            return  # one huge definition must not push out everything else
        self._drop(key)
        self._rows[key] = (row, size)
        self._bytes += size
        while len(self._rows) > self.max_entries or self._bytes > self.max_bytes:
            _, (_, dropped) = self._rows.popitem(last=False)
            self._bytes -= dropped

    def _drop(self, key: Key) -> None:
        entry = self._rows.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1]

    def changed(self, workspace_id: str, workflow_id: str) -> None:
        """The workflow was updated or deleted (here or by another gateway)."""
        self._generation += 1
        self._drop((workspace_id, workflow_id))

    def notified(self, payload: str) -> None:
        """A `jobsprint_workflows` notification: `<workspace_id> <workflow_id>`."""
        workspace_id, _, workflow_id = payload.partition(" ")
        self.changed(workspace_id, workflow_id)

    def listening(self) -> None:
        """Notifications flow (again): start caching from empty."""
        self._clear()
        self.enabled = True

    def deaf(self) -> None:
        """Notifications are lost: stop serving from the cache until they flow again."""
        self.enabled = False
        self._clear()

    def _clear(self) -> None:
        self._generation += 1
        self._rows.clear()
        self._bytes = 0
