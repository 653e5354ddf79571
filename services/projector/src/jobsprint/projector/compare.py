"""Compare two copies of the read model (say the live schema and a rebuild) table by table."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from jobsprint.projector.settings import check_schema_name
from jobsprint.projector.store import Connection

# table -> the key that orders its rows; projector_checkpoints is left out on purpose
# (a live projector may already be further along than a rebuild).
COMPARED_TABLES = {
    "executions": ("id",),
    "execution_steps": ("execution_id", "step_id"),
    "execution_logs": ("execution_id", "seq"),
    "projector_deleted_executions": ("execution_id",),
}


@dataclass(frozen=True, slots=True)
class TableChecksum:
    rows: int
    md5: str  # md5 over the md5 of every row's JSON, in key order


async def table_checksums(conn: Connection, schema: str) -> dict[str, TableChecksum]:
    """Row count and checksum of every read-model table in `schema`. Times are rendered in
    UTC, so two sessions (or two schemas) with the same rows give the same checksum."""
    found: dict[str, TableChecksum] = {}
    async with conn.transaction():
        await conn.execute("SET LOCAL TimeZone = 'UTC'")
        await conn.execute("SET LOCAL extra_float_digits = 1")
        for table, key in COMPARED_TABLES.items():
            query = sql.SQL(
                "SELECT count(*), md5(coalesce("
                "string_agg(md5(row_to_json(t)::text), '' ORDER BY {key}), '')) FROM {table} t"
            ).format(
                key=sql.SQL(", ").join(sql.Identifier("t", k) for k in key),
                table=sql.Identifier(check_schema_name(schema), table),
            )
            cur = await conn.execute(query)
            row = await cur.fetchone()
            assert row is not None
            found[table] = TableChecksum(rows=row[0], md5=row[1])
    return found


async def compare_schemas(conn: Connection, schema_a: str, schema_b: str) -> tuple[bool, list[str]]:
    """(identical?, one report line per table)."""
    a = await table_checksums(conn, schema_a)
    b = await table_checksums(conn, schema_b)
    lines = []
    for table in COMPARED_TABLES:
        verdict = "same" if a[table] == b[table] else "DIFFERENT"
        lines.append(
            f"{table:<30} {schema_a}: {a[table].rows:>8} rows {a[table].md5}  "
            f"{schema_b}: {b[table].rows:>8} rows {b[table].md5}  {verdict}"
        )
    return a == b, lines
