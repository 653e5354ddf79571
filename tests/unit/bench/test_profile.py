"""Summaries of py-spy's collapsed stacks."""

from __future__ import annotations

import pytest

from bench.profile import categorize, hot_match, parse_collapsed, short, summarize_profile

pytestmark = pytest.mark.unit

PREFIX = 'process 1:"python -m jobsprint.projector";thread (0x1):MainThread;'
RUN = "run (asyncio/runners.py:118);"
BATCH = "apply_batch (jobsprint/projector/batch.py:80);"
RAW = "\n".join(
    [
        PREFIX + RUN + BATCH + "decode_records (jobsprint/projector/batch.py:66);"
        "decode (jobsprint/events/codec.py:50);model_validate (pydantic/main.py:596) 60",
        PREFIX + RUN + BATCH + "write_changes (jobsprint/projector/store.py:280);"
        "execute (psycopg/cursor_async.py:97) 30",
        PREFIX + RUN + "_run_once (asyncio/base_events.py:1922) 10",
        "",
    ]
)


def test_collapsed_stacks_are_parsed_without_process_and_thread_frames() -> None:
    stacks = parse_collapsed(RAW.splitlines())
    assert [count for _, count in stacks] == [60, 30, 10]
    assert stacks[0][0][0] == "run (asyncio/runners.py:118)"


def test_self_time_goes_to_the_leaf_most_known_library() -> None:
    summary = summarize_profile(
        parse_collapsed(RAW.splitlines()), ("apply_batch projector/batch.py", "decode events/codec")
    )
    assert summary["samples"] == 100
    by = summary["self_pct_by_category"]
    assert by["pydantic (validation, serialisation)"] == 60.0
    assert by["Postgres client (psycopg, pool)"] == 30.0
    assert by["event loop (asyncio, uvloop)"] == 10.0
    assert summary["inclusive_pct_by_category"]["Jobsprint code"] == 90.0
    assert summary["inclusive_pct"] == {
        "apply_batch projector/batch.py": 90.0,
        "decode events/codec": 60.0,
    }


def test_categories() -> None:
    assert categorize("send (aiokafka/producer/producer.py:400)") == "Kafka client (aiokafka)"
    assert categorize("encode (jobsprint/events/codec.py:30)").startswith("JSON")
    assert categorize("handle (jobsprint/executor/partition.py:70)") == "Jobsprint code"
    assert categorize("<lambda> (functools.py:1)") is None


def test_hot_functions_match_by_name_and_file() -> None:
    frame = "send (/work/main/services/api-gateway/src/jobsprint/gateway/commands.py:88)"
    assert hot_match("send gateway/commands.py", frame)
    assert not hot_match("send aiokafka/", frame)
    assert not hot_match("sen gateway/commands.py", frame)
    method = "Repository.claim_request (/x/src/jobsprint/gateway/repository.py:240)"
    assert hot_match("claim_request gateway/repository.py", method)


def test_frames_are_shown_without_their_install_prefix() -> None:
    frame = "send (/work/main/.venv/lib/python3.11/site-packages/aiokafka/producer.py:3)"
    assert short(frame) == "send (aiokafka/producer.py:3)"
