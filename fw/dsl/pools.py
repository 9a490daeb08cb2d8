"""`dnat to POOL`: the load-balancing pool of a nat rule, read and checked.

    dnat to { 192.0.2.10, 192.0.2.11:8080 weight 2 }:80 hash sticky 30 seconds
    dnat to $backends:8080 source-hash

The grammar gives the shape; the checks (an empty pool, a member twice, weight 0, one method,
one `sticky`) are made here, where the message can name the member.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, ip_address
from typing import TYPE_CHECKING

from lark import Token, Tree

from fw.dsl.diagnostics import Diagnostic
from fw.dsl.spans import span_of, token_span
from fw.dsl.values import Atom, ValueError_, to_port_range
from fw.errors import Span
from fw.model import Pool, PoolMember, RuleSet

if TYPE_CHECKING:
    from fw.dsl.build import Builder

MAX_WEIGHT = 1000
MAX_STICKY = 86_400 * 7  # a week: stickiness is for sessions, not for ever


class PoolBuilder:
    def __init__(self, builder: Builder, path: str) -> None:
        self.builder = builder
        self.path = path

    def target(self, tree: Tree) -> tuple[Pool | None, IPv4Address | None, int | None]:
        """(pool, None, None), or (None, address, port) for `dnat to $one_address[:PORT]`."""
        head, *rest = tree.children
        methods = [c for c in rest if isinstance(c, Token) and c.type == "POOL_METHOD"]
        stickies = [c for c in rest if isinstance(c, Tree)]
        port_atoms = [c for c in rest if isinstance(c, Token) and c.type != "POOL_METHOD"]
        port = self.port(port_atoms[0]) if port_atoms else None
        members = self.members(head)
        if isinstance(head, Token) and len(members) == 1 and not (methods or stickies):
            return None, members[0].addr, port  # `dnat to $web`: one address, no balancing
        self.check_members(members, span_of(tree, self.path))
        pool = Pool(members=members, port=port, method=self.method(methods),
                    sticky=self.sticky(stickies))
        return pool, None, None

    # -- members -----------------------------------------------------------------------------

    def members(self, head: Tree | Token) -> tuple[PoolMember, ...]:
        if isinstance(head, Token):  # $name: a define of addresses (no ports or weights)
            value = self.builder.lookup(head, self.path)
            return tuple(self.member(a, None, None, value.define) for a in value.atoms)
        return tuple(self.member_of(m) for m in head.children)

    def member_of(self, tree: Tree) -> PoolMember:
        tokens = list(tree.children)
        address = self.builder.atom(tokens.pop(0), self.path)
        weight = tokens[-1] if len(tokens) >= 2 and tokens[-2].type == "WEIGHT" else None
        port = tokens[0] if tokens and tokens[0].type != "WEIGHT" else None
        return self.member(address, port, weight, None)

    def member(self, atom: Atom, port: Token | None, weight: Token | None,
               define: str | None) -> PoolMember:
        where = f" (from ${define})" if define else ""
        if atom.kind != "address" or "/" in atom.text:
            raise ValueError_(f"'{atom.text}' is not an address to balance to{where}", atom.span)
        try:
            addr = ip_address(atom.text)
        except ValueError:
            raise ValueError_(f"'{atom.text}' is not an IP address{where}", atom.span) from None
        if not isinstance(addr, IPv4Address):
            raise ValueError_("NAT is IPv4 only (NAT44): a pool holds IPv4 addresses", atom.span)
        return PoolMember(addr=addr, port=self.port(port) if port is not None else None,
                          weight=self.weight(weight) if weight is not None else 1, span=atom.span)

    def port(self, token: Token) -> int:
        atom = self.builder.single_atom(token, self.path)  # a literal or a `$name` of one port
        ports = to_port_range(atom)
        if ports.lo != ports.hi:
            raise ValueError_("dnat translates to one port, not a range", atom.span)
        return ports.lo

    def weight(self, token: Token) -> int:
        weight, span = int(token), token_span(token, self.path)
        if weight == 0:
            raise ValueError_("a weight of 0 never chooses the member; leave it out instead", span)
        if weight > MAX_WEIGHT:
            raise ValueError_(f"weight {weight} is more than {MAX_WEIGHT}", span)
        return weight

    def check_members(self, members: tuple[PoolMember, ...], span: Span) -> None:
        if not members:
            raise ValueError_("the pool is empty", span)
        seen: dict[tuple, PoolMember] = {}
        for member in members:
            key = (member.addr, member.port)
            if key in seen:
                end = f":{member.port}" if member.port is not None else ""
                raise ValueError_(f"'{member.addr}{end}' is in the pool twice (weight says how "
                                  "often a member is chosen)", member.span or span)
            seen[key] = member

    # -- method and stickiness ---------------------------------------------------------------

    def method(self, methods: list[Token]) -> str:
        if len(methods) > 1:
            raise ValueError_(f"a pool has one method ('{methods[0]}' and '{methods[1]}' given)",
                              token_span(methods[1], self.path))
        return str(methods[0]) if methods else "round-robin"

    def sticky(self, trees: list[Tree]) -> int | None:
        if not trees:
            return None
        if len(trees) > 1:
            raise ValueError_("'sticky' is given twice", span_of(trees[1], self.path))
        token = trees[0].children[0]
        seconds = int(token)
        if not 0 < seconds <= MAX_STICKY:
            raise ValueError_(f"sticky {seconds} seconds: use 1 to {MAX_STICKY:,}",
                              token_span(token, self.path))
        return seconds


def pool_port_given(pool: Pool) -> bool:
    """Does the pool change the destination port (so the rule must match one)?"""
    return pool.port is not None or any(m.port is not None for m in pool.members)


def outside_segments(ruleset: RuleSet, networks: Iterable[IPv4Network]) -> list[Diagnostic]:
    """A warning for each pool member on none of the firewall's networks: the firewall would
    route it somewhere, but a backend is expected on a segment of the topology."""
    nets = [n for n in networks if n.version == 4]
    found = []
    for rule in ruleset.nat:
        for member in rule.pool.members if rule.pool is not None else ():
            if not any(member.addr in net for net in nets):
                found.append(Diagnostic(
                    "warning", f"pool member {member.addr} is on none of the topology's "
                    "segments", member.span or rule.span))
    return found
