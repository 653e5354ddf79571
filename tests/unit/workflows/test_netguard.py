from ipaddress import ip_address

import pytest

from jobsprint.workflows import check_address, parse_allow_list
from jobsprint.workflows.netguard import blocked_reason

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("::ffff:192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("::ffff:169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", ""),
        ("64:ff9b::7f00:1", "loopback"),
        ("2002:c0a8:0101::1", "private"),
        ("192.0.2.10", ""),
    ],
)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    refusal = check_address("service.test", [address], [])
    assert refusal is not None
    assert reason in refusal
    assert "service.test" in refusal


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:2800:220:1:248:1893:25c8:1946"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert check_address("example.com", [address], []) is None
    assert blocked_reason(ip_address(address)) is None


def test_any_bad_address_refuses_the_host() -> None:
    assert check_address("mixed.test", ["93.184.216.34", "10.0.0.1"], []) is not None


def test_ip_literal_host_is_checked_without_resolution() -> None:
    assert check_address("127.0.0.1", [], []) is not None
    assert check_address("[::1]", [], []) is not None
    assert check_address("93.184.216.34", [], []) is None


def test_unresolved_or_garbage_addresses_are_refused() -> None:
    assert "did not resolve" in (check_address("nothing.test", [], []) or "")
    assert "not an IP address" in (check_address("x.test", ["not-an-ip"], []) or "")


def test_allow_list_cidr_covers_addresses() -> None:
    assert check_address("localhost", ["127.0.0.1"], ["127.0.0.0/8"]) is None
    assert check_address("localhost", ["127.0.0.1"], ["127.0.0.1"]) is None
    assert check_address("h", ["::ffff:127.0.0.1"], ["127.0.0.1/32"]) is None
    assert check_address("h", ["::1"], ["::1/128"]) is None
    assert check_address("h", ["10.0.0.1"], ["10.0.0.0/8"]) is None
    assert check_address("h", ["10.0.0.1", "127.0.0.1"], ["10.0.0.0/8"]) is not None
    assert check_address("h", ["192.168.0.1"], ["10.0.0.0/8"]) is not None


def test_allow_list_host_names_and_patterns() -> None:
    allow = ["internal.svc", "*.example.com"]
    assert check_address("internal.svc", ["10.0.0.1"], allow) is None
    assert check_address("INTERNAL.svc.", ["10.0.0.1"], allow) is None
    assert check_address("api.example.com", ["10.0.0.1"], allow) is None
    assert check_address("a.b.example.com", ["127.0.0.1"], allow) is None
    assert check_address("example.com", ["10.0.0.1"], allow) is not None
    assert check_address("evilexample.com", ["10.0.0.1"], allow) is not None
    assert check_address("example.com.evil.io", ["10.0.0.1"], allow) is not None
    assert check_address("other.svc", ["10.0.0.1"], allow) is not None


def test_parse_allow_list() -> None:
    assert parse_allow_list("") == []
    assert parse_allow_list(" A.Example.com, *.X.io ,10.0.0.0/8,, ::1 ,127.0.0.1") == [
        "a.example.com",
        "*.x.io",
        "10.0.0.0/8",
        "::1",
        "127.0.0.1",
    ]
    for bad in ["a b", "10.0.0.0/33", "*", "*.", "http://x.test", "x..y"]:
        with pytest.raises(ValueError):
            parse_allow_list(bad)


def test_invalid_allow_list_entry_given_directly_raises() -> None:
    with pytest.raises(ValueError):
        check_address("h", ["10.0.0.1"], ["not valid!"])
