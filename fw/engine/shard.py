"""Which of several engines judges a packet: flows sharded by port class (`replay --workers`).

Every packet of a connection must reach the engine that holds it, in both directions and after
NAT changed its tuple, and the result must not depend on how many engines there are. So a flow
is given one of CLASSES port classes (port mod CLASSES), and a worker owns whole classes
(class mod workers). A flow's class is its initiator's port, remembered under the flow's tuple
for both directions. A packet to one of the firewall's outside addresses (its own, or a `snat
to` address) that no port forward takes is a NAT reply or a new connection to the firewall: its
class is its destination port, which NAT chose in the class of the connection it maps
(MappingTable.port_class; each class also has its own random generator, so NAT's choices are
the same whichever process makes them). A new flow meets the port forwards here as in the
engine (the same NAT rules), so the reply from the inside server, a tuple never seen before, is
known in advance. Later fragments go where their first fragment went; an ICMP error goes where
the flow it quotes lives. Packets that can touch no connection (malformed, not IP, neighbour
discovery) go to class 0.

What needs state shared by all flows cannot be sharded: rate limits and pools make
`one_engine_only` say why, and the caller then runs one engine. See docs/engine.md.
"""

from __future__ import annotations

from dataclasses import replace

from fw.core.protocols import ICMP, ICMPV6, TCP, UDP, UNTRACKED_ICMPV6
from fw.engine.fragments import FRAGMENT_TIMEOUT, fragment_key
from fw.engine.packet import Packet, decode
from fw.model import CHAINS, PortMatch, RuleSet

CLASSES = 16  # port classes; so at most 16 workers. Each keeps 1/16 of a NAT port range.
PURGE_EVERY = 65_536  # remembered first fragments: look for stale ones this often


def one_engine_only(ruleset: RuleSet) -> str | None:
    """Why this rule set cannot be sharded (state shared by all flows), or None. Asked of the
    rules, not of an engine: a reload checks its new rules before any engine runs them."""
    if any(rule.limit is not None for chain in CHAINS for rule in ruleset.chains[chain]):
        return "its rules have rate limits, which count all flows together"
    if any(rule.pool is not None for rule in ruleset.nat):
        return "its port forwards to pools balance all flows together"
    if any(rule.action == "dnat" and not any(isinstance(m, PortMatch) and m.kind == "dport"
                                             and not m.negate for m in rule.matches)
           for rule in ruleset.nat):
        return "a port forward names no destination port (its packets look like NAT replies)"
    return None


