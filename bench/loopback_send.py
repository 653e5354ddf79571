"""What one small loopback TCP send costs on this machine, with the receiver asleep between
sends (as the broker's and Postgres's network threads are between requests at these rates)
and back to back.

    uv run python bench/loopback_send.py [--sends 20000] [--gap-ms 2]

py-spy samples a thread whenever it is runnable, so a process that wakes another on a busy
2-core box often shows its send() as hot while it merely waits for a core; this measures the
send itself (wall time inside send(), and the process's CPU per send).
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import time


def measure(sends: int, gap_s: float, size: int) -> dict[str, float]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    pid = os.fork()
    if pid == 0:  # the receiver: reads until the sender closes
        conn, _ = server.accept()
        while conn.recv(65536):
            pass
        os._exit(0)
    sender = socket.create_connection(server.getsockname())
    sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = b"x" * size
    inside = 0.0
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(sends):
        started = time.perf_counter()
        sender.send(data)
        inside += time.perf_counter() - started
        if gap_s:
            time.sleep(gap_s)
    after = resource.getrusage(resource.RUSAGE_SELF)
    sender.close()
    os.waitpid(pid, 0)
    return {
        "wall_us_in_send": inside / sends * 1e6,
        "sys_us_per_send": (after.ru_stime - before.ru_stime) / sends * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=20_000)
    parser.add_argument("--gap-ms", type=float, default=2.0)
    parser.add_argument("--size", type=int, default=1500, help="bytes per send")
    args = parser.parse_args()
    for gap in (args.gap_ms / 1000, 0.0):
        figures = measure(args.sends, gap, args.size)
        print(
            f"{args.size} B sends, {gap * 1000:g} ms apart: "
            f"{figures['wall_us_in_send']:.1f} µs inside send(), "
            f"{figures['sys_us_per_send']:.1f} µs of system CPU per send"
        )


if __name__ == "__main__":
    main()
