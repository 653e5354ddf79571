"""What encoding and decoding one event costs: the codec of jobsprint.events (encode, decode)
against the first one (kept in tests/unit/events/test_codec_fast_path.py: orjson over
model_dump, and orjson.loads then two validation passes), on the 13 events the executor
appends for a two-step transform workflow (requested, started, a log, for each step
started + log + completed + log, a final log, succeeded), made with the real payload
classes.

    uv run --all-packages python bench/codec_bench.py
    uv run --all-packages python bench/codec_bench.py --executions 500 --rounds 9 --big

Two one-pass variants that were measured and not taken are timed alongside, for reference:
pydantic-core's own JSON writer (model_dump_json: the same bytes, but it writes integers
beyond 64 bits that orjson refuses, and is slower on long strings) and validate_json over
a union of per-type envelopes (it takes NaN, Infinity, 1e400 and integers beyond 64 bits
that orjson refuses or reads as floats). --big adds events carrying a large step output
(300 records; 50 KB of text).

The make+encode rows time what the executor does per event it writes: make() then encode()
("old"), against make_encoded(), which writes the same bytes without building an Envelope.

Times are CPU time of this process (time.process_time, so other load on the machine
counts less), the best of --rounds rounds, the variants measured alternately; µs per event.
All of them run on the current Envelope model: changes to it (its time validator and
serializer) show in every column.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import Field, TypeAdapter, create_model

from jobsprint.events import (
    Envelope,
    ExecutionRequested,
    ExecutionStarted,
    ExecutionSucceeded,
    LogRecorded,
    Payload,
    StepCompleted,
    StepStarted,
    decode,
    encode,
    make,
    make_encoded,
    utcnow,
)
from jobsprint.events.ids import new_execution_id, new_id, new_workflow_id
from jobsprint.events.registry import registered_types

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.unit.events.test_codec_fast_path import (  # noqa: E402
    reference_decode,
    reference_encode,
)

# --- the first codec: the reference the unit tests hold the current one to ----------------

_ANY_ENVELOPE = Envelope[Payload]
old_encode = reference_encode
old_decode = reference_decode


# --- one-pass variants measured for reference (not used) -----------------------------------


def one_pass_json_encode(envelope: Envelope[Any]) -> bytes:
    return envelope.__pydantic_serializer__.to_json(envelope)


def _typed_envelope(cls: type[Payload]) -> Any:
    """Envelope[cls] with `type` as the literal that tells the union which one it is."""
    tag: Any = Literal[cls.TYPE]
    return create_model(
        f"Typed{cls.__name__}Envelope",
        __base__=Envelope[cls],  # type: ignore[valid-type]
        type=(tag, ...),
    )


_TYPED: Any = Union[tuple(_typed_envelope(cls) for cls in registered_types().values())]  # noqa: UP007
_UNION: TypeAdapter[Any] = TypeAdapter(Annotated[_TYPED, Field(discriminator="type")])


def one_pass_json_decode(raw: bytes) -> Envelope[Payload]:
    envelope = _UNION.validate_json(raw)
    object.__setattr__(envelope, "__class__", _ANY_ENVELOPE)
    return envelope  # type: ignore[no-any-return]


# --- the events of one execution -------------------------------------------------------------

STEPS = (
    ("shape", "Shape input", {"output": {"n": "{{ input.n }}", "email": "{{ input.email }}"}}),
    ("double", "Build reply", {"output": {"d": "{{ steps.shape.output.n * 2 }}"}}),
)


def execution_events(workspace_id: str, n: int) -> list[Envelope[Any]]:
    """The 13 events of one successful run of the two-step workflow, as the executor emits
    them (see jobsprint.executor.runner)."""
    execution_id = new_execution_id()
    email = f"user{n}@example.com"
    outputs = ({"n": n, "email": email}, {"d": 2 * n})
    payloads: list[Payload] = [
        ExecutionRequested(
            workflow_id=new_workflow_id(),
            workflow_name="Email Auto-Responder",
            workflow_version=3,
            input={"n": n, "email": email, "orderId": f"ord-{n:06d}"},
            triggered_by="api",
        ),
        ExecutionStarted(),
        LogRecorded(message="Starting workflow execution"),
    ]
    for position, ((step_id, step_name, params), output) in enumerate(
        zip(STEPS, outputs, strict=True)
    ):
        took = 3 + position
        payloads += [
            StepStarted(
                step_id=step_id,
                step_name=step_name,
                step_type="transform",
                position=position,
                input=params,
            ),
            LogRecorded(message=f"Step {step_id} ({step_name}) started", step_id=step_id),
            StepCompleted(step_id=step_id, output=output, duration_ms=took),
            LogRecorded(
                message=f"Step {step_id} completed", step_id=step_id, data={"durationMs": took}
            ),
        ]
    payloads += [
        LogRecorded(message="Workflow execution completed successfully"),
        ExecutionSucceeded(output=outputs[-1], duration_ms=9),
    ]
    start = utcnow()
    return [
        make(
            payload,
            execution_id=execution_id,
            workspace_id=workspace_id,
            correlation_id=execution_id,
            seq=seq,
            time=start + timedelta(milliseconds=seq),
        )
        for seq, payload in enumerate(payloads, start=1)
    ]


def big_events(workspace_id: str, count: int) -> dict[str, list[Envelope[Any]]]:
    """Events whose step output is large: many small records, or one long text."""
    records = [
        {"id": i, "name": f"item {i}", "price": i * 0.37, "tags": ["a", "b"], "meta": None}
        for i in range(300)
    ]
    text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 880  # 50 KB
    shapes = {"300 records": records, "50 KB text": {"body": text}}
    return {
        name: [
            make(
                StepCompleted(step_id="fetch", output=output, duration_ms=120),
                execution_id=new_execution_id(),
                workspace_id=workspace_id,
                correlation_id="c",
                seq=5,
            )
            for _ in range(count)
        ]
        for name, output in shapes.items()
    }


# --- measuring -----------------------------------------------------------------------------------

ENCODERS: dict[str, Callable[[Any], Any]] = {
    "old": old_encode,
    "new": encode,
    "one-pass JSON (not used)": one_pass_json_encode,
}


def make_then_encode(envelope: Envelope[Any]) -> bytes:
    """What the executor did per event before make_encoded: build (validate) the envelope of
    its payload, then encode it."""
    return encode(
        make(
            envelope.data,
            execution_id=envelope.execution_id,
            workspace_id=envelope.workspace_id,
            correlation_id=envelope.correlation_id,
            seq=envelope.seq,
            causation_id=envelope.causation_id,
            time=envelope.time,
        )
    )


def made_encoded(envelope: Envelope[Any]) -> bytes:
    """The same with make_encoded, one event a call (the executor passes one to three)."""
    return make_encoded(
        [envelope.data],
        execution_id=envelope.execution_id,
        workspace_id=envelope.workspace_id,
        correlation_id=envelope.correlation_id,
        first_seq=envelope.seq,
        causation_id=envelope.causation_id,
        time=envelope.time,
    )[0]


MAKERS: dict[str, Callable[[Any], Any]] = {"old": make_then_encode, "make_encoded": made_encoded}
DECODERS: dict[str, Callable[[Any], Any]] = {
    "old": old_decode,
    "new": decode,
    "validate_json (not used)": one_pass_json_decode,
}


def best_us_per_item(
    codecs: dict[str, Callable[[Any], Any]], items: Sequence[Any], rounds: int
) -> dict[str, float]:
    best = dict.fromkeys(codecs, float("inf"))
    for _ in range(rounds):
        for name, run in codecs.items():
            started = time.process_time()
            for item in items:
                run(item)
            best[name] = min(best[name], time.process_time() - started)
    return {name: seconds / len(items) * 1e6 for name, seconds in best.items()}


def check_same_results(envelopes: Sequence[Envelope[Any]]) -> None:
    for envelope in envelopes:
        raw = old_encode(envelope)
        for name, encoder in ENCODERS.items():
            if encoder(envelope) != raw:
                raise SystemExit(f"{name} encode differs from the first one for {envelope.type}")
        made = made_encoded(envelope)
        same_id = envelope.model_copy(update={"id": uuid.UUID(orjson.loads(made)["id"])})
        if made != old_encode(same_id):
            raise SystemExit(f"make_encoded differs from the first encode for {envelope.type}")
        old = old_decode(raw)
        for name, decoder in DECODERS.items():
            new = decoder(raw)
            if type(new) is not type(old) or new != old or repr(new) != repr(old):
                raise SystemExit(f"{name} decode differs from the first one for {envelope.type}")


def report(title: str, envelopes: Sequence[Envelope[Any]], rounds: int) -> None:
    raws = [old_encode(e) for e in envelopes]
    check_same_results(envelopes[:50])
    print(f"\n{title}: {len(envelopes)} events, {sum(map(len, raws)) / len(raws):.0f} bytes each")
    for what, codecs, items in (
        ("encode", ENCODERS, envelopes),
        ("make+encode", MAKERS, envelopes),
        ("decode", DECODERS, raws),
    ):
        result = best_us_per_item(codecs, items, rounds)
        old = result["old"]
        for name, us in result.items():
            vs_old = "" if name == "old" else f"{us / old - 1:+.0%}"
            print(f"  {what:11} {name:26}{us:10.2f} µs{vs_old:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--executions", type=int, default=300, help="executions per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; the best one counts")
    parser.add_argument("--big", action="store_true", help="also events with a large output")
    args = parser.parse_args()

    workspace_id = new_id("ws")
    print(f"CPU µs per event, best of {args.rounds} rounds")
    stream = [e for n in range(args.executions) for e in execution_events(workspace_id, n)]
    report(f"{args.executions} executions of 13 events", stream, args.rounds)
    if args.big:
        for name, envelopes in big_events(workspace_id, 30).items():
            report(f"step output of {name}", envelopes, args.rounds)


if __name__ == "__main__":
    main()
