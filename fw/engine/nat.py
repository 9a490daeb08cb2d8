"""NAT44 in the engine, the way Linux does it on a conntrack entry.

A connection has an original tuple O (as its first packet arrived) and a reply tuple R (what
replies will look like). Without NAT, R is O reversed. NAT changes R: a masqueraded connection
expects replies to the outside address and port. Every packet is then translated to what the
other end expects: direction original to reverse(R), direction reply to reverse(O). The
destination changes before the filter chains (so `forward` sees where the packet really goes),
the source after them (so `forward` sees who really sent it) - `dnat` and `snat` as
rules-language.md says. ICMP errors are translated inside and out.

New connections pick their translation from the `nat` rules: `dnat` rules before the filter,
`snat`/`masquerade` rules after it; a mapping (nat_mappings.py) gives the outside port. A packet
to an outside address and port that a mapping's filtering behaviour lets in is `related` to that
mapping (as Linux treats packets an expectation was set up for) and reaches the inside endpoint.
A port-forwarded connection that goes back out the interface it came in on (a LAN host using the
public address: hairpinning) is also source-translated to the firewall, or the server's reply
would go straight to the client and never be translated back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from fw.core.fields import packet_values
from fw.core.protocols import ICMP, TCP, UDP
from fw.core.vocab import NatBehaviour
from fw.engine.checksum import FieldRewrite, rewrite_v4, rewrite_v4_icmp_inner
from fw.engine.classify import compile_chain
from fw.engine.conntrack import (
    ORIGINAL,
    RELATED,
    REPLY,
    Conn,
    ConnTable,
    CtVerdict,
    key_of,
    reverse,
)
from fw.engine.decision import NatChange
from fw.engine.nat_mappings import Mapping, MappingTable
from fw.engine.packet import Packet
from fw.engine.pools import Choice, PoolState
from fw.engine.routing import Routing
from fw.model import NatRule

PORT_MASK = 0xFFFF  # conntrack marks one end of an ICMP echo tuple above bit 16


@dataclass(slots=True, eq=False)
class Binding:
    """What NAT did to one connection: kept on Conn.nat for its later packets."""

    kind: str  # "snat", "dnat", "dnat+snat" (hairpin or forward + masquerade), "mapped"
    mapping: Mapping | None = None
    rule: NatRule | None = None
    outbound: int = ORIGINAL  # the direction that refreshes the mapping (REPLY when "mapped")
    plans: list = field(default_factory=lambda: [None, None])  # per direction, made lazily
    choice: Choice | None = None  # the pool member a `dnat to POOL` gave the connection


@dataclass(frozen=True, slots=True)
class Plan:
    """How every packet of one direction of a connection is rewritten: the destination step
    (before the filter), the source step (after it), and the change to report."""

    dst: FieldRewrite | None
    dst_fields: tuple[int, int]
    src: FieldRewrite | None
    change: NatChange


def make_plan(conn: Conn, direction: int, kind: str) -> Plan:
    """Compare this direction's own tuple with what its receiver expects (reverse of the other
    direction's tuple) once; the per-packet work is then two precomputed steps."""
    own = conn.orig if direction == ORIGINAL else conn.reply
    proto, src, sport, dst, dport = own
    _p, new_src, new_sport, new_dst, new_dport = reverse(
        conn.reply if direction == ORIGINAL else conn.orig)
    old = (src, sport & PORT_MASK, dst, dport & PORT_MASK)
    new = (new_src, new_sport & PORT_MASK, new_dst, new_dport & PORT_MASK)
    src_moves, dst_moves = old[:2] != new[:2], old[2:] != new[2:]
    if proto in (ICMP, 58):  # one echo id field (offset 4) for both ends: one step writes it
        src_port_at, dst_port_at = (4, None) if src_moves else (None, 4)
    else:
        src_port_at, dst_port_at = 0, 2
    dst_step = FieldRewrite(proto, "dst", old[2:], new[2:], dst_port_at) if dst_moves else None
    src_step = FieldRewrite(proto, "src", old[:2], new[:2], src_port_at) if src_moves else None
    change = NatChange(kind if direction == ORIGINAL else "reply", 4, old, new)
    return Plan(dst_step, new[2:], src_step, change)


