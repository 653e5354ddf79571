"""Realistic event streams for bulk data (pure: no I/O).

Each execution is the event stream the executor appends for the two-step `transform`
workflow the load generator runs (13 events: requested, started, a log, for each step
started + log + completed + log, a final log, then succeeded), or the same stream ending in
a failed second step, a cancellation, a run still in flight, or a request not started yet.

The metrics benchmark's bulk (bench/metrics_bulk.py) also uses one-step workflows (the
same stream without the second step), given durations, webhook triggers, deletions (the
ExecutionDeleted the executor appends after a finished execution's last event) and may leave
the LogRecorded events out: the events that remain are unchanged, seq numbers included (a
gap where each log line was), as a consumer that skips log lines sees the full stream.

Events are written straight to JSON bytes with string templates (pydantic per event would
take minutes for 10M events); `jobsprint.events.decode` reads every one of them, which the
unit tests check for every shape.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

# the time-ordered id format of jobsprint.events.ids (checked by the unit tests)
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_DAY_MS = 86_400_000

# share of executions per final status (the rest succeed)
STATUS_MIX = (("error", 0.08), ("cancelled", 0.02), ("running", 0.005), ("pending", 0.005))
EVENTS_PER_SUCCESS = 13


def encode_base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def make_id(prefix: str, millis: int, rng: random.Random) -> str:
    """`<prefix>_` + 10 chars of ms time + 16 random chars, as `jobsprint.events.ids`."""
    return f"{prefix}_{encode_base32(millis, 10)}{encode_base32(rng.getrandbits(80), 16)}"


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


class _Clock:
    """Epoch ms -> `YYYY-MM-DDTHH:MM:SS.mmmZ`, with the date part cached per day."""

    def __init__(self) -> None:
        self._days: dict[int, str] = {}

    def iso(self, millis: int) -> str:
        day, rest = divmod(millis, _DAY_MS)
        prefix = self._days.get(day)
        if prefix is None:
            prefix = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%dT")
            self._days[day] = prefix
        secs, ms = divmod(rest, 1000)
        hh, rem = divmod(secs, 3600)
        mm, ss = divmod(rem, 60)
        return f"{prefix}{hh:02d}:{mm:02d}:{ss:02d}.{ms:03d}Z"


@dataclass(frozen=True)
class Workflow:
    id: str
    name: str
    weight: float
    steps: int = 2  # runs the first `steps` of STEPS (1 or 2)


def make_workflows(count: int, rng: random.Random, created_ms: int) -> list[Workflow]:
    """`count` workflows with Zipf-like popularity (the first is the busiest)."""
    return [
        Workflow(make_id("wf", created_ms + i, rng), f"Bench workflow {i}", 1.0 / (i + 1))
        for i in range(count)
    ]


STEPS = (
    ("shape", "Shape input", '{"output":{"n":"{{ input.n }}","email":"{{ input.email }}"}}'),
    ("double", "Build reply", '{"output":{"d":"{{ steps.shape.output.n * 2 }}"}}'),
)


class StreamMaker:
    """Builds the encoded events of one execution at a time."""

    def __init__(self, workspace_id: str, seed: int = 7) -> None:
        self.workspace_id = workspace_id
        self.rng = random.Random(seed)
        self.clock = _Clock()

    def _status(self) -> str:
        x = self.rng.random()
        for status, share in STATUS_MIX:
            if x < share:
                return status
            x -= share
        return "success"

    def execution(
        self,
        workflow: Workflow,
        created_ms: int,
        status: str | None = None,
        *,
        recent: bool = True,
        workspace_id: str | None = None,
        triggered_by: str = "api",
        duration_ms: int | None = None,
        deleted_after_ms: int | None = None,
        logs: bool = True,
    ) -> tuple[str, list[bytes]]:
        """(execution id, its events in seq order) for an execution of `workflow` requested
        at `created_ms`; the final status is drawn from STATUS_MIX unless given. Only
        `recent` executions may still be running or pending.

        `duration_ms`: from start to the end (success, error, cancellation), split over the
        steps (default: each step takes a few ms). `deleted_after_ms`: a finished execution
        is deleted that long after it ended (ExecutionDeleted, seq one past its last event).
        `logs=False` leaves the LogRecorded events out, keeping every other event's seq."""
        rng = self.rng
        status = status or self._status()
        if not recent and status in ("running", "pending"):
            status = "success"
        eid = make_id("exec", created_ms, rng)
        head = (
            f'"execution_id":"{eid}","workspace_id":"{workspace_id or self.workspace_id}",'
            f'"correlation_id":"{eid}","causation_id":null'
        )
        iso = self.clock.iso
        events: list[bytes] = []
        seq = 0
        now = created_ms

        def add(type_: str, data: str, at: int) -> None:
            nonlocal seq
            seq += 1
            if not logs and type_ == "log_recorded":
                return
            events.append(
                (
                    f'{{"id":"{_uuid(rng)}","type":"execution.{type_}.v1",{head},'
                    f'"seq":{seq},"time":"{iso(at)}","data":{data}}}'
                ).encode()
            )

        def ended(at: int) -> tuple[str, list[bytes]]:
            if deleted_after_ms is not None:
                add("deleted", "{}", at + deleted_after_ms)
            return eid, events

        steps = STEPS[: workflow.steps]
        took_ms = _split(duration_ms, len(steps), rng) if duration_ms is not None else None

        n = rng.randrange(1, 10_000)
        email = f"user{rng.randrange(100_000)}@example.com"
        input_doc = orjson.dumps({"n": n, "email": email, "orderId": f"ord-{n:06d}"}).decode()
        add(
            "requested",
            f'{{"workflow_id":"{workflow.id}","workflow_name":"{workflow.name}",'
            f'"workflow_version":1,"input":{input_doc},"triggered_by":"{triggered_by}",'
            f'"timeout_s":300.0,"original_execution_id":null,"from_step":null}}',
            now,
        )
        if status == "pending":
            return eid, events
        now += rng.randrange(1, 20)
        started = now
        add("started", "{}", now)
        add("log_recorded", _log("info", "Starting workflow execution", None, "null"), now)
        outputs = (f'{{"n":{n},"email":"{email}"}}', f'{{"d":{2 * n}}}')
        for position, (step_id, step_name, params) in enumerate(steps):
            last = position == len(steps) - 1
            add(
                "step_started",
                f'{{"step_id":"{step_id}","step_name":"{step_name}","step_type":"transform",'
                f'"position":{position},"attempt":1,"input":{params}}}',
                now,
            )
            add(
                "log_recorded",
                _log("info", f"Step {step_id} ({step_name}) started", step_id, "null"),
                now,
            )
            if status == "running" and last:
                return eid, events
            if status == "cancelled" and last:
                now += took_ms[position] if took_ms else rng.randrange(100, 5_000)
                add("log_recorded", _log("warn", "Execution cancelled", step_id, "null"), now)
                add(
                    "cancelled",
                    f'{{"reason":"cancelled by request","step_id":"{step_id}",'
                    f'"duration_ms":{now - started}}}',
                    now,
                )
                return ended(now)
            # ms; given, or median ~5 ms with a long tail
            took = took_ms[position] if took_ms else int(rng.lognormvariate(1.5, 1.2)) + 1
            now += took
            if status == "error" and last:
                error = (
                    f'{{"code":"template_error","message":"division by zero",'
                    f'"step_id":"{step_id}"}}'
                )
                add(
                    "step_failed",
                    f'{{"step_id":"{step_id}","attempt":1,"error":{error},'
                    f'"will_retry":false,"duration_ms":{took}}}',
                    now,
                )
                add(
                    "log_recorded",
                    _log("error", f"Step {step_id} failed: division by zero", step_id, "null"),
                    now,
                )
                add(
                    "log_recorded",
                    _log("error", "Workflow execution failed: division by zero", step_id, "null"),
                    now,
                )
                add("failed", f'{{"error":{error},"duration_ms":{now - started}}}', now)
                return ended(now)
            add(
                "step_completed",
                f'{{"step_id":"{step_id}","attempt":1,"output":{outputs[position]},'
                f'"duration_ms":{took},"reused_from":null}}',
                now,
            )
            add(
                "log_recorded",
                _log("info", f"Step {step_id} completed", step_id, f'{{"durationMs":{took}}}'),
                now,
            )
        add(
            "log_recorded",
            _log("info", "Workflow execution completed successfully", None, "null"),
            now,
        )
        output = outputs[len(steps) - 1]
        add("succeeded", f'{{"output":{output},"duration_ms":{now - started}}}', now)
        return ended(now)


