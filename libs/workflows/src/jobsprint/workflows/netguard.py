"""Which hosts an http step may reach. Pure: the caller resolves DNS and passes the addresses.

Allow-list entries: an exact host name (``api.internal``), a ``*.suffix`` pattern (matches any
subdomain of ``suffix``, not ``suffix`` itself), an IP address, or a CIDR (``10.0.0.0/8``).
A host whose name matches a name or pattern entry is allowed whatever it resolves to (its DNS is
trusted). Otherwise every resolved address must be public, or inside an allow-listed network.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

CLOUD_METADATA_ADDRESSES = frozenset({ip_address("169.254.169.254"), ip_address("fd00:ec2::254")})
_CGNAT = ip_network("100.64.0.0/10")
_NAT64 = ip_network("64:ff9b::/96")
_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*"
)


def check_address(host: str, addresses: Sequence[str], allow_list: Sequence[str]) -> str | None:
    """Why a request to ``host`` (resolved to ``addresses``) is refused, or None if allowed.

    An IP-literal ``host`` is checked as an address too. Raises ValueError for an invalid
    ``allow_list`` entry (validate settings with ``parse_allow_list``).
    """
    name = normalize_host(host)
    rules = _rules(tuple(allow_list))
    if name in rules.names or any(name.endswith(suffix) for suffix in rules.suffixes):
        return None
    candidates = list(addresses)
    if _parse_ip(name) is not None:
        candidates.append(name)
    if not candidates:
        return f"host {host!r} did not resolve to any address"
    for text in candidates:
        address = _parse_ip(text)
        if address is None:
            return f"{text!r} is not an IP address"
        reason = blocked_reason(address)
        if reason and not _covered(address, rules.networks):
            return f"host {host!r} resolves to {address}, {reason}"
    return None


def blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` is not public (e.g. ``"a loopback address"``), or None if it is."""
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = blocked_reason(embedded)
            return f"{reason} ({embedded} inside IPv6)" if reason else None
    if address in CLOUD_METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        (address.is_loopback, "a loopback address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in _CGNAT, "a carrier-grade NAT (shared) address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for blocked, reason in checks if blocked), None)


def parse_allow_list(value: str) -> list[str]:
    """Entries of a comma-separated allow-list setting, trimmed and lower-cased.

    Raises ValueError naming the first invalid entry.
    """
    entries = [entry.strip().lower() for entry in value.split(",")]
    entries = [entry for entry in entries if entry]
    for entry in entries:
        _parse_entry(entry)
    return entries


def normalize_host(host: str) -> str:
    """``host`` lower-cased, without brackets (``[::1]``) or a trailing dot."""
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name.rstrip(".")


@dataclass(frozen=True, slots=True)
class _Rules:
    names: frozenset[str]
    suffixes: tuple[str, ...]
    networks: tuple[IPNetwork, ...]


@lru_cache(maxsize=64)
def _rules(entries: tuple[str, ...]) -> _Rules:
    names: set[str] = set()
    suffixes: list[str] = []
    networks: list[IPNetwork] = []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        parsed = _parse_entry(entry)
        if isinstance(parsed, IPv4Network | IPv6Network):
            networks.append(parsed)
        elif parsed.startswith("."):
            suffixes.append(parsed)
        else:
            names.add(parsed)
    return _Rules(frozenset(names), tuple(suffixes), tuple(networks))


def _parse_entry(entry: str) -> IPNetwork | str:
    """A network, a ``.suffix`` for a pattern, or a host name."""
    try:
        return ip_network(normalize_host(entry), strict=False)
    except ValueError:
        pass
    if entry.startswith("*."):
        suffix = normalize_host(entry[2:])
        if _HOST_NAME.fullmatch(suffix):
            return "." + suffix
    elif _HOST_NAME.fullmatch(normalize_host(entry)):
        return normalize_host(entry)
    raise ValueError(
        f"invalid allow-list entry {entry!r}: expected a host name, *.domain, an IP or a CIDR"
    )


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ip_address(normalize_host(text))
    except ValueError:
        return None


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _covered(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    forms: list[IPAddress] = [address]
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            forms.append(embedded)
    return any(form in network for form in forms for network in networks)
