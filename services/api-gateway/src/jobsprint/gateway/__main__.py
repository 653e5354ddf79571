"""`python -m jobsprint.gateway` / `jobsprint-gateway`: serve the API with uvicorn."""

from __future__ import annotations

import uvicorn

from jobsprint.gateway.app import create_app
from jobsprint.gateway.settings import GatewaySettings
from jobsprint.runtime.heap import settle_heap
from jobsprint.runtime.logs import setup_logging
from jobsprint.runtime.settings import load_settings


def main() -> None:
    settings = load_settings(GatewaySettings)
    setup_logging("api-gateway", settings.log_level)
    app = create_app(settings)
    settle_heap()  # the app, its routes and schemas live as long as the process
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop",
        http="httptools",
        log_config=None,  # keep the JSON logging set up above
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
