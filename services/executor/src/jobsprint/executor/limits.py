"""How large one Kafka record the executor writes may be, and the error when one would be
larger. Kafka refuses a record over its topic's `max.message.bytes` (1 MiB by default), and
one refused record aborts the whole transaction of a partition, every other execution's
events with it. So every record is measured before it joins a transaction, and only the
execution that would not fit fails, with error code `too_large`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
"""What a topic accepts when nobody set `max.message.bytes` (the broker's default)."""
RECORD_OVERHEAD = 128
"""Bytes a record takes beyond its key and value in a batch of its own: the batch header
(61), the record header (at most 21) and the length varints. Rounded up."""
TOO_LARGE = "too_large"
EVENT_SETTING = "JOBSPRINT_EXECUTOR_MAX_EVENT_BYTES"
STATE_SETTING = "JOBSPRINT_EXECUTOR_MAX_STATE_BYTES"


def record_size(key: bytes | None, value: bytes | None) -> int:
    """Bytes Kafka counts for one record: key, value and framing."""
    return len(key or b"") + len(value or b"") + RECORD_OVERHEAD


@dataclass(frozen=True)
class Limit:
    bytes: int
    source: str  # what set it: a setting, or a topic's max.message.bytes


def lowest(
    configured: Limit, topic_limits: Mapping[str, int | None], topics: Iterable[str]
) -> Limit:
    """The setting, lowered to what each of `topics` accepts. A topic whose limit could not be
    read counts as Kafka's default: a limit set too high would stop a partition."""
    found = configured
    for topic in topics:
        accepted = topic_limits.get(topic) or KAFKA_DEFAULT_MAX_MESSAGE_BYTES
        if accepted < found.bytes:
            found = Limit(accepted, f"max.message.bytes of topic {topic}")
    return found


@dataclass(frozen=True)
class RecordLimits:
    event: Limit = Limit(1_048_576, EVENT_SETTING)
    """Every event and dead letter."""
    state: Limit = Limit(1_048_576, STATE_SETTING)
    """The snapshot of one running execution in the executor-state topic."""

    @property
    def max_request_size(self) -> int:
        """The producer's own cap: at least every record these limits let through."""
        return max(self.event.bytes, self.state.bytes)


class RecordTooLarge(Exception):
    """A record the executor was about to write would not fit in Kafka; it was not written."""

    code = TOO_LARGE

    def __init__(self, what: str, size: int, limit: Limit, detail: str = "") -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"{what} would be {size:,} bytes, over the limit of {limit.bytes:,} bytes for one "
            f"Kafka record ({limit.source}){detail}"
        )


def event_too_large(event_type: str, size: int, limit: Limit) -> RecordTooLarge:
    return RecordTooLarge(f"the {event_type} event", size, limit)


def state_too_large(size: int, limit: Limit, parts: Mapping[str, int]) -> RecordTooLarge:
    largest = sorted(parts.items(), key=lambda item: item[1], reverse=True)[:3]
    detail = ", ".join(f"{name} {size:,} bytes" for name, size in largest)
    return RecordTooLarge(
        "the execution's state (its input, workflow and the output of every step so far, "
        "kept for templates)",
        size,
        limit,
        f"; largest parts: {detail}" if detail else "",
    )


def max_message_bytes(described: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """`max.message.bytes` of each topic in DescribeConfigs answers (as `to_object()` gives
    them); topics answered with an error are left out."""
    found: dict[str, int] = {}
    for answer in described:
        for resource in answer.get("resources", []):
            if resource.get("error_code"):
                continue
            for entry in resource.get("config_entries", []):
                if entry.get("config_names") == "max.message.bytes":
                    try:
                        found[resource["resource_name"]] = int(entry["config_value"])
                    except (TypeError, ValueError):
                        pass
    return found