def _split(total: int, parts: int, rng: random.Random) -> list[int]:
    """`total` ms as `parts` step durations (whole ms, adding up to `total`)."""
    cuts = sorted(rng.randrange(total + 1) for _ in range(parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


def _log(level: str, message: str, step_id: str | None, data: str) -> str:
    step = "null" if step_id is None else f'"{step_id}"'
    return f'{{"level":"{level}","message":"{message}","step_id":{step},"data":{data}}}'


def creation_times(count: int, end_ms: int, days: float, rng: random.Random) -> list[int]:
    """`count` request times spread over the `days` before `end_ms`, ascending, with a
    daily rhythm (busier during the working day) like real traffic."""
    span = int(days * _DAY_MS)
    times: list[int] = []
    while len(times) < count:
        t = end_ms - span + rng.randrange(span)
        hour = (t // 3_600_000) % 24
        if rng.random() < (1.0 if 7 <= hour < 19 else 0.4):
            times.append(t)
    times.sort()
    return times


class WorkflowPicker:
    """Draws workflows by their weight."""

    def __init__(self, workflows: list[Workflow], rng: random.Random) -> None:
        self.workflows = workflows
        self.rng = rng
        total = 0.0
        self.cumulative = []
        for w in workflows:
            total += w.weight
            self.cumulative.append(total)

    def __call__(self) -> Workflow:
        return self.rng.choices(self.workflows, cum_weights=self.cumulative)[0]
