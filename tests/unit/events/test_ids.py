from datetime import UTC, datetime, timedelta

import pytest

from jobsprint.events.ids import id_floor, id_time, looks_like_id, new_id

pytestmark = pytest.mark.unit


def test_ids_sort_by_creation_time() -> None:
    base = datetime(2025, 1, 6, 12, 30, tzinfo=UTC)
    ids = [new_id("exec", base + timedelta(milliseconds=i * 7)) for i in range(200)]
    assert sorted(ids) == ids


def test_id_time_round_trips_to_the_millisecond() -> None:
    at = datetime(2025, 1, 6, 12, 30, 0, 123000, tzinfo=UTC)
    assert id_time(new_id("exec", at)) == at


def test_id_floor_bounds_ids_created_at_or_after() -> None:
    at = datetime(2025, 1, 6, tzinfo=UTC)
    assert new_id("exec", at) >= id_floor("exec", at)
    assert new_id("exec", at - timedelta(milliseconds=1)) < id_floor("exec", at)


def test_looks_like_id() -> None:
    assert looks_like_id("exec", new_id("exec"))
    assert not looks_like_id("exec", new_id("wf"))
    assert not looks_like_id("exec", "exec_abc")
    with pytest.raises(ValueError):
        id_time("exec_!!")
