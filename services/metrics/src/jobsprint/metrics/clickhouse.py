"""ClickHouse adapters: chDB (the engine in-process, over a data folder) or a ClickHouse server
through clickhouse-connect. Both speak the same SQL to the same tables; configuration picks one.

The adapters are blocking and not safe for concurrent use, so each holds a lock; the service
wraps them in `AsyncClickHouse`, which runs every call in a worker thread so the event loop
(HTTP API, Kafka consumer) stays responsive while ClickHouse works. Several adapters may share
one chDB folder inside one process; each has its own session (settings such as `readonly`).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import orjson

Params = Mapping[str, Any]
# Tables are partitioned by day: one batch (say, deletions of old executions) may touch more
# days than ClickHouse's default limit of 100 partitions per insert.
INSERT_SETTINGS = {"max_partitions_per_insert_block": 0}
CHDB_JSON_INPUT = {"date_time_input_format": "best_effort"}


class ClickHouseError(Exception):
    """ClickHouse refused a statement or could not be reached."""


class EngineLocked(ClickHouseError):
    """Another process has the chDB folder open (chDB allows one process per folder)."""


@dataclass(frozen=True)
class Table:
    """A result with its column names, for analysts' queries."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


class ClickHouse(Protocol):
    """What the loader and the queries need from ClickHouse."""

    def query(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        """Rows of a SELECT; `{name:Type}` placeholders are bound from `params`."""
        ...

    def query_table(self, sql: str, params: Params | None = None) -> Table: ...

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        """Insert rows (tuples in `columns` order) into `table` (`database.table`)."""
        ...

    def command(self, sql: str) -> None:
        """A statement without a result (DDL, SET)."""
        ...

    def close(self) -> None: ...


# --- chDB -------------------------------------------------------------------------------------


def check_chdb_folder_free(path: Path) -> None:
    """Raise EngineLocked when another process has the chDB folder open.

    chDB holds an exclusive flock on `<folder>/status` while it runs; chDB itself only says
    "Error initializing EmbeddedServer", so look first and say what is going on.
    """
    status = path / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise EngineLocked(
                f"the chDB folder {path} is open in another process (the running metrics "
                "service owns it)"
            ) from None
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class ChdbClickHouse:
    """chDB over a data folder. Within one process every instance must use the same folder
    (a chDB rule); each instance is its own session."""

    def __init__(
        self,
        path: Path,
        *,
        database: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        import chdb

        path = path.resolve()
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        try:
            self._conn = chdb.connect(str(path))  # type: ignore[no-untyped-call]  # chdb is untyped
        except Exception as exc:
            check_chdb_folder_free(path)  # the likely cause, said plainly
            raise ClickHouseError(f"cannot open chDB at {path}: {exc}") from None
        if database:
            self.command(f"USE {database}")
        for name, value in (settings or {}).items():
            self.command(f"SET {name} = {_literal(value)}")

    def query(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        return self.query_table(sql, params).rows

    def query_table(self, sql: str, params: Params | None = None) -> Table:
        with self._lock:
            try:
                result = self._conn.query(sql, "Arrowtable", params=_chdb_params(params))
            except Exception as exc:
                raise ClickHouseError(str(exc)) from None
        columns = list(result.column_names)
        if not columns:
            return Table([], [])
        data = [result.column(i).to_pylist() for i in range(len(columns))]
        return Table(columns, list(zip(*data, strict=True)))

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        if not rows:
            return
        # one JSON array per row, times as orjson writes them (RFC 3339 with offset, parsed
        # by best_effort): no dict and no string formatting per value in Python
        lines = b"\n".join(map(orjson.dumps, rows))
        settings = ", ".join(
            f"{k} = {_literal(v)}" for k, v in {**INSERT_SETTINGS, **CHDB_JSON_INPUT}.items()
        )
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) SETTINGS {settings}"
            " FORMAT JSONCompactEachRow\n"
        )
        with self._lock:
            try:
                self._conn.query(sql + lines.decode(), "CSV")
            except Exception as exc:
                raise ClickHouseError(f"insert into {table} failed: {exc}") from None

    def command(self, sql: str) -> None:
        with self._lock:
            try:
                self._conn.query(sql, "CSV")
            except Exception as exc:
                raise ClickHouseError(str(exc)) from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    return value


def _chdb_params(params: Params | None) -> dict[str, str]:
    """chDB takes parameter values as text in ClickHouse's escaped format."""
    return {name: _param_text(value) for name, value in (params or {}).items()}


def _param_text(value: Any) -> str:
    if isinstance(value, str):
        return _escape(value)
    if isinstance(value, list | tuple):
        return _literal(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _escape(text: str) -> str:
    return (
        text.replace("\\", "\\\\")
        .replace("\t", "\\t")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\0", "\\0")
    )


def _literal(value: Any) -> str:
    """A ClickHouse SQL literal for a parameter value or a SET."""
    if isinstance(value, str):
        return "'" + _escape(value).replace("'", "\\'") + "'"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(_literal(v) for v in value) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, datetime | date):
        return _literal(_json_value(value) if isinstance(value, datetime) else value.isoformat())
    raise TypeError(f"no ClickHouse literal for {type(value).__name__}")


# --- ClickHouse server ------------------------------------------------------------------------


class ServerClickHouse:
    """A ClickHouse server through clickhouse-connect (HTTP)."""

    def __init__(
        self,
        url: str,
        *,
        database: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        import clickhouse_connect

        parts = urlsplit(url)
        self._lock = threading.Lock()
        try:
            self._client = clickhouse_connect.get_client(
                host=parts.hostname,
                port=parts.port or (8443 if parts.scheme == "https" else 8123),
                username=unquote(parts.username) if parts.username else "default",
                password=unquote(parts.password) if parts.password else "",
                secure=parts.scheme == "https",
                database=database or "default",
                settings=dict(settings or {}),
                autogenerate_session_id=False,
            )
        except Exception as exc:
            raise ClickHouseError(f"cannot reach ClickHouse at {parts.hostname}: {exc}") from None

    @classmethod
    def of_client(cls, client: Any) -> ServerClickHouse:
        """Wrap an existing clickhouse-connect client (tests, tools)."""
        self = cls.__new__(cls)
        self._lock = threading.Lock()
        self._client = client
        return self

    def query(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        return self.query_table(sql, params).rows

    def query_table(self, sql: str, params: Params | None = None) -> Table:
        with self._lock:
            try:
                result = self._client.query(sql, parameters=dict(params or {}))
            except Exception as exc:
                raise ClickHouseError(str(exc)) from None
        rows = [tuple(_aware(v) for v in row) for row in result.result_rows]
        return Table(list(result.column_names), rows)

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        if not rows:
            return
        database, _, name = table.rpartition(".")
        with self._lock:
            try:
                self._client.insert(
                    name,
                    list(rows),
                    column_names=list(columns),
                    database=database or None,
                    settings=INSERT_SETTINGS,
                )
            except Exception as exc:
                raise ClickHouseError(f"insert into {table} failed: {exc}") from None

    def command(self, sql: str) -> None:
        with self._lock:
            try:
                self._client.command(sql)
            except Exception as exc:
                raise ClickHouseError(str(exc)) from None

    def close(self) -> None:
        with self._lock:
            self._client.close()


def _aware(value: Any) -> Any:
    """Every time column of ours is UTC; some clickhouse-connect transports drop the zone."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# --- choosing one, and running it off the event loop -------------------------------------------


def open_clickhouse(
    *,
    clickhouse_url: str | None,
    chdb_path: Path,
    database: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> ClickHouse:
    """The server when `clickhouse_url` is set, else chDB over `chdb_path`. `database` is the
    session's current one (it must exist)."""
    if clickhouse_url:
        return ServerClickHouse(clickhouse_url, database=database, settings=settings)
    return ChdbClickHouse(chdb_path, database=database, settings=settings)


class AsyncClickHouse:
    """Runs a blocking adapter in worker threads, one call at a time per adapter."""

    def __init__(self, sync: ClickHouse) -> None:
        self.sync = sync

    async def query(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self.sync.query, sql, params)

    async def query_table(self, sql: str, params: Params | None = None) -> Table:
        return await asyncio.to_thread(self.sync.query_table, sql, params)

    async def insert(
        self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]
    ) -> None:
        await asyncio.to_thread(self.sync.insert, table, rows, columns)

    async def command(self, sql: str) -> None:
        await asyncio.to_thread(self.sync.command, sql)

    def close(self) -> None:
        self.sync.close()
