"""`jobsprint-projector` (= `python -m jobsprint.projector`).

    jobsprint-projector                          run the projector until SIGTERM
    jobsprint-projector rebuild [--schema NAME] [--workers N]
                                                 replay the events topic into a fresh schema
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
from jobsprint.projector.rebuild import RebuildFailed, rebuild
from jobsprint.projector.service import serve
from jobsprint.projector.settings import ProjectorSettings, check_schema_name
from jobsprint.runtime.logs import setup_logging
from jobsprint.runtime.settings import load_settings

log = logging.getLogger("jobsprint.projector")

# The fastest of 1, 2 and 3 worker processes over the bench's replay topic (1.3M events,
# 6 partitions) on a 2-core box that also runs Kafka and Postgres: 36k events/s with 1,
# 59-64k with 2, 59-61k with 3 (more CPU and memory for nothing).
DEFAULT_WORKERS = 2


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    settings = load_settings(ProjectorSettings)
    setup_logging("projector", settings.log_level)
    try:
        if args.command == "rebuild":
            summary = uvloop.run(rebuild(settings, args.schema, args.workers))
            sys.stdout.write(orjson.dumps(summary.as_dict()).decode() + "\n")
        elif args.command == "compare":
            same = uvloop.run(_compare(settings, args.schema_a, args.schema_b))
            sys.exit(0 if same else 1)
        else:
            uvloop.run(_serve_until_signalled(settings))
    except RebuildFailed as exc:  # the worker logged its traceback
        log.error("rebuild failed, its schema is incomplete: %s", exc)
        sys.exit(1)
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
    rebuild_cmd.add_argument(
        "--workers",
        type=_at_least_one,
        default=DEFAULT_WORKERS,
        metavar="N",
        help="processes replaying the partitions, dealt round-robin, never more than there "
        f"are partitions (default: {DEFAULT_WORKERS}, the fastest of 1, 2 and 3 on a 2-core box "
        "running Kafka and Postgres too: 1.7x one process; 3 were no faster)",
    )
    compare_cmd = commands.add_parser(
        "compare", help="compare row counts and checksums of two read models"
    )
    compare_cmd.add_argument("schema_a", type=check_schema_name)
    compare_cmd.add_argument("schema_b", type=check_schema_name)
    return parser


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


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
