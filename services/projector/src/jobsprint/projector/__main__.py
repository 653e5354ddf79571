"""`jobsprint-projector` (= `python -m jobsprint.projector`).

    jobsprint-projector                          run the projector until SIGTERM
    jobsprint-projector rebuild [--schema NAME]  replay the events topic into a fresh schema
    jobsprint-projector compare SCHEMA_A SCHEMA_B  compare two read models; exit 1 if they differ

Settings come from `JOBSPRINT_*` environment variables (see settings.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import orjson
import uvloop

from jobsprint.projector import store
from jobsprint.projector.compare import compare_schemas
from jobsprint.projector.rebuild import rebuild
from jobsprint.projector.service import serve
from jobsprint.projector.settings import ProjectorSettings, check_schema_name
from jobsprint.runtime.logs import setup_logging
from jobsprint.runtime.settings import load_settings

log = logging.getLogger("jobsprint.projector")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    settings = load_settings(ProjectorSettings)
    setup_logging("projector", settings.log_level)
    try:
        if args.command == "rebuild":
            summary = uvloop.run(rebuild(settings, args.schema))
            sys.stdout.write(orjson.dumps(summary.as_dict()).decode() + "\n")
        elif args.command == "compare":
            same = uvloop.run(_compare(settings, args.schema_a, args.schema_b))
            sys.exit(0 if same else 1)
        else:
            uvloop.run(_serve_until_signalled(settings))
    except Exception:
        log.exception("projector failed")
        sys.exit(1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobsprint-projector",
        description="Fold the events topic into the Postgres read model.",
    )
    commands = parser.add_subparsers(dest="command")
    rebuild_cmd = commands.add_parser(
        "rebuild", help="replay the events topic into fresh tables in another schema"
    )
    rebuild_cmd.add_argument(
        "--schema",
        type=check_schema_name,
        help="target schema, dropped and recreated (default: rebuild_<yyyymmddhhmmss>)",
    )
    compare_cmd = commands.add_parser(
        "compare", help="compare row counts and checksums of two read models"
    )
    compare_cmd.add_argument("schema_a", type=check_schema_name)
    compare_cmd.add_argument("schema_b", type=check_schema_name)
    return parser


async def _serve_until_signalled(settings: ProjectorSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop)


async def _compare(settings: ProjectorSettings, schema_a: str, schema_b: str) -> bool:
    async with await store.connect(settings.database_url, "public") as conn:
        same, lines = await compare_schemas(conn, schema_a, schema_b)
    for line in lines:
        sys.stdout.write(line + "\n")
    sys.stdout.write(("identical" if same else "DIFFERENT") + "\n")
    return same


if __name__ == "__main__":
    main()
