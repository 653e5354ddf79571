"""Jobsprint message contracts. No I/O here: models, envelope, codec, topics, upcasters."""

from jobsprint.events.codec import UndecodableMessage, decode, encode, make_encoded
from jobsprint.events.commands import (
    CancelExecution,
    Command,
    DeleteExecution,
    ExecuteWorkflow,
    RetryExecution,
    ReusedStep,
    TriggeredBy,
)
from jobsprint.events.deadletter import DeadLetter
from jobsprint.events.envelope import Envelope, make, utcnow
from jobsprint.events.events import (
    TERMINAL_STATUSES,
    ErrorInfo,
    Event,
    ExecutionCancelled,
    ExecutionDeleted,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionStarted,
    ExecutionSucceeded,
    LogLevel,
    LogRecorded,
    StepCompleted,
    StepFailed,
    StepStarted,
)
from jobsprint.events.registry import Payload, registered_types
from jobsprint.events.topics import DEFAULT_PARTITIONS, Topics
from jobsprint.events.upcasters import register_upcaster

__all__ = [
    "DEFAULT_PARTITIONS",
    "TERMINAL_STATUSES",
    "CancelExecution",
    "Command",
    "DeadLetter",
    "DeleteExecution",
    "Envelope",
    "ErrorInfo",
    "Event",
    "ExecuteWorkflow",
    "ExecutionCancelled",
    "ExecutionDeleted",
    "ExecutionFailed",
    "ExecutionRequested",
    "ExecutionStarted",
    "ExecutionSucceeded",
    "LogLevel",
    "LogRecorded",
    "Payload",
    "RetryExecution",
    "ReusedStep",
    "StepCompleted",
    "StepFailed",
    "StepStarted",
    "Topics",
    "TriggeredBy",
    "UndecodableMessage",
    "decode",
    "encode",
    "make",
    "make_encoded",
    "register_upcaster",
    "registered_types",
    "utcnow",
]
