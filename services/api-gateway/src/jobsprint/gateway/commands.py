"""Producing commands to Kafka. The producer connects in the background so the gateway
starts (and serves reads) while Kafka is down; writes answer 503 until it is back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaProducer

from jobsprint.events import Envelope, Topics, encode
from jobsprint.gateway.errors import Unavailable
from jobsprint.runtime.kafka import ensure_topics, make_producer

log = logging.getLogger(__name__)


class CommandBus:
    """Sends command envelopes to the commands topic, keyed by execution id, and waits for
    the broker's acknowledgement (idempotent producer, acks=all)."""

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        *,
        partitions: int | None = None,
        client_id: str = "jobsprint-gateway",
        retry_every_s: float = 2.0,
        linger_ms: int = 1,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.partitions = partitions
        self.client_id = client_id
        self.retry_every_s = retry_every_s
        self.linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._last_error = "not connected yet"

    async def start(self) -> None:
        self._connecting = asyncio.create_task(self._connect(), name="kafka-producer-connect")

    async def _connect(self) -> None:
        while True:
            if self.partitions is not None:
                try:  # whichever service starts first creates the topics
                    await ensure_topics(self.bootstrap, self.topics, self.partitions)
                except Exception as exc:
                    log.warning("could not ensure the topics exist: %s", exc)
            producer = make_producer(
                self.bootstrap, client_id=self.client_id, linger_ms=self.linger_ms
            )
            try:
                await producer.start()
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            except Exception as exc:  # the broker is down or unreachable: try again
                self._last_error = f"Kafka unreachable at {self.bootstrap}: {exc}"
                log.warning("%s; retrying in %.0f s", self._last_error, self.retry_every_s)
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(self.retry_every_s)
                continue
            self._producer = producer
            log.info("Kafka producer connected to %s", self.bootstrap)
            return

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def unready_reason(self, timeout_s: float = 3.0) -> str | None:
        """None when the broker answers a metadata request, else why not."""
        if self._producer is None:
            return self._last_error
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout_s)
        except Exception as exc:
            return f"Kafka does not answer: {exc or type(exc).__name__}"
        return None

    async def send(self, envelope: Envelope[Any]) -> None:
        """Produce one command and wait for its acknowledgement; Unavailable (503) when
        Kafka cannot take it (the producer's own timeout bounds the wait)."""
        producer = self._producer
        if producer is None:
            raise Unavailable("the command queue (Kafka) is unavailable; retry later")
        try:
            await producer.send_and_wait(self.topics.commands, encode(envelope), key=envelope.key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("producing %s failed: %s", envelope.type, exc)
            self._replace(producer, exc)
            raise Unavailable("the command queue (Kafka) is unavailable; retry later") from exc

    def _replace(self, broken: AIOKafkaProducer, exc: Exception) -> None:
        """A failed send can leave the idempotent producer unusable for good (after a broker
        restart its sequence numbers no longer match): start a fresh one in the background."""
        stale: AIOKafkaProducer = broken  # (the identity check below narrows `broken`)
        if self._producer is not broken:
            return  # another request already replaced it
        self._producer = None
        self._last_error = f"Kafka producer failed: {exc or type(exc).__name__}"

        async def reconnect() -> None:
            with contextlib.suppress(Exception):
                await stale.stop()
            await self._connect()

        self._connecting = asyncio.create_task(reconnect(), name="kafka-producer-reconnect")

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connecting
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None
