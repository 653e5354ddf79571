"""What one commands partition has to commit: events, state snapshots, dead letters and the
commands offset they account for. One Kafka transaction takes all of it, or none, so nothing
may enter it that Kafka would refuse: every record is measured against RecordLimits first."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobsprint.events import Payload, encode, make, make_encoded
from jobsprint.executor.limits import (
    RecordLimits,
    RecordTooLarge,
    event_too_large,
    record_size,
    state_too_large,
)
from jobsprint.executor.state import ExecutionState

Record = tuple[str, bytes, bytes | None]  # topic, key, value (None = tombstone)
TooLargeHandler = Callable[[ExecutionState, RecordTooLarge], None]


@dataclass
class Drained:
    events: list[tuple[bytes, bytes]]
    states: list[tuple[bytes, bytes | None]]
    dead_letters: list[tuple[bytes | None, bytes]]
    command_offset: int | None

    @property
    def empty(self) -> bool:
        return not (self.events or self.states or self.dead_letters) and self.command_offset is None


@dataclass
class Outbox:
    limits: RecordLimits = field(default_factory=RecordLimits)
    events: list[tuple[bytes, bytes]] = field(default_factory=list)
    dirty: dict[str, ExecutionState] = field(default_factory=dict)
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    command_offset: int | None = None
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def emit(self, state: ExecutionState, *payloads: Payload, at: datetime | None = None) -> None:
        """Append the execution's next events (seq + 1, …) and mark its state for a snapshot.
        All or none: RecordTooLarge, with nothing appended, when one would not fit.

        The envelopes are not validated again (make_encoded): every field of them is the
        executor's own, and the payloads were validated when they were made."""
        values = make_encoded(
            payloads,
            execution_id=state.execution_id,
            workspace_id=state.workspace_id,
            correlation_id=state.correlation_id,
            first_seq=state.seq + 1,
            time=at,
        )
        key = state.execution_id.encode()
        records = [
            self._measured(payload.TYPE, key, value)
            for payload, value in zip(payloads, values, strict=True)
        ]
        state.seq += len(records)
        self.events.extend(records)
        self.dirty[state.execution_id] = state
        self.wakeup.set()

    def emit_detached(self, envelope_args: dict[str, Any], payload: Payload) -> None:
        """An event for an execution this worker holds no state of (a delete). Validated as
        it is made: its seq comes from the command."""
        envelope = make(payload, **envelope_args)
        self.events.append(self._measured(envelope.type, envelope.key, encode(envelope)))
        self.wakeup.set()

    def _measured(self, event_type: str, key: bytes, value: bytes) -> tuple[bytes, bytes]:
        size = record_size(key, value)
        if size > self.limits.event.bytes:
            raise event_too_large(event_type, size, self.limits.event)
        return key, value

    def dead_letter(self, key: bytes | None, record: bytes) -> None:
        self.dead_letters.append((key, record))
        self.wakeup.set()

    def consumed(self, next_offset: int) -> None:
        self.command_offset = next_offset
        self.wakeup.set()

    def drain(self, too_large: TooLargeHandler) -> Drained:
        """Take everything for one transaction. A running execution whose snapshot would not
        fit in one record goes to `too_large`, which must end it: its failure events join
        this batch and its snapshot becomes a tombstone, so the partition goes on."""
        states: list[tuple[bytes, bytes | None]] = []
        for state in list(self.dirty.values()):
            key = state.execution_id.encode()
            if not state.terminal:
                value = state.encode()
                size = record_size(key, value)
                if size <= self.limits.state.bytes:
                    states.append((key, value))
                    state.persisted = True
                    continue
                too_large(state, state_too_large(size, self.limits.state, state.part_sizes()))
                if not state.terminal:
                    raise RuntimeError(f"{state.execution_id} too large, yet not ended")
            if state.persisted:
                states.append((key, None))
        drained = Drained(self.events, states, self.dead_letters, self.command_offset)
        self.events, self.dirty, self.dead_letters = [], {}, []
        self.command_offset = None
        self.wakeup.clear()
        return drained
