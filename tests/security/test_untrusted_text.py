"""Untrusted text in log lines and step outputs: control characters and ANSI escapes are
stored escaped (a terminal or log viewer showing them cannot be driven by them), and
megabytes of text are capped with a marker that they were cut. The execution itself must
still run to its end. On the `spare` system: a step that breaks an executor must not take
the other security tests down with it."""

from __future__ import annotations

import asyncio
import unicodedata
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from tests.e2e.system import System
from tests.security.conftest import Target, client_for, create_workflow, tenant

pytestmark = pytest.mark.e2e

EVIL = "\x1b[31mRED\x1b[0m \x1b]0;owned\x07 bell\x07 back\x08space \r\nINJECTED LOG LINE \x9b2J"
BIG_CHARS = 1_000_000  # under the template limit (1 MiB), far over any sane log line
ALLOWED_CONTROL = {"\n", "\t"}


@pytest.fixture
def isolated(spare: System) -> System:
    return spare


def raw_controls(text: str) -> list[str]:
    """Control characters left as they are (C0, DEL, C1), other than newline and tab."""
    return sorted(
        {repr(ch) for ch in text if unicodedata.category(ch) == "Cc" and ch not in ALLOWED_CONTROL}
    )


def marked_as_cut(value: Any) -> bool:
    """A marker that text was cut: a `truncated`/`cut` flag or a note in the text."""
    text = orjson.dumps(value).decode().lower()
    return any(word in text for word in ("truncated", "[cut", "…cut", "(cut", "cut off"))


async def finished(api: httpx.AsyncClient, workflow_id: str, input_data: Any) -> dict[str, Any]:
    response = await api.post(
        f"/v1/workflows/{workflow_id}/execute",
        json={"inputData": input_data, "options": {"waitForCompletion": True, "timeout": 40}},
        timeout=60,
    )
    assert response.status_code in (200, 202), response.text
    execution_id = response.json()["data"]["executionId"]
    for _ in range(40):
        detail = (await api.get(f"/v1/executions/{execution_id}")).json()["data"]
        if detail["status"] in ("success", "error", "cancelled"):
            return dict(detail)
        await asyncio.sleep(0.5)
    raise AssertionError(f"{execution_id} still {detail['status']} after about 60 s")


async def test_control_characters_and_ansi_escapes_are_stored_escaped(
    isolated: System,
) -> None:
    owner = tenant(isolated)
    definition = {
        "name": "Echoes untrusted text",
        "steps": [
            {"id": "say", "name": "Say", "type": "log", "params": {"message": "{{ input.evil }}"}},
            {
                "id": "keep",
                "name": "Keep",
                "type": "transform",
                "params": {"output": {"text": "{{ input.evil }}"}},
            },
        ],
    }
    async with client_for(isolated, owner) as api:
        workflow_id = await create_workflow(api, definition)
        detail = await finished(api, workflow_id, {"evil": EVIL})
        logs = (await api.get(f"/v1/executions/{detail['id']}/logs")).json()["data"]["logs"]
    assert detail["status"] == "success", detail.get("error")
    said = [
        line["message"] for line in logs if line.get("stepId") == "say" and "RED" in line["message"]
    ]
    assert said, logs
    kept = detail["outputData"]["text"]
    step_output = next(s for s in detail["executionSteps"] if s["stepId"] == "keep")["output"][
        "text"
    ]
    problems = {
        where: raw_controls(text)
        for where, text in (
            ("log message", said[0]),
            ("outputData", kept),
            ("step output", step_output),
        )
        if raw_controls(text)
    }
    assert not problems, f"raw control characters stored: {problems}"
    for text in (said[0], kept):
        assert "RED" in text and "INJECTED LOG LINE" in text  # escaped, not dropped


