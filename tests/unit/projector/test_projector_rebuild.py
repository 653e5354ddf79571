"""How `rebuild --workers N` shares the partitions out, and the flag's validation."""

from __future__ import annotations

import pytest

from jobsprint.projector.__main__ import DEFAULT_WORKERS, _parser
from jobsprint.projector.rebuild import split_partitions

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("workers", range(1, 9))
def test_every_partition_goes_to_exactly_one_worker(workers: int) -> None:
    shares = split_partitions([5, 3, 0, 4, 1, 2], workers)
    assert len(shares) == min(workers, 6)
    assert sorted(p for share in shares for p in share) == [0, 1, 2, 3, 4, 5]
    assert all(shares), "no idle worker"
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_partitions_are_dealt_round_robin() -> None:
    assert split_partitions(range(6), 2) == [[0, 2, 4], [1, 3, 5]]
    assert split_partitions([0, 1, 2], 2) == [[0, 2], [1]]
    assert split_partitions([0, 1, 2], 5) == [[0], [1], [2]]
    assert split_partitions([7], 1) == [[7]]


def test_at_least_one_worker() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        split_partitions([0, 1], 0)


def test_workers_flag_defaults_and_is_validated(capsys: pytest.CaptureFixture[str]) -> None:
    assert _parser().parse_args(["rebuild"]).workers == DEFAULT_WORKERS
    assert _parser().parse_args(["rebuild", "--workers", "3"]).workers == 3
    for bad, message in (("0", "must be at least 1"), ("-2", "must be at least 1"), ("x", "'x'")):
        with pytest.raises(SystemExit) as exited:
            _parser().parse_args(["rebuild", "--workers", bad])
        assert exited.value.code == 2
        assert f"--workers: {message}" in capsys.readouterr().err