class Nat:
    def __init__(self, rules: Sequence[NatRule], routing: Routing, ifaces: dict[str, int],
                 table: ConnTable, seed: int | None = None, hold: float = 0.0) -> None:
        self.routing = routing
        self.table = table
        self.mappings = MappingTable(seed, hold)
        self.pools: dict[tuple, PoolState] = {}  # (rule index, pool) -> its state
        self.exhausted = 0
        self.load_rules(rules, ifaces)

    def load_rules(self, rules: Sequence[NatRule], ifaces: dict[str, int]) -> None:
        """New rules (a reload); mappings and translated connections stay as they are."""
        self.ifaces = ifaces
        self.pool_of_rule: dict[int, PoolState] = {}  # id(rule) -> state, for these rules
        kept = {(r.index, r.pool) for r in rules if r.pool is not None}
        self.pools = {key: state for key, state in self.pools.items() if key in kept}
        self.loaded = bool(rules)  # Linux binds (null bindings too) only where NAT is in use
        self.dnat = compile_chain([r for r in rules if r.action == "dnat"], ifaces, any_rule)
        self.snat = compile_chain([r for r in rules if r.action != "dnat"], ifaces, any_rule)

    # -- before the filter chains ------------------------------------------------------------

    def before(self, pkt: Packet, ct: CtVerdict, iif: str | None, now: float) -> list[NatChange]:
        """Destination translation: a new connection's dnat, or a known one's reverse."""
        conn = ct.conn
        if conn is None or pkt.family != 4:
            return []
        if ct.pending:
            return self.new_destination(pkt, ct, iif, now)
        if conn.nat is None:
            return []
        if ct.state == RELATED:
            return self.translate_error(pkt, conn, ct.direction)
        return self.rewrite(pkt, conn, ct.direction, before=True)

    def new_destination(self, pkt: Packet, ct: CtVerdict, iif: str | None, now: float):
        rule = self.first(self.dnat, pkt, iif, None) or self.loopback(pkt, iif)
        if rule is not None and rule.pool is not None:
            return [self.balance(pkt, ct.conn, rule, now)]
        if rule is not None:
            target = (int(rule.to_addr), rule.to_ports.lo if rule.to_ports else pkt.dport)
            ct.conn.nat = Binding("dnat", rule=rule)
            return [self.set_destination(pkt, target, "dnat")]
        mapping = self.mappings.inbound(pkt.proto, (pkt.dst, endpoint_port(pkt, "dst")))
        if mapping is not None and mapping.permits((pkt.src, endpoint_port(pkt, "src"))):
            ct.state = RELATED
            ct.reason = f"allowed in by NAT mapping ({mapping.filtering})"
            ct.conn.nat = Binding("mapped", mapping=mapping, outbound=REPLY)
            mapping.conns.append(ct.conn)
            return [self.set_destination(pkt, mapping.inside, "mapped")]
        return []

    def balance(self, pkt: Packet, conn: Conn, rule: NatRule, now: float) -> NatChange:
        """A new connection to a pool: choose its member once; the Binding keeps it."""
        state = self.pool_state(rule)
        choice = state.choose(pkt.src, endpoint_port(pkt, "src"), now, self.table.contains)
        member = rule.pool.members[choice.member]
        conn.nat = Binding("dnat", rule=rule, choice=choice)
        target = (int(member.addr), rule.pool.port_of(member, pkt.dport))
        return self.set_destination(pkt, target, "dnat", choice.why)

    def pool_state(self, rule: NatRule) -> PoolState:
        """The pool's state; a reload keeps it when the rule keeps its place and its pool."""
        state = self.pool_of_rule.get(id(rule))
        if state is None:
            key = (rule.index, rule.pool)
            state = self.pools.get(key)
            if state is None:
                state = self.pools[key] = PoolState(rule.pool, rule, self.mappings.rng)
            self.pool_of_rule[id(rule)] = state
        return state

    def loopback(self, pkt: Packet, iif: str | None) -> NatRule | None:
        """Hairpinning (REQ-9): a packet to the firewall's address on another interface meets
        that interface's port forwards as if it had arrived there (NAT loopback), so
        `iif wan ... dnat` also serves LAN hosts that use the public address."""
        owner = self.routing.owner(4, pkt.dst)
        if owner is None or owner == iif:
            return None
        return self.first(self.dnat, pkt, owner, None)

    def set_destination(self, pkt: Packet, target: tuple[int, int], kind: str,
                        why: str = "") -> NatChange:
        before = snapshot(pkt)
        if pkt.sport >= 0:
            rewrite_v4(writable(pkt), pkt, dst=target[0], dport=target[1])
        else:
            rewrite_v4(writable(pkt), pkt, dst=target[0])
        return NatChange(kind, 4, before, snapshot(pkt), why)

    # -- after the filter chains -------------------------------------------------------------

    def after(self, pkt: Packet, ct: CtVerdict, iif, oif, now: float) -> list[NatChange] | None:
        """Source translation; None when no outside port is left (the packet is dropped)."""
        conn = ct.conn
        if conn is None or pkt.family != 4:
            return []
        if not ct.pending:
            if conn.nat is None or ct.state == RELATED:
                return []
            self.refresh(conn, ct.direction, now)
            return self.rewrite(pkt, conn, ct.direction, before=False)
        changes = self.new_source(pkt, conn, iif, oif, now)
        if changes == []:
            changes = self.unique_source(pkt, conn)
        if changes is not None:
            conn.reply = reverse(key_of(pkt))
            choice = conn.nat.choice if conn.nat is not None else None
            if choice is not None:
                choice.state.bound(choice, conn, conn.orig[1], now, self.table.contains)
        return changes

    def new_source(self, pkt: Packet, conn: Conn, iif, oif, now: float):
        rule = self.first(self.snat, pkt, iif, oif)
        hairpin = conn.nat is not None and conn.nat.kind == "dnat" and iif == oif
        if rule is None and not hairpin:
            return []
        address = self.source_address(rule, oif)
        if address is None:
            return []
        ports = (rule.to_ports.lo, rule.to_ports.hi) if rule and rule.to_ports else None
        mapping = self.mappings.allocate(
            pkt.proto, (pkt.src, endpoint_port(pkt, "src")), (pkt.dst, endpoint_port(pkt, "dst")),
            address, ports, rule.mapping if rule else NatBehaviour.ENDPOINT_INDEPENDENT,
            rule.filtering if rule else NatBehaviour.ADDRESS_PORT_DEPENDENT, now,
            self.forwarded_reply(pkt, address) if self.mappings.port_class else None)
        if mapping is None:
            self.exhausted += 1
            return None
        return [self.bind_source(pkt, conn, mapping, rule, now)]

    def unique_source(self, pkt: Packet, conn: Conn) -> list[NatChange]:
        """Linux's NAT gives every new connection a binding, a null one when no rule
        translates it; a null binding whose reply tuple is already some connection's gets
        another source port (get_unique_tuple), where without it the connection could not
        enter the table. Seen when a server answers a masqueraded host at its inside address."""
        if not self.loaded or pkt.proto not in (TCP, UDP):
            return []
        proto, src, sport, dst, dport = key_of(pkt)
        if not self.table.in_use(4, (proto, dst, dport, src, sport)):
            return []
        lo, hi = null_binding_range(sport)
        for _ in range(64):
            port = self.mappings.draw(lo, hi)
            if not self.table.in_use(4, (proto, dst, dport, src, port)):
                break
        else:
            return []  # the table refuses the connection, as before
        if conn.nat is None:
            conn.nat = Binding("snat")
        else:  # a port forward's connection: keep its rule
            conn.nat.kind = f"{conn.nat.kind}+snat"
        kind = conn.nat.kind
        before = snapshot(pkt)
        set_source(pkt, (src, port))
        return [NatChange(kind, 4, before, snapshot(pkt))]

    def forwarded_reply(self, pkt: Packet, address: int):
        """Whether a port forward would catch a new connection shaped like the reply to
        `address:port` (replay's shards send those to the forward's engine, so NAT with port
        classes leaves such ports alone)."""
        remote_port = endpoint_port(pkt, "dst")
        iif = self.routing.route(4, pkt.dst)

        def refused(port: int) -> bool:
            if pkt.proto not in (TCP, UDP):
                return False
            reply = replace(pkt, src=pkt.dst, dst=address, sport=remote_port, dport=port)
            return (self.first(self.dnat, reply, iif, None) or self.loopback(reply, iif)) \
                is not None
        return refused

    def source_address(self, rule: NatRule | None, oif: str | None) -> int | None:
        if rule is not None and rule.to_addr is not None:
            return int(rule.to_addr)
        return self.routing.address_of(oif, 4)

    def bind_source(self, pkt: Packet, conn: Conn, mapping: Mapping, rule, now: float):
        kind = "snat" if conn.nat is None else f"{conn.nat.kind}+snat"
        choice = conn.nat.choice if conn.nat is not None else None
        conn.nat = Binding(kind, mapping=mapping, rule=rule, choice=choice)
        mapping.conns.append(conn)
        self.mappings.outbound(mapping, (pkt.dst, endpoint_port(pkt, "dst")), now)
        before = snapshot(pkt)
        set_source(pkt, mapping.outside)
        return NatChange(kind, 4, before, snapshot(pkt))

    def refresh(self, conn: Conn, direction: int, now: float) -> None:
        """Outbound packets keep a mapping alive (REQ-6); inbound ones do not. (The remote end
        was recorded when the connection was bound: it cannot change.)"""
        binding = conn.nat
        if binding.mapping is not None and direction == binding.outbound:
            binding.mapping.last_out = now

    # -- packets of known connections --------------------------------------------------------

    def translate_known(self, pkt: Packet, conn: Conn, direction: int, now: float):
        """Both steps at once, for a packet whose verdict was remembered (no filter in between)."""
        binding = conn.nat  # refresh(), plan() and writable() inlined: the NAT hot path
        if binding.mapping is not None and direction == binding.outbound:
            binding.mapping.last_out = now
        plan = binding.plans[direction] or self.plan(conn, direction)
        dst, src = plan.dst, plan.src
        if dst is None and src is None:
            return None
        raw, l4 = pkt.raw, pkt.l4_offset
        end = min(len(raw), max(l4, 0) + 20)  # every byte NAT writes is in the first `end`
        head = bytearray(raw[:end])
        if dst is not None:
            dst.apply(head, l4)
        if src is not None:
            src.apply(head, l4)
        # the packet as bytes, copied once (the Decision's bytes(pkt.raw) is then no copy): a
        # bytearray of the whole, then bytes of it, cost two copies of a 64 KiB GSO packet
        pkt.raw = b"".join((head, memoryview(raw)[end:]))
        return plan.change

    @staticmethod
    def plan(conn: Conn, direction: int) -> Plan:
        plans = conn.nat.plans
        plan = plans[direction]
        if plan is None:
            plan = plans[direction] = make_plan(conn, direction, conn.nat.kind)
        return plan

    def rewrite(self, pkt: Packet, conn: Conn, direction: int, before: bool) -> list[NatChange]:
        """A packet of a translated connection: the destination step before the filter, the
        source step after it; the change is reported once, with the last step taken."""
        plan = self.plan(conn, direction)
        if before:
            if plan.dst is None:
                return []
            plan.dst.apply(writable(pkt), pkt.l4_offset)
            pkt.dst, port = plan.dst_fields  # the filter chains must see the new destination
            if pkt.sport >= 0:
                pkt.dport = port
            return [plan.change] if plan.src is None else []
        if plan.src is None:
            return []
        plan.src.apply(writable(pkt), pkt.l4_offset)
        return [plan.change]

    def translate_error(self, pkt: Packet, conn: Conn, direction: int) -> list[NatChange]:
        """An ICMP error about a translated connection: the quoted packet becomes the one its
        receiver sent, and the error is addressed to that receiver (RFC 5508)."""
        if conn.nat is None or pkt.inner is None:
            return []
        sent = conn.orig if direction != ORIGINAL else conn.reply
        _proto, src, sport, dst, dport = sent
        before = snapshot(pkt)
        inner = pkt.inner
        outer_src = dst if pkt.src == inner.dst else None
        rewrite_v4(writable(pkt), pkt, dst=src, src=outer_src)
        if inner.icmp_id >= 0:
            rewrite_v4_icmp_inner(pkt.raw, pkt, src=src, dst=dst, icmp_id=sport & PORT_MASK)
        elif inner.sport >= 0:
            rewrite_v4_icmp_inner(pkt.raw, pkt, src=src, dst=dst, sport=sport, dport=dport)
        else:
            rewrite_v4_icmp_inner(pkt.raw, pkt, src=src, dst=dst)
        return [NatChange("icmp-error", 4, before, snapshot(pkt))]

    # -- rules, timers, views ----------------------------------------------------------------

    def first(self, chain, pkt: Packet, iif: str | None, oif: str | None) -> NatRule | None:
        if not chain.rules:
            return None
        values = packet_values(pkt, self.ifaces.get(iif or "", -1),
                               self.ifaces.get(oif or "", -1), None)
        return chain.first_decider(chain.matching(values))

    def expire(self, now: float) -> int:
        for state in self.pools.values():
            state.expire(now, self.table.contains)
        return self.mappings.expire(now, self.table.contains)

    def next_expiry(self) -> float | None:
        times = [self.mappings.next_expiry(), *(p.next_expiry() for p in self.pools.values())]
        return min((t for t in times if t is not None), default=None)