async def test_megabytes_of_text_are_capped_with_a_marker(
    isolated: System, allowed_target: Target
) -> None:
    owner = tenant(isolated)
    chunk = "0123456789" * 100
    repeat = BIG_CHARS // len(chunk)
    big_log = {
        "name": "A megabyte log line",
        "steps": [
            {
                "id": "say",
                "name": "Say",
                "type": "log",
                "params": {"message": "{{ input.chunk * " + str(repeat) + " }}"},
            }
        ],
    }
    big_output = {
        "name": "A megabyte output",
        "steps": [
            {
                "id": "make",
                "name": "Make",
                "type": "transform",
                "params": {"output": "{{ input.chunk * " + str(repeat) + " }}"},
            }
        ],
    }
    big_http = {
        "name": "Three megabytes over http",
        "steps": [
            {
                "id": "fetch",
                "name": "Fetch",
                "type": "http",
                "params": {"url": f"{allowed_target.url}/big?mib=3", "timeoutSeconds": 30},
            }
        ],
    }
    found: dict[str, Any] = {}
    async with client_for(isolated, owner) as api:
        for name, definition in (("log", big_log), ("output", big_output), ("http", big_http)):
            workflow_id = await create_workflow(api, definition)
            try:
                detail = await finished(api, workflow_id, {"chunk": chunk})
            except AssertionError as exc:
                found[name] = {"status": "not finished", "why": str(exc)}
                continue
            logs = (await api.get(f"/v1/executions/{detail['id']}/logs")).json()["data"]["logs"]
            found[name] = {"detail": detail, "logs": logs, "status": detail["status"]}

    problems = []
    for name, result in found.items():
        if result["status"] != "success":
            problems.append(
                f"{name}: execution {result['status']}: "
                f"{result.get('why') or result['detail'].get('error')}"
            )
    if found["log"]["status"] == "success":
        line = next(
            (
                entry
                for entry in found["log"]["logs"]
                if entry.get("stepId") == "say" and entry["message"].startswith("0123")
            ),
            None,
        )
        if line is None:
            problems.append("log: the big log line is not in the logs")
        elif len(line["message"]) >= BIG_CHARS or not marked_as_cut(line):
            problems.append(
                f"log: a {len(line['message'])}-character message stored, "
                f"marked cut: {marked_as_cut(line)}"
            )
    if found["output"]["status"] == "success":
        detail = found["output"]["detail"]
        size = len(orjson.dumps(detail["outputData"]))
        step = next(s for s in detail["executionSteps"] if s["stepId"] == "make")
        if size >= BIG_CHARS or not marked_as_cut(detail["outputData"]):
            problems.append(
                f"output: outputData of {size} bytes stored, "
                f"marked cut: {marked_as_cut(detail['outputData'])}"
            )
        if len(orjson.dumps(step["output"])) >= BIG_CHARS or not marked_as_cut(step["output"]):
            problems.append("output: the step output is not capped with a marker")
    if found["http"]["status"] == "success":
        output = found["http"]["detail"]["outputData"]
        if not marked_as_cut(output) or len(orjson.dumps(output)) > 2 * 1024 * 1024:
            problems.append("http: a 3 MiB body not capped with a marker")
        if raw_controls(str(output.get("body", ""))):
            problems.append(
                f"http: raw control characters in the body: {raw_controls(str(output['body']))}"
            )
    assert not problems, "\n".join(problems)


async def submitted(api: httpx.AsyncClient, workflow_id: str, input_data: Any) -> str:
    response = await api.post(
        f"/v1/workflows/{workflow_id}/execute", json={"inputData": input_data}
    )
    assert response.status_code in (200, 202), response.text
    return str(response.json()["data"]["executionId"])


async def finished_within(
    api: httpx.AsyncClient, execution_id: str, seconds: float
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        detail = (await api.get(f"/v1/executions/{execution_id}")).json()["data"]
        if detail["status"] in ("success", "error", "cancelled"):
            return dict(detail)
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{execution_id} still {detail['status']} after {seconds:g} s")
        await asyncio.sleep(0.2)


def partition_of(execution_id: str, partitions: int) -> int:
    """The commands partition the gateway's producer picks (Kafka's default partitioner)."""
    return int(DefaultPartitioner()(execution_id.encode(), list(range(partitions)), []))


async def test_a_large_input_carried_through_several_steps_still_finishes(
    isolated: System,
) -> None:
    """The request body may be up to 1 MiB, and every step's (capped) output is kept beside
    the input while the execution runs: what the executor writes to Kafka for it must still
    fit (it does, within the default limits), or the execution must fail cleanly with
    `too_large`. It must never stay running forever, nor hold up the other executions of its
    partition (bug G: one Kafka record over 1 MiB stopped the whole partition)."""
    owner = tenant(isolated)
    partitions = int(isolated.env()["JOBSPRINT_PARTITIONS"])
    carrying = {
        "name": "Carries a big input along",
        "steps": [
            {
                "id": f"s{i}",
                "name": f"S{i}",
                "type": "transform",
                "params": {"output": "{{ input.s }}"},
            }
            for i in range(4)
        ]
        + [{"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": 0.5}}],
    }
    small = {
        "name": "Small",
        "steps": [{"id": "a", "name": "A", "type": "transform", "params": {"output": "ok"}}],
    }
    async with client_for(isolated, owner) as api:
        big_workflow = await create_workflow(api, carrying)
        small_workflow = await create_workflow(api, small)
        big = await submitted(api, big_workflow, {"s": "x" * 900_000})
        # a small execution right behind it on the same partition
        for _ in range(30):
            neighbour = await submitted(api, small_workflow, {})
            if partition_of(neighbour, partitions) == partition_of(big, partitions):
                break
        else:
            raise AssertionError("no execution id of 30 mapped to the big one's partition")
        after = await finished_within(api, neighbour, 15)
        detail = await finished_within(api, big, 30)
    assert after["status"] == "success", after.get("error")
    assert detail["status"] in ("success", "error"), detail["status"]
    if detail["status"] == "error":
        assert detail["error"]["code"] == "too_large", detail["error"]
        assert "bytes" in detail["error"]["message"], detail["error"]
    else:
        assert [s["status"] for s in detail["executionSteps"]] == ["success"] * 5
