"""One commands partition owned by this process: its executions, their runners, and the
transactional producer that commits their events together with the commands position (a
record in the executor-state topic, see state.POSITION_KEY)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from aiokafka import AIOKafkaProducer, ConsumerRecord

from jobsprint.events import (
    CancelExecution,
    DeadLetter,
    DeleteExecution,
    ExecuteWorkflow,
    ExecutionCancelled,
    ExecutionDeleted,
    ExecutionRequested,
    LogRecorded,
    RetryExecution,
    Topics,
    UndecodableMessage,
    decode,
)
from jobsprint.executor import telemetry
from jobsprint.executor.limits import RecordLimits, RecordTooLarge, record_size
from jobsprint.executor.outbox import Drained, Outbox
from jobsprint.executor.runner import ExecutionRunner
from jobsprint.executor.state import POSITION_KEY, ExecutionState, encode_position
from jobsprint.executor.steps import StepEnvironment
from jobsprint.executor.untrusted import clean_value
from jobsprint.runtime.kafka import dead_letter_record

log = logging.getLogger(__name__)


class PartitionWorker:
    def __init__(
        self,
        partition: int,
        topics: Topics,
        producer: AIOKafkaProducer,
        env: StepEnvironment,
        commit_interval_s: float,
        limits: RecordLimits | None = None,
    ) -> None:
        self.partition = partition
        self.topics = topics
        self.producer = producer
        self.env = env
        self.commit_interval_s = commit_interval_s
        self.limits = limits or RecordLimits()
        self.outbox = Outbox(self.limits)
        self.states: dict[str, ExecutionState] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._committer: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self.failed: BaseException | None = None
        # the commands offset committed with the last transaction (for lag reporting)
        self.committed_offset: int | None = None
        self.published_offset: int | None = None  # what the consumer group was told last

    @property
    def in_flight(self) -> int:
        return len(self.tasks)

    def start(self, restored: list[ExecutionState]) -> None:
        for state in restored:
            self._launch(state)
        self._committer = asyncio.create_task(self._commit_loop(), name=f"commit-p{self.partition}")

    # -- commands ---------------------------------------------------------------------------

    def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Apply one command. Synchronous: its effects are in the outbox when it returns."""
        try:
            envelope = decode(record.value)
        except UndecodableMessage as exc:
            self._dead_letter(record, exc.reason)
        else:
            command = envelope.data
            if isinstance(command, ExecuteWorkflow | RetryExecution):
                self._execute(
                    envelope.execution_id, envelope.workspace_id, command, envelope.correlation_id
                )
            elif isinstance(command, CancelExecution):
                self._cancel(envelope.execution_id, command)
            elif isinstance(command, DeleteExecution):
                self._delete(
                    envelope.execution_id, envelope.workspace_id, envelope.correlation_id, command
                )
            else:
                self._dead_letter(record, f"{envelope.type} is not a command")
        self.outbox.consumed(record.offset + 1)

    def _dead_letter(self, record: ConsumerRecord[bytes, bytes], error: str) -> None:
        log.warning("dead-lettered command at offset %d: %s", record.offset, error)
        telemetry.DEAD_LETTERS.labels("executor").inc()
        letter = dead_letter_record(record, "executor", error)
        if record_size(record.key, letter) > self.limits.event.bytes:
            letter = self._cut_dead_letter(record, error)
        self.outbox.dead_letter(record.key, letter)

    def _cut_dead_letter(self, record: ConsumerRecord[bytes, bytes], error: str) -> bytes:
        """A dead letter keeps the command base64-encoded, a third larger: one near the limit
        would not fit. Keep the head of it, and say so."""
        value = record.value or b""

        def letter(keep: int) -> bytes:
            return DeadLetter.of(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key,
                value=value[:keep],
                consumer="executor",
                error=f"{error[:2000]} (payload cut to its first {keep} of {len(value)} bytes "
                "to fit in one Kafka record)",
            ).encode()

        # what is left beside the rest (64 bytes spare: the note's number, the time's digits)
        room = self.limits.event.bytes - record_size(record.key, letter(0)) - 64
        return letter(max(0, room * 3 // 4))

    def _execute(
        self,
        execution_id: str,
        workspace_id: str,
        command: ExecuteWorkflow | RetryExecution,
        correlation_id: str,
    ) -> None:
        if execution_id in self.states:
            log.warning("duplicate execute for %s ignored", execution_id)
            return
        state = ExecutionState.from_command(command, execution_id, workspace_id, correlation_id)
        requested = ExecutionRequested(
            workflow_id=state.workflow_id,
            workflow_name=state.workflow_name,
            workflow_version=state.workflow_version,
            input=state.input,
            triggered_by=state.triggered_by,
            timeout_s=state.timeout_s,
            original_execution_id=state.original_execution_id,
            from_step=state.from_step,
        )
        try:
            self.outbox.emit(state, requested)
        except RecordTooLarge as exc:
            # The input cannot be recorded as it is: record it cut (and marked so), and fail
            # the execution rather than run what the history could not show.
            cut = requested.model_copy(update={"input": clean_value(state.input)})
            self.outbox.emit(state, cut)
            ExecutionRunner(state, self.outbox, self.env).fail_too_large(exc)
            return
        self._launch(state)

    def _too_large(self, state: ExecutionState, exc: RecordTooLarge) -> None:
        """The outbox found the state of a running execution too large to snapshot: end that
        execution (in the batch being drained) and stop its runner."""
        ExecutionRunner(state, self.outbox, self.env).fail_too_large(exc)
        task = self.tasks.get(state.execution_id)
        if task is not None:
            task.cancel()
        else:
            self.states.pop(state.execution_id, None)

    def _launch(self, state: ExecutionState) -> None:
        self.states[state.execution_id] = state
        runner = ExecutionRunner(state, self.outbox, self.env)
        task = asyncio.create_task(runner.run(), name=state.execution_id)
        self.tasks[state.execution_id] = task
        telemetry.IN_FLIGHT.inc()
        task.add_done_callback(functools.partial(self._finished, state.execution_id))

    def _finished(self, execution_id: str, task: asyncio.Task[None]) -> None:
        if self.tasks.pop(execution_id, None) is not None:
            telemetry.IN_FLIGHT.dec()
        state = self.states.get(execution_id)
        if state is not None and state.terminal:
            del self.states[execution_id]
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "execution runner crashed",
                exc_info=task.exception(),
                extra={"execution_id": execution_id},
            )
            self.failed = task.exception()

    def _cancel(self, execution_id: str, command: CancelExecution) -> None:
        state = self.states.get(execution_id)
        if state is None or state.terminal:
            log.info("cancel for %s: nothing running", execution_id)
            return
        step_id = None
        if state.step_index is not None and state.step_started_at is not None:
            step_id = state.workflow["steps"][state.step_index]["id"]
        started = state.started_at
        duration = None
        if started is not None:
            duration = max(0, int((command.requested_at - started).total_seconds() * 1000))
        self.outbox.emit(
            state, LogRecorded(level="warn", message="Execution cancelled", step_id=step_id)
        )
        self.outbox.emit(
            state, ExecutionCancelled(reason=command.reason, step_id=step_id, duration_ms=duration)
        )
        state.status = "cancelled"
        telemetry.EXECUTIONS_FINISHED.labels("cancelled").inc()
        task = self.tasks.get(execution_id)
        if task is not None:
            task.cancel()
        else:
            self.states.pop(execution_id, None)

    def _delete(
        self, execution_id: str, workspace_id: str, correlation_id: str, command: DeleteExecution
    ) -> None:
        state = self.states.get(execution_id)
        if state is not None and not state.terminal:
            log.warning("delete of running execution %s refused", execution_id)
            return
        self.outbox.emit_detached(
            {
                "execution_id": execution_id,
                "workspace_id": workspace_id,
                "correlation_id": correlation_id,
                "seq": command.last_seq + 1,
            },
            ExecutionDeleted(),
        )

    # -- committing -------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        try:
            while True:
                await self.outbox.wakeup.wait()
                await asyncio.sleep(self.commit_interval_s)
                await self.flush()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a failed commit leaves memory ahead of Kafka: stop
            log.exception("commit failed on partition %d", self.partition)
            self.failed = exc

    async def flush(self) -> None:
        async with self._flush_lock:
            if self.failed is not None:
                # a lost batch must never be followed by later events: stop instead
                raise RuntimeError(f"partition {self.partition} failed earlier")
            drained = self.outbox.drain(self._too_large)
            if drained.empty:
                return
            began = time.monotonic()
            try:
                await self._commit(drained)
            except BaseException as exc:
                self.failed = exc
                raise
            telemetry.TRANSACTION_SECONDS.observe(time.monotonic() - began)

    async def _commit(self, drained: Drained) -> None:
        producer, p = self.producer, self.partition
        async with producer.transaction():
            for key, value in drained.events:
                await producer.send(self.topics.events, value, key=key, partition=p)
            for key, state_value in drained.states:
                await producer.send(self.topics.executor_state, state_value, key=key, partition=p)
            for dl_key, letter in drained.dead_letters:
                await producer.send(self.topics.dead_letter, letter, key=dl_key)
            if drained.command_offset is not None:
                await producer.send(
                    self.topics.executor_state,
                    encode_position(drained.command_offset),
                    key=POSITION_KEY,
                    partition=p,
                )
        if drained.command_offset is not None:
            self.committed_offset = drained.command_offset

    # -- stopping ---------------------------------------------------------------------------

    async def drain_running(self, grace_s: float) -> None:
        """Let running executions finish for up to `grace_s` (graceful shutdown)."""
        pending = list(self.tasks.values())
        if pending and grace_s > 0:
            await asyncio.wait(pending, timeout=grace_s)

    async def stop(self) -> None:
        """Stop quietly: runners halt without events (the next owner resumes them), then
        what was emitted so far is committed and the producer closes."""
        for task in list(self.tasks.values()):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=5)
        if self._committer is not None:
            # Taking the flush lock first: cancelling the committer inside an open
            # transaction would abort that batch and let later events commit without it.
            async with self._flush_lock:
                self._committer.cancel()
            try:
                await self._committer
            except asyncio.CancelledError:
                pass
        try:
            if self.failed is None:
                await self.flush()
        finally:
            await self.producer.stop()
