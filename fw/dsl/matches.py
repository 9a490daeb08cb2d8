"""Match parts of a rule (the `iif lan`, `tcp dport 80` words) to model matches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from lark import Token, Tree

from fw.core.fields import network_range, rule_families
from fw.core.protocols import PROTOCOLS, TCP_FLAGS
from fw.dsl.sets import set_overlaps
from fw.dsl.spans import span_of, token_span
from fw.dsl.values import (
    Value,
    ValueError_,
    suggest,
    to_ct_states,
    to_ct_statuses,
    to_icmp_types,
    to_names,
    to_port_ranges,
    to_prefixes,
    to_protocols,
)
from fw.model import (
    UNIT_SECONDS,
    AddrMatch,
    CtStateMatch,
    CtStatusMatch,
    IcmpTypeMatch,
    IfaceMatch,
    Limit,
    Match,
    PortMatch,
    ProtoMatch,
    TcpFlagsMatch,
)

if TYPE_CHECKING:
    from fw.dsl.build import Builder


def split_negation(children: list) -> tuple[bool, list]:
    """Drop the `!=` node, saying whether it was there."""
    rest = [c for c in children if not (isinstance(c, Token) and c.type == "NEG")]
    return len(rest) != len(children), rest


class MatchBuilder:
    def __init__(self, builder: Builder, path: str) -> None:
        self.builder = builder
        self.path = path

    def build(self, tree: Tree) -> Iterator[Match | Limit]:
        if tree.data == "port_match":
            yield from self.port_match(tree)
        else:
            yield getattr(self, tree.data)(tree)

    def value(self, node: Tree | Token):
        return self.builder.resolve(node, self.path)

    def check_set(self, value: Value, items: Sequence) -> None:
        """Warn about elements given twice or overlapping (as intervals of what they mean)."""
        intervals = [item if isinstance(item, tuple) else (item, item) for item in items]
        for message, span in set_overlaps(value, intervals):
            self.builder.out.warning(message, span)

    def check_host_bits(self, value: Value) -> None:
        if value.define is None:  # a define's value was checked where it was defined
            self.builder.host_bits(value)

    def iface_match(self, tree: Tree) -> IfaceMatch:
        negate, (kind, value) = split_negation(tree.children)
        value = self.value(value)
        names = to_names(value, "an interface name")
        self.check_set(value, [hash(n) for n in names])
        return IfaceMatch(kind=str(kind), names=names, negate=negate, span=span_of(tree, self.path))

    def addr_match(self, tree: Tree) -> AddrMatch:
        negate, (family, field, value) = split_negation(tree.children)
        version = 6 if family == "ip6" else 4
        value = self.value(value)
        prefixes = to_prefixes(value, version)
        self.check_host_bits(value)
        self.check_set(value, [network_range(p) for p in prefixes])
        return AddrMatch(kind=str(field), family=version, prefixes=prefixes, negate=negate,
                         span=span_of(tree, self.path))

    def proto_match(self, tree: Tree) -> ProtoMatch:
        negate, (value,) = split_negation(tree.children)
        value = self.value(value)
        protos = to_protocols(value)
        self.check_set(value, protos)
        return ProtoMatch(protos=protos, negate=negate, span=span_of(tree, self.path))

    def port_match(self, tree: Tree) -> Iterator[PortMatch]:
        proto = PROTOCOLS[str(tree.children[0])]
        for test in tree.children[1:]:
            negate, (field, value) = split_negation(test.children)
            value = self.value(value)
            ranges = to_port_ranges(value, proto)
            self.check_set(value, [(r.lo, r.hi) for r in ranges])
            yield PortMatch(kind=str(field), proto=proto, ranges=ranges, negate=negate,
                            span=span_of(test, self.path))

    def flags_match(self, tree: Tree) -> TcpFlagsMatch:
        negate, (_tcp, *flags) = split_negation(tree.children)
        wanted_set = wanted_clear = 0
        for flag in flags:
            bit = self.flag_bit(flag.children[-1])
            if len(flag.children) > 1:
                wanted_clear |= bit
            else:
                wanted_set |= bit
        if wanted_set & wanted_clear:
            raise ValueError_("a TCP flag cannot be both set and clear", span_of(tree, self.path))
        return TcpFlagsMatch(set=wanted_set, clear=wanted_clear, negate=negate,
                             span=span_of(tree, self.path))

    def flag_bit(self, name: Token) -> int:
        if name not in TCP_FLAGS:
            hint = suggest(str(name), TCP_FLAGS) or f" (flags: {', '.join(TCP_FLAGS)})"
            raise ValueError_(f"'{name}' is not a TCP flag{hint}", token_span(name, self.path))
        return TCP_FLAGS[name]

    def icmp_match(self, tree: Tree) -> IcmpTypeMatch:
        negate, (family, value) = split_negation(tree.children)
        version = 6 if family == "icmpv6" else 4
        value = self.value(value)
        types = to_icmp_types(value, version)
        self.check_set(value, types)
        return IcmpTypeMatch(family=version, types=types, negate=negate,
                             span=span_of(tree, self.path))

    def ct_match(self, tree: Tree) -> CtStateMatch:
        negate, values = split_negation(tree.children)
        states = to_ct_states([self.value(v) for v in values])
        return CtStateMatch(states=states, negate=negate, span=span_of(tree, self.path))

    def ct_status_match(self, tree: Tree) -> CtStatusMatch:
        negate, values = split_negation(tree.children)
        statuses = to_ct_statuses([self.value(v) for v in values])
        return CtStatusMatch(statuses=statuses, negate=negate, span=span_of(tree, self.path))

    def limit_match(self, tree: Tree) -> Limit:
        """`limit rate [over] N/unit [burst M packets]`, nft's words and its default burst."""
        over = any(isinstance(c, Token) and c.type == "OVER" for c in tree.children)
        rate, unit, *burst = [c for c in tree.children if c.type not in ("OVER", "BURST")]
        span = span_of(tree, self.path)
        if str(unit) not in UNIT_SECONDS:
            raise ValueError_(f"unknown rate unit '{unit}'{suggest(str(unit), UNIT_SECONDS)}"
                              f" (second, minute, hour, day)", token_span(unit, self.path))
        if int(rate) == 0:
            raise ValueError_("a rate of 0 lets nothing through: use drop",
                              token_span(rate, self.path))
        if burst and str(burst[1]) != "packets":
            raise ValueError_(f"fwlab limits packets, not '{burst[1]}' (burst N packets)",
                              token_span(burst[1], self.path))
        count = int(burst[0]) if burst else 5
        if count == 0:
            raise ValueError_("a burst of 0 packets lets nothing through",
                              token_span(burst[0], self.path))
        return Limit(rate=int(rate), unit=str(unit), burst=count, over=over, span=span)


def mentions_ip6(match: Match) -> bool:
    """True for matches that only IPv6 packets can satisfy: NAT rules may not carry them."""
    if isinstance(match, AddrMatch | IcmpTypeMatch):
        return match.family == 6 and not match.negate
    return isinstance(match, ProtoMatch) and PROTOCOLS["icmpv6"] in match.protos


def rule_family(matches: tuple) -> int | None:
    """The one address family a rule's matches allow, or None when both may pass."""
    families = rule_families(matches)
    return next(iter(families)) if len(families) == 1 else None
