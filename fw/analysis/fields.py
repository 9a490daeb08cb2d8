"""A match seen as (field, negated, value set): the common form for comparing rules.

Shadow warnings, exposure and the classifier all ask set questions about matches; this module
is where a match becomes a set once, so they agree on what every match means.
"""

from __future__ import annotations

from dataclasses import dataclass

from fw.analysis.intervals import IntervalSet
from fw.model import (
    AddrMatch,
    CtStateMatch,
    IcmpTypeMatch,
    IfaceMatch,
    Match,
    PortMatch,
    ProtoMatch,
    TcpFlagsMatch,
)

FieldKey = tuple


@dataclass(frozen=True, slots=True)
class FieldTest:
    """One test on one packet field: values is an IntervalSet, a frozenset of names, or flags."""

    key: FieldKey
    negate: bool
    values: IntervalSet | frozenset | tuple[int, int]

    def is_point(self) -> bool:
        """True when the test holds for exactly one value (a good index key)."""
        if self.negate or isinstance(self.values, tuple):
            return False
        if isinstance(self.values, IntervalSet):
            return self.values.is_point()
        return len(self.values) == 1


def prefix_range(net) -> tuple[int, int]:
    return int(net.network_address), int(net.broadcast_address)


def field_test(match: Match) -> FieldTest:
    values: IntervalSet | frozenset | tuple[int, int]
    if isinstance(match, IfaceMatch):
        key, values = (match.kind,), frozenset(match.names)
    elif isinstance(match, AddrMatch):
        key, values = (match.kind, match.family), IntervalSet(map(prefix_range, match.prefixes))
    elif isinstance(match, ProtoMatch):
        key, values = ("proto",), IntervalSet((p, p) for p in match.protos)
    elif isinstance(match, PortMatch):
        key, values = (match.kind, match.proto), IntervalSet((r.lo, r.hi) for r in match.ranges)
    elif isinstance(match, TcpFlagsMatch):
        key, values = ("tcp_flags",), (match.set, match.clear)
    elif isinstance(match, IcmpTypeMatch):
        key, values = ("icmp_type", match.family), IntervalSet((t, t) for t in match.types)
    elif isinstance(match, CtStateMatch):
        key, values = ("ct_state",), frozenset(match.states)
    else:  # pragma: no cover - the Match union is closed
        raise TypeError(match)
    return FieldTest(key, match.negate, values)


def implied_protocols(match: Match) -> int | None:
    """The protocol a match implies (`tcp dport` -> 6), so `proto tcp` can be compared to it."""
    if isinstance(match, PortMatch):
        return match.proto
    if isinstance(match, TcpFlagsMatch):
        return 6
    if isinstance(match, IcmpTypeMatch):
        return 1 if match.family == 4 else 58
    return None


def subset(inner, outer) -> bool:
    if isinstance(outer, IntervalSet):
        return outer.issuperset(inner)
    return inner <= outer


def disjoint(a, b) -> bool:
    return a.isdisjoint(b)


def test_covers(a: FieldTest, b: FieldTest) -> bool:
    """Does every packet that passes test b also pass test a (same field)?"""
    if isinstance(a.values, tuple):
        set_a, clear_a = a.values
        set_b, clear_b = b.values
        stricter = (set_a & ~set_b) == 0 and (clear_a & ~clear_b) == 0
        return a.negate == b.negate and (stricter if not a.negate else a.values == b.values)
    if not a.negate:
        return not b.negate and subset(b.values, a.values)
    if b.negate:
        return subset(a.values, b.values)
    return disjoint(a.values, b.values)
