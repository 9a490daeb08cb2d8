"""Values of the vocabulary as people read them: addresses, endpoints, flow tuples, rules.

Every view (explain, replay, the daemon's log, status, exposure) formats through these, so an
address or a rule reference reads the same in all of them.
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address

from fw.core.protocols import ICMP, ICMPV6


def rule_ref(rule) -> dict | None:
    """A rule as logs and scripts see it: chain, index, file, line, text; None is the policy."""
    if rule is None:
        return None
    span = rule.span
    return {"chain": getattr(rule, "chain", None), "index": rule.index,
            "file": span.file if span else None, "line": span.line if span else None,
            "text": rule.text or None}


def endpoint(family: int, addr: int, port: int) -> str:
    text = address_text(family or (6 if addr >> 32 else 4), addr)
    return f"[{text}]:{port}" if family == 6 else f"{text}:{port}"


def tuple_text(family: int, key: tuple) -> str:
    proto, src, sport, dst, dport = key
    if proto in (ICMP, ICMPV6):  # ICMP echo: the 'ports' are the identifier
        return f"{address_text(family, src)} -> {address_text(family, dst)} id {sport & 0xFFFF}"
    return f"{endpoint(family, src, sport)} -> {endpoint(family, dst, dport)}"


@lru_cache(maxsize=65536)
def address_text(family: int, addr: int) -> str:
    """Addresses repeat packet after packet; ipaddress formatting is slow enough to cache."""
    if not family:
        return "?"
    return str(IPv4Address(addr) if family == 4 else IPv6Address(addr))
