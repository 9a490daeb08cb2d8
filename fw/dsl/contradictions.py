"""Rules no packet can match because two of their matches exclude each other.

`tcp sport 80 udp dport 53` (two protocols), `ip saddr 192.0.2.1 ip6 daddr ::1` (two families),
`ip daddr 192.0.2.1 icmpv6 type echo-request` (IPv4 with ICMPv6), `proto gre tcp dport 80`
(ports of a protocol the rule excludes): each is almost surely a typo, and the rule is dead.
The test is the classifier's own encoding (fw/core/fields.py): a field whose tests, intersected,
accept no value, or matches whose address families do not meet.
"""

from __future__ import annotations

from collections.abc import Sequence

from fw.core.fields import accepted_values, implied_protocol, interface_ids, rule_families
from fw.core.ranges import IntervalSet
from fw.dsl.format import match_text
from fw.model import Match


class Never:
    """Why a rule can never match: the later of two matches that exclude each other, and the
    words to say it with."""

    def __init__(self, match: Match, message: str) -> None:
        self.match = match
        self.message = message


def never_matches(matches: Sequence[Match]) -> Never | None:
    """The first pair of matches that exclude each other, in rule order; None if the rule
    can match some packet."""
    if not tests_a_field_twice(matches):  # the common case: nothing to intersect
        return family_conflict(matches)
    ifaces = interface_ids([_Rule(matches)], ())
    fields: dict[str, tuple[IntervalSet, Match]] = {}
    for k, match in enumerate(matches):
        for name, values in tests_of(match, ifaces):
            if name not in fields:
                fields[name] = (values, match)
                continue
            held, first = fields[name]
            if not held & values:
                return Never(match, conflict(name, first, match))
            fields[name] = (held & values, first)
        never = family_conflict(matches[: k + 1])
        if never is not None:
            return never
    return None


def family_conflict(matches: Sequence[Match]) -> Never | None:
    """The last match, if it leaves the rule no address family (IPv4 and IPv6 tests)."""
    if rule_families(matches):
        return None
    k = next(k for k in range(1, len(matches)) if not rule_families(matches[: k + 1]))
    last = matches[k]
    first = next((m for m in matches[:k] if not rule_families([m, last])), matches[0])
    return Never(last, f"'{match_text(first)}' and '{match_text(last)}' are of different "
                 "address families")


def tests_a_field_twice(matches: Sequence[Match]) -> bool:
    """Whether two matches test one field (an implied protocol counts): only then can two of
    them have no value in common."""
    seen: set[str] = set()
    for match in matches:
        names = [match.kind]  # a match's kind is the field it tests
        if implied_protocol(match) is not None:
            names.append("proto")
        for name in dict.fromkeys(names):
            if name in seen:
                return True
            seen.add(name)
    return False


def tests_of(match: Match, ifaces: dict[str, int]) -> list[tuple[str, IntervalSet]]:
    """The field tests a match makes, the protocol it implies included."""
    proto = implied_protocol(match)
    implied = [("proto", IntervalSet.span(proto, proto))] if proto is not None else []
    return [*implied, accepted_values(match, ifaces)]


def conflict(field: str, first: Match, later: Match) -> str:
    if field == "proto":
        return f"'{match_text(first)}' and '{match_text(later)}' ask for different protocols"
    return f"'{match_text(first)}' and '{match_text(later)}' have no value in common"


class _Rule:
    """What interface_ids reads of a rule."""

    def __init__(self, matches: Sequence[Match]) -> None:
        self.matches = matches
