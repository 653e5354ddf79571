"""The local stack: a real Kafka broker (KRaft, from Maven Central jars), a real Postgres 15
(the machine's binaries) and the Jobsprint services as background processes.

    python scripts/stack.py up [--infra-only]   start what is not running (idempotent)
    python scripts/stack.py down                stop everything this script started
    python scripts/stack.py status              say what runs where

Settings (environment):
    JOBSPRINT_HOME        jars, Kafka data, logs, pid files     (default: <repo>/.local)
    JOBSPRINT_PGDATA      Postgres data folder; must be reachable by the `postgres` user when
                          run as root              (default: /var/tmp/jobsprint/pgdata)
    JOBSPRINT_KAFKA_PORT  broker port on 127.0.0.1 (default: 9092; controller uses port+1)
    JOBSPRINT_PG_PORT     Postgres port on 127.0.0.1 (default: 5432)
    JOBSPRINT_PARTITIONS  partitions of the commands and events topics (default: 6)
    JOBSPRINT_EXECUTORS   executor processes started by `up` (default: 2)
    JOBSPRINT_CONSUMER_NICE  niceness of the executors, projector and metrics service
                          (default: 5; 0 to run them at the gateway's priority)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("JOBSPRINT_HOME", REPO / ".local"))
PGDATA = Path(os.environ.get("JOBSPRINT_PGDATA", "/var/tmp/jobsprint/pgdata"))
KAFKA_PORT = int(os.environ.get("JOBSPRINT_KAFKA_PORT", "9092"))
PG_PORT = int(os.environ.get("JOBSPRINT_PG_PORT", "5432"))
PARTITIONS = int(os.environ.get("JOBSPRINT_PARTITIONS", "6"))
EXECUTORS = int(os.environ.get("JOBSPRINT_EXECUTORS", "2"))
# On one box the gateway answers clients while the consumers work in batches: the consumers
# run at a lower priority, so a request does not queue behind a batch, and what they are
# kept waiting for joins their next batch (docs/operations.md, "One box").
CONSUMER_NICE = int(os.environ.get("JOBSPRINT_CONSUMER_NICE", "5"))
PG_BIN = Path(os.environ.get("JOBSPRINT_PG_BIN", "/usr/lib/postgresql/15/bin"))
DATABASE = "jobsprint"

KAFKA_DIR = HOME / "kafka"
KAFKA_LIB = KAFKA_DIR / "lib"
LOGS = HOME / "logs"
RUN = HOME / "run"

BOOTSTRAP = f"127.0.0.1:{KAFKA_PORT}"
DATABASE_URL = f"postgresql://postgres@127.0.0.1:{PG_PORT}/{DATABASE}"


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port: int, what: str, timeout_s: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_open(port):
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            sys.exit(f"{what} did not answer on 127.0.0.1:{port} within {timeout_s:.0f}s\n{tail}")
        time.sleep(0.2)


def read_pid(name: str) -> int | None:
    path = RUN / f"{name}.pid"
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        path.unlink(missing_ok=True)
        return None


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None, nice: int = 0) -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    log = open(LOGS / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        ["nice", "-n", str(nice), *argv] if nice else argv,  # nice execs: the pid is argv's
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # survives this script, stopped by `down`
        cwd=REPO,
    )
    (RUN / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def stop_pid(name: str, timeout_s: float = 20.0) -> bool:
    pid = read_pid(name)
    if pid is None:
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    (RUN / f"{name}.pid").unlink(missing_ok=True)
    return True


# --- Kafka ---------------------------------------------------------------------------------


def kafka_jars() -> None:
    if KAFKA_LIB.exists() and any(KAFKA_LIB.glob("kafka_2.13-*.jar")):
        return
    if not shutil.which("mvn"):
        sys.exit("Maven (mvn) is needed once to fetch the Kafka jars from Maven Central")
    say("fetching Kafka jars from Maven Central (once)…")
    KAFKA_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(REPO / "deploy/local/kafka-pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={KAFKA_LIB}",
            "-DincludeScope=runtime",
        ],
        check=True,
    )


def kafka_properties() -> Path:
    data = KAFKA_DIR / "data"
    props = KAFKA_DIR / "server.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{KAFKA_PORT + 1}",
                f"listeners=PLAINTEXT://127.0.0.1:{KAFKA_PORT},"
                f"CONTROLLER://127.0.0.1:{KAFKA_PORT + 1}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{KAFKA_PORT}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={data}",
                f"num.partitions={PARTITIONS}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=6",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=6",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "log.retention.hours=-1",
                # The cleaner zeroes its whole offset map before each pass; the executor-state
                # topic rolls (and is compacted) every minute per partition, and 128 MiB
                # zeroed each time was a tenth of the broker's sampled CPU under load.
                "log.cleaner.dedupe.buffer.size=16777216",
                # One box, two cores: one network thread and two request handlers (defaults
                # 3 and 8) took 0.35 cores at the half load instead of 0.38.
                "num.network.threads=1",
                "num.io.threads=2",
                "",
            ]
        )
    )
    return props


def java(*args: str) -> list[str]:
    return ["java", "-cp", f"{KAFKA_LIB}/*", *args]


def kafka_up() -> None:
    if port_open(KAFKA_PORT):
        say(f"kafka     already running on {BOOTSTRAP}")
        return
    kafka_jars()
    props = kafka_properties()
    if not (KAFKA_DIR / "data" / "meta.properties").exists():
        cluster_id = (
            subprocess.run(
                java("kafka.tools.StorageTool", "random-uuid"),
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        subprocess.run(
            java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)),
            check=True,
            capture_output=True,
        )
    heap = os.environ.get("JOBSPRINT_KAFKA_HEAP", "-Xms256m -Xmx1g")
    spawn(
        "kafka",
        [
            "java",
            *heap.split(),
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={REPO / 'deploy/local/log4j2.yaml'}",
            "-cp",
            f"{KAFKA_LIB}/*",
            "kafka.Kafka",
            str(props),
        ],
    )
    wait_port(KAFKA_PORT, "kafka", 60, LOGS / "kafka.log")
    say(f"kafka     started on {BOOTSTRAP} (data {KAFKA_DIR / 'data'})")


# --- Postgres ------------------------------------------------------------------------------


def as_pg_user(argv: list[str]) -> list[str]:
    """initdb refuses root: as root, run Postgres tools as the `postgres` user."""
    if os.geteuid() != 0:
        return argv
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        sys.exit("running as root needs a `postgres` system user for initdb/pg_ctl")
    return ["runuser", "-u", "postgres", "--", *argv]


def pg_owner_dirs() -> None:
    PGDATA.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(PGDATA.parent, user.pw_uid, user.pw_gid)
        if PGDATA.exists():
            os.chown(PGDATA, user.pw_uid, user.pw_gid)


def postgres_up() -> None:
    if port_open(PG_PORT):
        say(f"postgres  already running on 127.0.0.1:{PG_PORT}")
    else:
        pg_owner_dirs()
        if not (PGDATA / "PG_VERSION").exists():
            subprocess.run(
                as_pg_user(
                    [
                        str(PG_BIN / "initdb"),
                        "-D",
                        str(PGDATA),
                        "-U",
                        "postgres",
                        "--auth=trust",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ]
                ),
                check=True,
                capture_output=True,
            )
            with open(PGDATA / "postgresql.conf", "a") as conf:
                conf.write(
                    "\n# jobsprint local defaults\n"
                    "listen_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{PGDATA.parent}'\n"
                    "max_connections = 300\n"
                    "shared_buffers = 512MB\n"
                    "work_mem = 16MB\n"
                    "wal_level = minimal\n"
                    "max_wal_senders = 0\n"
                    "max_wal_size = 4GB\n"
                    "checkpoint_timeout = 15min\n"
                    # autovacuum's ANALYZE of a big table took 0.2 cores for 2 s at full
                    # speed: on a busy box every request waited behind it
                    "autovacuum_vacuum_cost_delay = 10ms\n"
                )
        log = PGDATA.parent / "postgres.log"
        subprocess.run(
            as_pg_user(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(PGDATA),
                    "-l",
                    str(log),
                    "-o",
                    f"-p {PG_PORT}",
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        wait_port(PG_PORT, "postgres", 60, log)
        say(f"postgres  started on 127.0.0.1:{PG_PORT} (data {PGDATA})")
    ensure_database()


def ensure_database() -> None:
    import psycopg

    admin = f"postgresql://postgres@127.0.0.1:{PG_PORT}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
            say(f"postgres  created database {DATABASE}")


def postgres_down() -> None:
    if not (PGDATA / "postmaster.pid").exists():
        return
    subprocess.run(
        as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(PGDATA), "-m", "fast", "-w", "stop"]),
        check=False,
        capture_output=True,
    )
    say("postgres  stopped")


# --- Topics and services -------------------------------------------------------------------


def ensure_topics() -> None:
    from jobsprint.events import Topics
    from jobsprint.runtime.kafka import ensure_topics as create
    from jobsprint.runtime.kafka import wait_for_broker

    async def run() -> None:
        await wait_for_broker(BOOTSTRAP, 60)
        await create(
            BOOTSTRAP, Topics(os.environ.get("JOBSPRINT_TOPIC_PREFIX", "jobsprint")), PARTITIONS
        )

    asyncio.run(run())
    say(f"topics    ready ({PARTITIONS} partitions)")


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    port: int | None = None  # HTTP port it serves, waited for
    nice: int = 0  # scheduling niceness (CONSUMER_NICE for the consumers)


def services() -> list[Service]:
    py = sys.executable
    found = [
        Service("metrics", [py, "-m", "jobsprint.metrics"], 8090, CONSUMER_NICE),
        Service("projector", [py, "-m", "jobsprint.projector"], 8091, CONSUMER_NICE),
        *[
            Service(f"executor-{i}", [py, "-m", "jobsprint.executor"], 8091 + i, CONSUMER_NICE)
            for i in range(1, EXECUTORS + 1)
        ],
        Service("api-gateway", [py, "-m", "jobsprint.gateway"], 8080),
    ]
    import importlib.util

    return [s for s in found if importlib.util.find_spec(f"{s.argv[2]}.__main__") is not None]


def service_env() -> dict[str, str]:
    return {
        "JOBSPRINT_KAFKA_BOOTSTRAP": BOOTSTRAP,
        "JOBSPRINT_DATABASE_URL": DATABASE_URL,
        "JOBSPRINT_PARTITIONS": str(PARTITIONS),
    }


def services_up() -> None:
    for service in services():
        if read_pid(service.name):
            say(f"{service.name:<9} already running")
            continue
        env = service_env()
        if service.name.startswith("executor-"):
            env["JOBSPRINT_EXECUTOR_HTTP_PORT"] = str(8091 + int(service.name.split("-")[1]))
        spawn(service.name, service.argv, env, service.nice)
        if service.port:
            wait_port(service.port, service.name, 60, LOGS / f"{service.name}.log")
            say(f"{service.name:<9} started on 127.0.0.1:{service.port}")
        else:
            say(f"{service.name:<9} started (log {LOGS / (service.name + '.log')})")


def up(infra_only: bool) -> None:
    postgres_up()
    kafka_up()
    ensure_topics()
    if not infra_only:
        services_up()


def down() -> None:
    names = sorted(p.stem for p in RUN.glob("*.pid")) if RUN.exists() else []
    for name in [n for n in names if n != "kafka"]:
        if stop_pid(name):
            say(f"{name:<9} stopped")
    if stop_pid("kafka", timeout_s=30):
        say("kafka     stopped")
    postgres_down()
    say("down")


def status() -> None:
    say(f"kafka     {'up' if port_open(KAFKA_PORT) else 'down'} on {BOOTSTRAP}")
    say(f"postgres  {'up' if port_open(PG_PORT) else 'down'} on 127.0.0.1:{PG_PORT}")
    for service in services():
        say(f"{service.name:<9} {'up' if read_pid(service.name) else 'down'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--infra-only", action="store_true", help="Kafka and Postgres only")
    args = parser.parse_args()
    if args.command == "up":
        up(args.infra_only)
    elif args.command == "down":
        down()
    else:
        status()


if __name__ == "__main__":
    main()
