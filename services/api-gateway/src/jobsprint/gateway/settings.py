"""Gateway settings, read from `JOBSPRINT_*` environment variables."""

from __future__ import annotations

from pydantic import Field

from jobsprint.runtime.settings import CommonSettings


class GatewaySettings(CommonSettings):
    http_host: str = "127.0.0.1"
    """Address the HTTP server binds to."""
    http_port: int = Field(8080, ge=1, le=65535)
    """Port the HTTP server listens on."""
    public_url: str = "http://127.0.0.1:8080"
    """Base URL clients reach the gateway at; used in `url` and `hookUrl` fields."""
    max_wait_s: float = Field(60.0, ge=0, le=3600)
    """Upper bound (seconds) of `options.waitForCompletion` waits, whatever `timeout` says."""
    max_body_bytes: int = Field(1_048_576, ge=1)
    """Largest accepted request body; larger ones answer 413 before being parsed."""
    token_cache_seconds: float = Field(5.0, ge=0)
    """How long a bearer-token lookup is cached in process (revocation delay); 0 disables."""
    rate_limit_per_s: float = Field(1000.0, gt=0)
    """Requests per second each token (and each webhook) may sustain."""
    rate_limit_burst: int = Field(2000, ge=1)
    """Requests a token may send at once above the sustained rate."""
    metrics_url: str = "http://127.0.0.1:8090"
    """Base URL of the metrics service that `GET /v1/executions/metrics` proxies to."""
    pg_pool_max: int = Field(20, ge=1)
    """Largest number of Postgres connections in the gateway's pool."""
    command_linger_ms: int = Field(1, ge=0, le=1000)
    """How long the command producer waits to batch commands into one Kafka request: fewer
    requests for the broker under load, at most this much added to an execute's answer."""
    request_upkeep_interval_s: float = Field(1.0, gt=0)
    """How often accepted requests are matched with the read model (an accepted execution
    is listed as `pending` until the projector has it): matched ones are removed, or kept
    until the idempotency window ends when they carry a key."""

    @property
    def public_base(self) -> str:
        return self.public_url.rstrip("/")
