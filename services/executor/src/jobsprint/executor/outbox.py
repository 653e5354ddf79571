"""What one commands partition has to commit: events, state snapshots, dead letters and the
commands offset they account for. One Kafka transaction takes all of it, or none."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobsprint.events import Payload, encode, make
from jobsprint.executor.state import ExecutionState

Record = tuple[str, bytes, bytes | None]  # topic, key, value (None = tombstone)


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
    events: list[tuple[bytes, bytes]] = field(default_factory=list)
    dirty: dict[str, ExecutionState] = field(default_factory=dict)
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    command_offset: int | None = None
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def emit(self, state: ExecutionState, payload: Payload, at: datetime | None = None) -> None:
        """Append the execution's next event (seq + 1) and mark its state for a snapshot."""
        state.seq += 1
        envelope = make(
            payload,
            execution_id=state.execution_id,
            workspace_id=state.workspace_id,
            correlation_id=state.correlation_id,
            seq=state.seq,
            time=at,
        )
        self.events.append((envelope.key, encode(envelope)))
        self.dirty[state.execution_id] = state
        self.wakeup.set()

    def emit_detached(self, envelope_args: dict[str, Any], payload: Payload) -> None:
        """An event for an execution this worker holds no state of (a delete)."""
        envelope = make(payload, **envelope_args)
        self.events.append((envelope.key, encode(envelope)))
        self.wakeup.set()

    def dead_letter(self, key: bytes | None, record: bytes) -> None:
        self.dead_letters.append((key, record))
        self.wakeup.set()

    def consumed(self, next_offset: int) -> None:
        self.command_offset = next_offset
        self.wakeup.set()

    def drain(self) -> Drained:
        states: list[tuple[bytes, bytes | None]] = []
        for state in self.dirty.values():
            key = state.execution_id.encode()
            if state.terminal:
                if state.persisted:
                    states.append((key, None))
            else:
                states.append((key, state.encode()))
                state.persisted = True
        drained = Drained(self.events, states, self.dead_letters, self.command_offset)
        self.events, self.dirty, self.dead_letters = [], {}, []
        self.command_offset = None
        self.wakeup.clear()
        return drained
