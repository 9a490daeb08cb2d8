"""Match parts of a rule (the `iif lan`, `tcp dport 80` words) to model matches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from lark import Token, Tree

from fw.core.protocols import PROTOCOLS, TCP_FLAGS
from fw.dsl.spans import span_of, token_span
from fw.dsl.values import (
    ValueError_,
    suggest,
    to_ct_states,
    to_icmp_types,
    to_names,
    to_port_ranges,
    to_prefixes,
    to_protocols,
)
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

    def build(self, tree: Tree) -> Iterator[Match]:
        if tree.data == "port_match":
            yield from self.port_match(tree)
        else:
            yield getattr(self, tree.data)(tree)

    def value(self, node: Tree | Token):
        return self.builder.resolve(node, self.path)

    def iface_match(self, tree: Tree) -> IfaceMatch:
        negate, (kind, value) = split_negation(tree.children)
        names = to_names(self.value(value), "an interface name")
        return IfaceMatch(kind=str(kind), names=names, negate=negate, span=span_of(tree, self.path))

    def addr_match(self, tree: Tree) -> AddrMatch:
        negate, (family, field, value) = split_negation(tree.children)
        version = 6 if family == "ip6" else 4
        prefixes = to_prefixes(self.value(value), version)
        return AddrMatch(kind=str(field), family=version, prefixes=prefixes, negate=negate,
                         span=span_of(tree, self.path))

    def proto_match(self, tree: Tree) -> ProtoMatch:
        negate, (value,) = split_negation(tree.children)
        protos = to_protocols(self.value(value))
        return ProtoMatch(protos=protos, negate=negate, span=span_of(tree, self.path))

    def port_match(self, tree: Tree) -> Iterator[PortMatch]:
        proto = PROTOCOLS[str(tree.children[0])]
        for test in tree.children[1:]:
            negate, (field, value) = split_negation(test.children)
            ranges = to_port_ranges(self.value(value))
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
        types = to_icmp_types(self.value(value), version)
        return IcmpTypeMatch(family=version, types=types, negate=negate,
                             span=span_of(tree, self.path))

    def ct_match(self, tree: Tree) -> CtStateMatch:
        negate, values = split_negation(tree.children)
        states = to_ct_states([self.value(v) for v in values])
        return CtStateMatch(states=states, negate=negate, span=span_of(tree, self.path))


def mentions_ip6(match: Match) -> bool:
    """True for matches that only IPv6 packets can satisfy: NAT rules may not carry them."""
    if isinstance(match, AddrMatch | IcmpTypeMatch):
        return match.family == 6 and not match.negate
    return isinstance(match, ProtoMatch) and PROTOCOLS["icmpv6"] in match.protos
