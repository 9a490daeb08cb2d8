"""A chain compiled into a classifier whose cost per packet does not grow with the rule count.

Every rule is one bit. For each packet field that some rule tests, the field's value range is cut
at every rule's interval edges; each piece holds the bitmap of the rules that accept values in it
(rules that do not test the field accept all). A packet costs one bisect per tested field and an
AND of Python ints: the lowest set bit among rules with a verdict is the first match, as in the
bit-vector classifiers of the literature (Lakshman & Stiliadis) and nftables' set lookups.

Field values are encoded so that one integer says everything a rule can ask: a port is
`proto << 16 | port` (so `tcp dport 80` never matches UDP), an address `family << 128 | addr`, an
ICMP type `proto << 8 | type`; a value that does not exist for the packet is -1, which only
rules that do not test the field accept. Negation is the complement within the field's own
domain, as nftables' protocol dependencies make `tcp dport != 80` match TCP only.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fw.analysis.intervals import IntervalSet
from fw.model import (
    CT_STATES,
    AddrMatch,
    CtStateMatch,
    IcmpTypeMatch,
    IfaceMatch,
    Match,
    PortMatch,
    ProtoMatch,
    Rule,
    TcpFlagsMatch,
)

MISSING = -1
ADDR_BITS = 128


def addr_value(family: int, addr: int) -> int:
    return (family << ADDR_BITS) | addr


def addr_domain(family: int) -> tuple[int, int]:
    top = (1 << 32) - 1 if family == 4 else (1 << 128) - 1
    return addr_value(family, 0), addr_value(family, top)


def accepted_values(match: Match, ifaces: dict[str, int]) -> tuple[str, IntervalSet]:
    """The field a match tests and the encoded values it accepts (negation applied)."""
    field, values, domain = encode(match, ifaces)
    if match.negate:
        values = values.complement(*domain)
    return field, values


def encode(match: Match, ifaces: dict[str, int]) -> tuple[str, IntervalSet, tuple[int, int]]:
    if isinstance(match, IfaceMatch):
        ids = IntervalSet((ifaces[n], ifaces[n]) for n in match.names)
        return match.kind, ids, (MISSING, len(ifaces))
    if isinstance(match, AddrMatch):
        ranges = (encoded_prefix(match.family, p) for p in match.prefixes)
        return match.kind, IntervalSet(ranges), addr_domain(match.family)
    if isinstance(match, ProtoMatch):
        return "proto", IntervalSet((p, p) for p in match.protos), (0, 255)
    if isinstance(match, PortMatch):
        base = match.proto << 16
        ranges = ((base | r.lo, base | r.hi) for r in match.ranges)
        return match.kind, IntervalSet(ranges), (base, base | 0xFFFF)
    if isinstance(match, TcpFlagsMatch):
        flags = (f for f in range(256) if f & match.set == match.set and not f & match.clear)
        return "tcp_flags", IntervalSet((f, f) for f in flags), (0, 255)
    if isinstance(match, IcmpTypeMatch):
        base = (1 if match.family == 4 else 58) << 8
        return (
            "icmp_type",
            IntervalSet((base | t, base | t) for t in match.types),
            (base, base | 255),
        )
    if isinstance(match, CtStateMatch):
        ids = IntervalSet((CT_STATES.index(s), CT_STATES.index(s)) for s in match.states)
        return "ct_state", ids, (0, len(CT_STATES) - 1)
    raise TypeError(match)  # pragma: no cover - the Match union is closed


def encoded_prefix(family: int, prefix) -> tuple[int, int]:
    lo, hi = int(prefix.network_address), int(prefix.broadcast_address)
    return addr_value(family, lo), addr_value(family, hi)


@dataclass(frozen=True, slots=True)
class FieldTable:
    """One field's cut points and, for each piece, the bitmap of rules accepting it."""

    name: str
    starts: tuple[int, ...]
    masks: tuple[int, ...]

    def lookup(self, value: int) -> int:
        return self.masks[bisect_right(self.starts, value) - 1]


def build_field_table(name: str, sets: dict[int, IntervalSet], everyone: int) -> FieldTable:
    """Sweep the rules' intervals in order of their edges, keeping the set of rules inside."""
    untested = everyone
    for bit in sets:
        untested &= ~(1 << bit)
    events: dict[int, int] = {}
    for bit, values in sets.items():
        for lo, hi in values.ranges():
            events[lo] = events.get(lo, 0) ^ (1 << bit)
            events[hi + 1] = events.get(hi + 1, 0) ^ (1 << bit)
    starts, masks, inside = [MISSING - 1], [untested], 0
    for edge in sorted(events):
        inside ^= events[edge]
        starts.append(edge)
        masks.append(untested | inside)
    return FieldTable(name, tuple(starts), tuple(masks))


@dataclass(frozen=True, slots=True)
class CompiledChain:
    """A chain ready for packets: field tables, which rules decide, the policy."""

    rules: tuple[Rule, ...]
    fields: tuple[FieldTable, ...]
    verdict_mask: int
    everyone: int

    def matching(self, values: dict[str, int]) -> int:
        """Bitmap of every rule whose matches all hold for these field values."""
        mask = self.everyone
        for table in self.fields:
            mask &= table.lookup(values.get(table.name, MISSING))
            if not mask:
                break
        return mask

    def first_decider(self, mask: int) -> Rule | None:
        deciding = mask & self.verdict_mask
        if not deciding:
            return None
        return self.rules[(deciding & -deciding).bit_length() - 1]

    def statement_rules(self, mask: int, before: Rule | None) -> list[Rule]:
        """Rules without a verdict that matched before the deciding rule (counter, log)."""
        limit = (1 << before.index) - 1 if before is not None else self.everyone
        pending, out = mask & ~self.verdict_mask & limit, []
        while pending:
            low = pending & -pending
            out.append(self.rules[low.bit_length() - 1])
            pending ^= low
        return out


def has_verdict(rule: Rule) -> bool:
    return rule.verdict is not None


def compile_chain(
    rules: Sequence, ifaces: dict[str, int], decides: Callable[[object], bool] = has_verdict
) -> CompiledChain:
    """Compile filter rules (or NAT rules, with `decides` saying every one of them decides)."""
    per_field: dict[str, dict[int, IntervalSet]] = {}
    for bit, rule in enumerate(rules):
        for match in rule.matches:
            field, values = accepted_values(match, ifaces)
            previous = per_field.setdefault(field, {}).get(bit)
            per_field[field][bit] = values if previous is None else previous & values
    everyone = (1 << len(rules)) - 1
    tables = tuple(build_field_table(f, sets, everyone) for f, sets in per_field.items())
    verdicts = sum(1 << i for i, rule in enumerate(rules) if decides(rule))
    return CompiledChain(tuple(rules), tables, verdicts, everyone)


def interface_ids(rules: Sequence, known: Sequence[str]) -> dict[str, int]:
    """Every interface name a rule or the topology mentions gets a number (0, 1, ...)."""
    names = dict.fromkeys(known)
    for rule in rules:
        for match in rule.matches:
            if isinstance(match, IfaceMatch):
                names.update(dict.fromkeys(match.names))
    return {name: i for i, name in enumerate(names)}