class Sharder:
    """Gives each packet of a capture, in capture order, its flow's port class."""

    def __init__(self, engine) -> None:
        self.routing = engine.routing
        self.nat = engine.nat
        self.outside = {int(r.to_addr) for r in engine.ruleset.nat
                        if r.action == "snat" and r.to_addr is not None}
        self.flows: dict[tuple, int] = {}
        self.fragments: dict[tuple, tuple[int, float]] = {}
        self.seen = 0

    def port_class(self, data: bytes, now: float) -> int:
        pkt = decode(data)
        if pkt.frag_offset:
            found = self.fragments.get(fragment_key(pkt))
            return found[0] if found is not None and found[1] > now else 0
        if pkt.invalid is not None or not pkt.family:
            return 0
        if pkt.inner is not None and pkt.is_icmp_error:
            return self.quoted_class(pkt.inner)
        if pkt.proto == ICMPV6 and pkt.icmp_type in UNTRACKED_ICMPV6:
            return 0
        shard = self.flow_class(pkt, now)
        if pkt.more_fragments:
            self.remember_fragment(pkt, shard, now)
        return shard

    def flow_class(self, pkt: Packet, now: float) -> int:
        key = flow_key(pkt)
        if key is None:
            return 0
        known = self.flows.get(key)
        if known is not None:
            return known
        sport, dport = ports(pkt)
        target = self.forwarded_to(pkt)
        if target is not None:  # its reply comes from the target: a tuple to know already.
            # If a connection of another class already travels on it, the new one must meet it
            # (NAT then gives the newcomer another port, as Linux does): it takes that class.
            reply = flow_key_of(pkt.proto, pkt.src, sport, *target)
            shard = self.flows.setdefault(reply, sport % CLASSES)
            self.flows[key] = shard
            return shard
        if self.is_outside(pkt.family, pkt.dst):  # a NAT reply: NAT chose the port in
            shard = self.flows[key] = dport % CLASSES  # its connection's class
            return shard
        inside = dport if self.source_nat(reversed_packet(pkt)) and not self.source_nat(pkt) \
            else sport
        shard = self.flows[key] = inside % CLASSES
        return shard

    def source_nat(self, pkt: Packet) -> bool:
        """Would a connection opened by this packet have its source translated? Then its
        class is its source port, whichever side spoke first: every connection from that
        inside endpoint, which may share one NAT mapping, is judged by one engine."""
        if pkt.family != 4:
            return False
        route = self.routing.route
        return self.nat.first(self.nat.snat, pkt, route(4, pkt.src), route(4, pkt.dst)) \
            is not None

    def quoted_class(self, inner: Packet) -> int:
        """An ICMP error belongs where the flow of the packet it quotes lives."""
        key = flow_key(inner)
        if key is None:
            return 0
        known = self.flows.get(key)
        if known is not None:
            return known
        sport, dport = ports(inner)
        if self.is_outside(inner.family, inner.src):
            return sport % CLASSES  # a packet NAT sent from the port it chose
        if self.is_outside(inner.family, inner.dst):
            return dport % CLASSES
        return 0  # no connection of ours sent it: judged alike anywhere

    def is_outside(self, family: int, addr: int) -> bool:
        return self.routing.is_local(family, addr) or (family == 4 and addr in self.outside)

    def forwarded_to(self, pkt: Packet) -> tuple[int, int] | None:
        """Where a port forward would send this new connection, as Nat.new_destination."""
        if pkt.family != 4:
            return None
        nat = self.nat
        iif = self.routing.route(4, pkt.src)
        rule = nat.first(nat.dnat, pkt, iif, None) or nat.loopback(pkt, iif)
        if rule is None or rule.to_addr is None:  # a pool's member: one engine only, above
            return None
        return int(rule.to_addr), rule.to_ports.lo if rule.to_ports else ports(pkt)[1]

    def remember_fragment(self, pkt: Packet, shard: int, now: float) -> None:
        self.fragments[fragment_key(pkt)] = (shard, now + FRAGMENT_TIMEOUT)
        self.seen += 1
        if self.seen % PURGE_EVERY == 0:
            self.fragments = {k: v for k, v in self.fragments.items() if v[1] > now}


def reversed_packet(pkt: Packet) -> Packet:
    return replace(pkt, src=pkt.dst, dst=pkt.src, sport=pkt.dport, dport=pkt.sport)


def ports(pkt: Packet) -> tuple[int, int]:
    """Source and destination port; an ICMP query's identifier stands for both."""
    if pkt.proto in (TCP, UDP):
        return pkt.sport, pkt.dport
    return pkt.icmp_id, pkt.icmp_id


def flow_key(pkt: Packet) -> tuple | None:
    if pkt.proto in (TCP, UDP) and pkt.sport >= 0:
        return flow_key_of(pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport)
    if pkt.proto in (ICMP, ICMPV6) and pkt.icmp_id >= 0:
        return flow_key_of(pkt.proto, pkt.src, pkt.icmp_id, pkt.dst, pkt.icmp_id)
    return None


def flow_key_of(proto: int, a: int, aport: int, b: int, bport: int) -> tuple:
    """The same key for both directions of a tuple."""
    return (proto, a, aport, b, bport) if (a, aport) <= (b, bport) else (proto, b, bport, a, aport)
