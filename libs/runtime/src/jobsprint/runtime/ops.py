"""A tiny HTTP endpoint for the background services (executor, projector): `/healthz`
(alive), `/readyz` (dependencies answer) and Prometheus `/metrics`. No framework needed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[str | None]]  # None when ready, else the reason


async def serve_ops(host: str, port: int, ready: ReadinessCheck) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) > 1 else "/"
            if path == "/healthz":
                status, body, ctype = 200, b'{"status":"ok"}', "application/json"
            elif path == "/readyz":
                reason = await ready()
                if reason is None:
                    status, body, ctype = 200, b'{"status":"ready"}', "application/json"
                else:
                    status, ctype = 503, "application/json"
                    body = b'{"status":"unready","reason":' + _json_str(reason) + b"}"
            elif path == "/metrics":
                status, body, ctype = 200, generate_latest(), CONTENT_TYPE_LATEST
            else:
                status, body, ctype = 404, b'{"status":"not found"}', "application/json"
            reason_phrase = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason_phrase}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except Exception:  # a broken probe connection must never hurt the service
            log.debug("ops request failed", exc_info=True)
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)


def _json_str(text: str) -> bytes:
    import orjson

    return orjson.dumps(text)
