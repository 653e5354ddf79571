"""`jobsprint` command line: token administration against JOBSPRINT_DATABASE_URL.

jobsprint admin token create --workspace NAME [--scope S ...] [--name N]
    creates the workspace when needed and prints ONLY the new token on stdout
jobsprint admin token revoke TOKEN_ID
jobsprint admin token list --workspace NAME     (ids, scopes, dates; never tokens)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

from jobsprint.gateway.app import apply_migrations
from jobsprint.gateway.repository import Repository
from jobsprint.gateway.settings import GatewaySettings
from jobsprint.gateway.shaping import iso
from jobsprint.gateway.tokens import SCOPES
from jobsprint.runtime.postgres import make_pool


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobsprint", description="Jobsprint administration")
    parser.add_argument(
        "--database-url",
        default=None,
        help="Postgres connection string (default: $JOBSPRINT_DATABASE_URL)",
    )
    areas = parser.add_subparsers(dest="area", required=True)
    admin = areas.add_parser("admin", help="administration")
    objects = admin.add_subparsers(dest="object", required=True)
    token = objects.add_parser("token", help="API tokens")
    actions = token.add_subparsers(dest="action", required=True)

    create = actions.add_parser("create", help="create a token; prints only the token")
    create.add_argument("--workspace", required=True, help="workspace name (created if new)")
    create.add_argument(
        "--scope",
        action="append",
        choices=SCOPES,
        dest="scopes",
        help="a scope to grant; repeat for several (default: all of them)",
    )
    create.add_argument("--name", default=None, help="a label for the token")

    revoke = actions.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")

    listing = actions.add_parser("list", help="list a workspace's tokens (never the tokens)")
    listing.add_argument("--workspace", required=True)
    return parser


async def _with_repository(database_url: str) -> tuple[Repository, Any]:
    await apply_migrations(database_url)
    pool = make_pool(database_url, min_size=1, max_size=2, name="jobsprint-cli")
    await pool.open(wait=True, timeout=10)
    return Repository(pool), pool


async def create_token(
    database_url: str, workspace: str, scopes: Sequence[str] | None = None, name: str | None = None
) -> tuple[str, str, str]:
    """(workspace id, token id, token) — the token is shown once and stored only hashed."""
    repository, pool = await _with_repository(database_url)
    try:
        workspace_id = await repository.ensure_workspace(workspace)
        token_id, token = await repository.create_token(
            workspace_id, list(dict.fromkeys(scopes or SCOPES)), name
        )
        return workspace_id, token_id, token
    finally:
        await pool.close()


async def revoke_token(database_url: str, token_id: str) -> bool:
    repository, pool = await _with_repository(database_url)
    try:
        return await repository.revoke_token(token_id)
    finally:
        await pool.close()


async def list_tokens(database_url: str, workspace: str) -> list[dict[str, Any]] | None:
    repository, pool = await _with_repository(database_url)
    try:
        return await repository.list_tokens(workspace)
    finally:
        await pool.close()


async def _run(args: argparse.Namespace, database_url: str) -> int:
    if args.action == "create":
        workspace_id, token_id, token = await create_token(
            database_url, args.workspace, args.scopes, args.name
        )
        print(f"created {token_id} in workspace {workspace_id}", file=sys.stderr)
        print(token)
        return 0
    if args.action == "revoke":
        if await revoke_token(database_url, args.token_id):
            print(f"revoked {args.token_id}", file=sys.stderr)
            return 0
        print(f"no live token {args.token_id}", file=sys.stderr)
        return 1
    rows = await list_tokens(database_url, args.workspace)
    if rows is None:
        print(f"no workspace named {args.workspace!r}", file=sys.stderr)
        return 1
    print("id\tname\tscopes\tcreated\trevoked")
    for row in rows:
        print(
            "\t".join(
                [
                    row["id"],
                    row["name"] or "-",
                    ",".join(row["scopes"]),
                    iso(row["created_at"]) or "-",
                    iso(row["revoked_at"]) or "-",
                ]
            )
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    database_url = args.database_url or os.environ.get("JOBSPRINT_DATABASE_URL")
    if not database_url:
        database_url = GatewaySettings().database_url
    try:
        return asyncio.run(_run(args, database_url))
    except Exception as exc:  # a clear line, not a traceback, for an operator
        print(f"jobsprint: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