def any_rule(_rule: object) -> bool:
    return True


def endpoint_port(pkt: Packet, side: str) -> int:
    """The port of one end, or the echo identifier for ICMP echo (NAT maps both alike)."""
    if pkt.proto in (TCP, UDP):
        return pkt.sport if side == "src" else pkt.dport
    return pkt.icmp_id if pkt.icmp_id >= 0 else 0


def writable(pkt: Packet) -> bytearray:
    """The packet's own buffer, copied once into a bytearray that NAT may rewrite in place."""
    if not isinstance(pkt.raw, bytearray):
        pkt.raw = bytearray(pkt.raw)
    return pkt.raw


def null_binding_range(port: int) -> tuple[int, int]:
    """The ports Linux draws from for a source port it must change without a range
    (nf_nat_l4proto_unique_tuple): below 512, 600-1023 or 1024 and up, as the port was."""
    if port < 512:
        return 1, 511
    return (600, 1023) if port < 1024 else (1024, 65535)


def set_source(pkt: Packet, endpoint: tuple[int, int]) -> None:
    address, port = endpoint
    if pkt.proto in (TCP, UDP):
        rewrite_v4(writable(pkt), pkt, src=address, sport=port)
    elif pkt.proto == ICMP and pkt.icmp_id >= 0:
        rewrite_v4(writable(pkt), pkt, src=address, icmp_id=port)
    else:
        rewrite_v4(writable(pkt), pkt, src=address)


def snapshot(pkt: Packet) -> tuple[int, int, int, int]:
    return (pkt.src, endpoint_port(pkt, "src"), pkt.dst, endpoint_port(pkt, "dst"))
