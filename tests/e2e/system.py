"""The whole Jobsprint system as real processes: gateway, executors, projector and metrics,
on their own topics, database, chDB folder and free ports, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SERVICES = {
    "api-gateway": ("jobsprint.gateway", "JOBSPRINT_HTTP_PORT"),
    "projector": ("jobsprint.projector", "JOBSPRINT_PROJECTOR_HTTP_PORT"),
    "metrics": ("jobsprint.metrics", "JOBSPRINT_METRICS_HTTP_PORT"),
    "executor": ("jobsprint.executor", "JOBSPRINT_EXECUTOR_HTTP_PORT"),
}


@dataclass
class System:
    bootstrap: str
    database_url: str
    topic_prefix: str
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "JOBSPRINT_KAFKA_BOOTSTRAP": self.bootstrap,
            "JOBSPRINT_DATABASE_URL": self.database_url,
            "JOBSPRINT_TOPIC_PREFIX": self.topic_prefix,
            "JOBSPRINT_PARTITIONS": "3",
            "JOBSPRINT_CHDB_PATH": str(self.workdir / "chdb"),
            "JOBSPRINT_HTTP_ALLOW_LIST": "127.0.0.1,localhost",
            "JOBSPRINT_TOKEN_CACHE_SECONDS": "0",
            "JOBSPRINT_LOG_LEVEL": "INFO",
            **self.extra_env,
        }

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api-gateway']}"

    def start(self, name: str) -> None:
        """Start one service by name (`executor-2` runs another executor) and wait until it
        answers /healthz."""
        self.spawn(name)
        self.wait_healthy(name)

    def spawn(self, name: str) -> None:
        """Start one service and return at once (a restart after a crash may fail until its
        dependency is back)."""
        kind = name.split("-")[0] if name.startswith("executor") else name
        module, port_var = SERVICES[kind]
        port = self.ports.get(name) or free_port()
        self.ports[name] = port
        env = self.env()
        env[port_var] = str(port)
        if kind == "api-gateway":
            env["JOBSPRINT_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
            env["JOBSPRINT_METRICS_URL"] = f"http://127.0.0.1:{self.ports.get('metrics', 1)}"
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", module],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def wait_healthy(self, name: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.ports[name]}/healthz"
        while time.monotonic() < deadline:
            proc = self.processes[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not healthy within {timeout_s}s:\n{self.log_tail(name)}")

    def wait_ready(self, name: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.ports[name]}/readyz"
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready within {timeout_s}s:\n{self.log_tail(name)}")

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def start_all(self, executors: int = 2) -> None:
        self.start("metrics")
        self.start("projector")
        for i in range(1, executors + 1):
            self.start(f"executor-{i}")
        self.start("api-gateway")
        for name in self.processes:
            self.wait_ready(name)

    def kill(self, name: str) -> None:
        """SIGKILL: the process dies mid-whatever, as on a node failure."""
        proc = self.processes.pop(name)
        proc.kill()
        proc.wait()

    def terminate(self, name: str, timeout_s: float = 60) -> int:
        """SIGTERM and wait: a graceful stop, as on a rolling restart."""
        proc = self.processes.pop(name)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout_s)

    def stop_all(self) -> None:
        procs = list(self.processes.values())
        self.processes.clear()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def create_token(self, workspace: str, *scopes: str) -> str:
        argv = [
            sys.executable,
            "-m",
            "jobsprint.gateway.cli",
            "admin",
            "token",
            "create",
            "--workspace",
            workspace,
        ]
        for scope in scopes:
            argv += ["--scope", scope]
        out = subprocess.run(argv, env=self.env(), check=True, capture_output=True, text=True)
        return out.stdout.strip()
