"""Exposure: which unsolicited packets from the outside reach a host on the inside.

The question (docs/design.md, "Exposure"): for a rule set, the set of (protocol, inside address,
destination port) that some packet belonging to no connection an inside host opened is let
through to, with what its sender must do (source addresses, source ports). Computed
symbolically, never packet by packet:

1. The unsolicited packets are a handful of boxes (space.py) per family: TCP, UDP, ICMP, arriving
   on the outside interface from any source. In stateful mode each box also fixes the connection
   state the engine gives such a packet with an empty table: a TCP segment is `new` when SYN is
   set and ACK, RST and FIN are clear, or (picked up in the middle, as Linux's default
   nf_conntrack_tcp_loose) ACK is set and SYN, RST and FIN are clear, `invalid` otherwise;
   UDP is `new`; an ICMP query (echo, timestamp, information, address mask request) is
   `new`, every other ICMP type `invalid` (an error quoting no known connection included).
   Stateless: no state (the field is missing, as for the engine).
2. DNAT (stateful files only, NAT44: IPv4 only) is a first-match walk over the `dnat` rules of
   the `new` boxes, before routing (no `oif` yet); a box a `dnat` rule decides gets that rule's
   address (and port), remembering the destination it had. What no `dnat` rule takes keeps its
   destination. Only destinations routed to the inside, and not the firewall's own or
   multicast (those go to `input`), are forwarded to the inside.
3. The `forward` chain is a first-match walk over those boxes (iif outside, oif the inside's
   interface); its policy takes the rest. What `accept` decides is the exposure.
4. Reports are projections of the accepted boxes on the asked questions, per class.

Not counted: IPv6 neighbour discovery and MLD (ICMPv6 130-137, 143), which the engine never
filters (link-layer control, like ARP) and which never crosses a router; mappings that an inside
host's own traffic created in the NAT (they are not unsolicited).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from fw import craft
from fw.analysis import bdd, space
from fw.analysis.exposure_after import opened_boxes, state_after
from fw.analysis.space import TAG, Box, RuleBox
from fw.core import ranges
from fw.core.fields import (
    CT_STATE_ID,
    MISSING,
    F,
    accepted_values,
    decode_low,
    field_list,
    interface_ids,
    network_range,
    packet_values,
)
from fw.core.fields import addr_domain as _addr_pair
from fw.core.fields import port_domain as _port_pair
from fw.core.protocols import (
    ACK,
    ADDRESS_BITS,
    EPHEMERAL,
    ICMP,
    ICMP_OF_FAMILY,
    ICMPV6,
    LINK_CONTROL_ICMPV6,
    MULTICAST,
    QUERY_REPLY,
    SYN,
    TCP,
    UDP,
    opens_tcp_connection,
)
from fw.core.ranges import Ranges
from fw.core.vocab import CT_STATUS_BITS, CtState, CtStatus
from fw.engine.routing import Routing, default_routing
from fw.errors import FwlabError
from fw.model import Match, NatRule, Rule, RuleSet

CLASSES = ("tcp_syn", "tcp_any", "udp", "icmp")
NEW, INVALID = CT_STATE_ID[CtState.NEW], CT_STATE_ID[CtState.INVALID]

# a SYN the table accepts as the start of a connection (the engine's own test)
NEW_TCP_FLAGS = ranges.norm((f, f) for f in range(256) if opens_tcp_connection(f))
SYN_NO_ACK = ranges.norm((f, f) for f in range(256) if f & SYN and not f & ACK)
ALL_FLAGS = ((0, 255),)
NONE = ranges.point(MISSING)

SAMPLE_SENDER = {4: "198.51.100.66", 6: "2001:db8:ffff::66"}


class ExposureError(FwlabError):
    """The question cannot be asked: unknown interface, bad prefix."""


# -- encodings (fw/core/fields.py's, as one-range sets) ---------------------------------------

def addr_domain(family: int) -> Ranges:
    return (_addr_pair(family),)


def port_domain(proto: int) -> Ranges:
    return (_port_pair(proto),)


def family_of(box: Box) -> int:
    return box[F["daddr"]][0][0] >> 128


# -- the question ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Sides:
    """Outside interface, and the inside as destination addresses per outgoing interface."""

    outside: str
    inside: str
    by_oif: dict[str, Ranges]  # oif -> encoded destination addresses (forwarded ones only)
    excluded: Ranges  # the firewall's own addresses and multicast inside the inside's prefixes


def routed_sets(routing: Routing) -> dict[str, Ranges]:
    """Encoded addresses each interface's routes get, longest prefix first."""
    assigned: dict[int, Ranges] = {4: (), 6: ()}
    out: dict[str, Ranges] = {}
    for route in routing.routes:
        size = 1 << (ADDRESS_BITS[route.family] - route.prefixlen)
        lo = route.family << 128 | route.network
        whole = ((lo, lo + size - 1),)
        part = ranges.sub(whole, assigned[route.family])
        out[route.iface] = ranges.union(out.get(route.iface, ()), part)
        assigned[route.family] = ranges.union(assigned[route.family], whole)
    return out


def not_forwarded(routing: Routing) -> Ranges:
    local = [(f << 128 | a, f << 128 | a) for addrs in routing.addresses.values() for f, a in addrs]
    multi = [network_range(ipaddress.ip_network(n)) for nets in MULTICAST.values() for n in nets]
    return ranges.norm(local + multi)


def sides(routing: Routing, inside: str | None = None, outside: str | None = None) -> Sides:
    names = routing.interfaces
    outside = outside or "wan"
    if outside not in names:
        raise ExposureError(f"--outside {outside}: the firewall has no such interface "
                            f"(it has {', '.join(names)})")
    inside = inside or "lan"
    routed = routed_sets(routing)
    if inside in names:
        wanted: Ranges = routed.get(inside, ())
    else:
        try:
            net = ipaddress.ip_network(inside, strict=False)
        except ValueError:
            raise ExposureError(f"--inside {inside}: neither an interface of the firewall "
                                f"({', '.join(names)}) nor an address prefix") from None
        wanted = (network_range(net),)
    excluded = not_forwarded(routing)
    by_oif = {}
    for iface, addrs in routed.items():
        part = ranges.sub(ranges.inter(addrs, wanted), excluded)
        if part:
            by_oif[iface] = part
    if not by_oif:
        raise ExposureError(f"--inside {inside}: no address of it is routed through the firewall")
    return Sides(outside, inside, by_oif, ranges.inter(excluded, wanted))


# -- rules as boxes --------------------------------------------------------------------------

def rule_box(matches: Sequence[Match], ifaces: dict[str, int]) -> RuleBox | None:
    """The rule's matches as one box (tested fields only); None when it can match nothing."""
    per: dict[int, Ranges] = {}
    for match in matches:
        name, values = accepted_values(match, ifaces)
        i = F[name]
        held = tuple(values.ranges())
        per[i] = ranges.inter(per[i], held) if i in per else held
        if not per[i]:
            return None
    return tuple(sorted(per.items(), key=lambda item: SPLIT_ORDER.index(item[0])))


# the order box differences split in: small fields first, so the big pieces stay few
SPLIT_ORDER = [F[n] for n in ("iif", "oif", "proto", "ct_state", "ct_status", "tcp_flags",
                              "icmp_type", "dport", "sport", "saddr", "daddr")]


# -- the unsolicited packets -----------------------------------------------------------------

def unsolicited(stateful: bool, family: int, iif: int, daddr: Ranges) -> list[Box]:
    """Every packet from the outside that belongs to no connection, as boxes."""
    base = dict(iif=ranges.point(iif), oif=NONE, saddr=addr_domain(family), daddr=daddr)
    none = dict(sport=NONE, dport=NONE, tcp_flags=NONE, icmp_type=NONE)
    boxes = []

    def add(proto: int, ct: int, **fields: Ranges) -> None:
        values = {**base, **none, "proto": ranges.point(proto), **fields,
                  "ct_state": ranges.point(ct if stateful else MISSING),
                  "ct_status": ranges.point(0 if stateful else MISSING)}
        boxes.append(space.make_box(**values))

    for proto in (TCP, UDP):
        ports = dict(sport=port_domain(proto), dport=port_domain(proto))
        if proto == UDP:
            add(UDP, NEW, **ports)
        elif stateful:
            add(TCP, NEW, **ports, tcp_flags=NEW_TCP_FLAGS)
            add(TCP, INVALID, **ports, tcp_flags=ranges.sub(ALL_FLAGS, NEW_TCP_FLAGS))
        else:
            add(TCP, MISSING, **ports, tcp_flags=ALL_FLAGS)
    proto = ICMP_OF_FAMILY[family]
    types = ((proto << 8, proto << 8 | 255),)
    if family == 6:
        types = ranges.sub(types, ranges.norm((proto << 8 | t,) * 2 for t in LINK_CONTROL_ICMPV6))
    echo = ranges.norm((proto << 8 | t,) * 2 for t in QUERY_REPLY[family])
    if stateful:
        add(proto, NEW, icmp_type=echo)
        add(proto, INVALID, icmp_type=ranges.sub(types, echo))
    else:
        add(proto, MISSING, icmp_type=types)
    return boxes


# -- the analysis ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Forwarded:
    """A tag on a box that a `dnat` rule translated: where the packets were addressed first."""

    nat: int  # index into Exposure.forwards
    daddr: Ranges
    dport: Ranges


@dataclass
class Exposure:
    """The accepted region (boxes in forwarded coordinates, tagged when a dnat rule translated
    them) and what it answers."""

    ruleset: RuleSet
    routing: Routing
    sides: Sides
    ifaces: dict[str, int]
    regions: list[bdd.Region]  # the accepted packets, as the walk left them
    forwards: list[NatRule]
    after: tuple[str, ...] = ()  # packets an inside host sent first (--after)
    _classes: dict[str, ClassExposure] | None = field(default=None, repr=False)
    _accepted: list[Box] | None = field(default=None, repr=False)

    @property
    def accepted(self) -> list[Box]:
        """The accepted region as boxes (tagged when a dnat rule translated them): what single
        packets are looked up in. The reports project the BDDs instead (`project`)."""
        if self._accepted is None:
            self._accepted = [box for region in self.regions for box in region.boxes()]
        return self._accepted

    @property
    def mode(self) -> str:
        return self.ruleset.mode

    def classes(self) -> dict[str, ClassExposure]:
        if self._classes is None:
            self._classes = {name: project(self, name) for name in CLASSES}
        return self._classes

    def __getitem__(self, name: str) -> ClassExposure:
        return self.classes()[name]

    # -- single packets (tests, witnesses for live probes) ---------------------------------

    def point(self, probe: Probe) -> list[int]:
        """The probe as field values before NAT, as the forward chain would see them if not
        translated (oif is left out of membership: it follows from the destination)."""
        values = packet_values(ProbeFields.of(probe), self.ifaces[self.sides.outside], MISSING,
                               self.unsolicited_state(probe),
                               0 if self.ruleset.stateful else MISSING)
        return field_list(values)

    def unsolicited_state(self, probe: Probe) -> CtState | None:
        """The ct state the engine gives this packet with an empty table (None: stateless)."""
        if not self.ruleset.stateful:
            return None
        if probe.proto == TCP:
            opens = opens_tcp_connection(probe.flags)
        else:
            opens = probe.proto == UDP or probe.icmp_type in QUERY_REPLY[probe.family]
        return CtState.NEW if opens else CtState.INVALID

    def accepts(self, probe: Probe) -> bool:
        """Does the analysis say this unsolicited packet from the outside gets in?"""
        values = self.point(probe)
        for box in self.accepted:
            tag = box[TAG]
            checks = [i for i in range(TAG) if i != F["oif"]]
            if tag is not None:
                if not (ranges.contains(tag.daddr, values[F["daddr"]])
                        and ranges.contains(tag.dport, values[F["dport"]])):
                    continue
                # translated: the destination was the tag's, and the connection is dnat'd
                checks = [i for i in checks if i not in (F["daddr"], F["dport"], F["ct_status"])]
            if all(ranges.contains(box[i], values[i]) for i in checks):
                return True
        return False

    def witness(self, name: str, family: int, address: str | int, port: int) -> Probe | None:
        """An unsolicited packet of the class that reaches (address, port) — `port` is the ICMP
        type for `icmp` — or None when none does."""
        addr = family << 128 | int(ipaddress.ip_address(address))
        for box in self.accepted:
            part = space.intersect(box, CLASS_FILTER[name])
            if part is None or family_of(part) != family:
                continue
            proto = part[F["proto"]][0][0]
            key = F["icmp_type"] if name == "icmp" else F["dport"]
            value = proto << 8 | port if name == "icmp" else proto << 16 | port
            if not (ranges.contains(part[F["daddr"]], addr) and ranges.contains(part[key], value)):
                continue
            return self._probe(part, proto, addr, value)
        return None

    def _probe(self, part: Box, proto: int, daddr: int, dport: int) -> Probe:
        fam = daddr >> 128
        low = (1 << ADDRESS_BITS[fam]) - 1
        tag = part[TAG]
        if tag is not None:
            own = [fam << 128 | a for f, a in self.routing.addresses.get(self.sides.outside, ())
                   if f == fam]
            daddr = next((a for a in own if ranges.contains(tag.daddr, a)), tag.daddr[0][0])
            if tag.dport != NONE:
                dport = tag.dport[0][0]
        sample = fam << 128 | int(ipaddress.ip_address(SAMPLE_SENDER[fam]))
        saddr = part[F["saddr"]]
        src = sample if ranges.contains(saddr, sample) else saddr[0][0]
        ports = proto in (TCP, UDP)
        return Probe(
            family=fam, proto=proto,
            src=str(ipaddress.ip_address(src & low)), dst=str(ipaddress.ip_address(daddr & low)),
            sport=part[F["sport"]][0][0] & 0xFFFF if ports else 0,
            dport=dport & 0xFFFF if ports else 0,
            flags=part[F["tcp_flags"]][0][0] if proto == TCP else 0,
            icmp_type=(part[F["icmp_type"]][0][0] & 0xFF) if not ports else -1,
        )


@dataclass(frozen=True)
class ProbeFields:
    """A probe as fw.core.fields.packet_values reads a packet (addresses as ints)."""

    family: int
    src: int
    dst: int
    proto: int
    sport: int
    dport: int
    tcp_flags: int
    icmp_type: int
    l4_offset: int = 0

    @classmethod
    def of(cls, probe: Probe) -> ProbeFields:
        ports = probe.proto in (TCP, UDP)
        return cls(probe.family, int(ipaddress.ip_address(probe.src)),
                   int(ipaddress.ip_address(probe.dst)), probe.proto,
                   probe.sport if ports else -1, probe.dport if ports else -1, probe.flags,
                   probe.icmp_type if probe.proto in (ICMP, ICMPV6) else -1)


@dataclass(frozen=True)
class Probe:
    """One unsolicited packet, before NAT: what a sender on the outside sends."""

    family: int
    proto: int
    src: str
    dst: str
    sport: int = 0
    dport: int = 0
    flags: int = 0
    icmp_type: int = -1

    def packet(self) -> bytes:
        """The packet as bytes (fw.craft); ICMP errors quote a packet from dst to src, as a
        forged error would."""
        if self.proto == TCP:
            return craft.tcp(self.src, self.dst, self.sport, self.dport, self.flags)
        if self.proto == UDP:
            return craft.udp(self.src, self.dst, self.sport, self.dport)
        if self.icmp_type in (8, 128, 0, 129):
            return craft.icmp(self.src, self.dst, self.icmp_type, 0, b"", 0x1234 << 16 | 1)
        quoted = craft.udp(self.dst, self.src, 40000, 53)
        return craft.icmp(self.src, self.dst, self.icmp_type, 0, quoted[:48])


def analyse(ruleset: RuleSet, routing: Routing | None = None, *, inside: str | None = None,
            outside: str | None = None, after: Sequence[str] = ()) -> Exposure:
    """`after`: packets (as `explain --after` takes them) an inside host sent first; what the
    state they leave lets in counts too (exposure_after.py)."""
    routing = routing or default_routing()
    where = sides(routing, inside, outside)
    rules: list[Rule | NatRule] = [*ruleset.rules(), *ruleset.nat]
    ifaces = interface_ids(rules, routing.interfaces)  # type: ignore[arg-type]
    iif = ifaces[where.outside]
    stateful = ruleset.stateful
    forwards = [n for n in ruleset.nat if n.action == "dnat"] if stateful else []
    oif_of = {name: ranges.point(ifaces[name]) for name in where.by_oif}

    direct: list[Box] = []
    translated: list[Box] = []
    for family in (4, 6):
        boxes = unsolicited(stateful, family, iif, addr_domain(family))
        if forwards and family == 4:
            new = [b for b in boxes if b[F["ct_state"]] == ranges.point(NEW)]
            direct += [b for b in boxes if b[F["ct_state"]] != ranges.point(NEW)]
            forwarded, untouched = port_forwards(new, forwards, routing, where, ifaces)
            translated += forwarded
            direct += untouched
        else:
            direct += boxes
    region = translated[:]
    for box in direct:
        for name, addrs in where.by_oif.items():
            daddr = ranges.inter(box[F["daddr"]], addrs)
            if daddr:
                region.append(replace(box, oif=oif_of[name], daddr=daddr))

    if after:
        region += opened(ruleset, routing, where, ifaces, forwards, after)
    # a rate-limited rule decides only some of its packets: what could get in counts its
    # accepts and none of its drops
    chain = [r for r in ruleset.chains["forward"] if r.verdict is not None
             and (r.limit is None or r.verdict == "accept")]
    tests = [(r, rule_box(r.matches, ifaces)) for r in chain]
    tests = [(r, b) for r, b in tests if b is not None]
    decided, remaining = bdd.walk([b for _, b in tests], region,
                                  [r.verdict == "accept" for r, _ in tests],
                                  extra=list(CLASS_FILTER.values()))
    accepted = [part for (r, _), parts in zip(tests, decided, strict=True)
                if r.verdict == "accept" for part in parts]
    if ruleset.policies["forward"].verdict == "accept":
        accepted += remaining
    return Exposure(ruleset, routing, where, ifaces, bdd.united(accepted), forwards,
                    tuple(after))


def opened(ruleset: RuleSet, routing: Routing, where: Sides, ifaces: dict[str, int],
           forwards: list[NatRule], after: Sequence[str]) -> list[Box]:
    inside_oif = {ifaces[name]: addrs for name, addrs in where.by_oif.items()}
    dnat = [b for n in forwards if (b := rule_box(n.matches, ifaces)) is not None]
    return opened_boxes(lambda: state_after(ruleset, routing, after), ifaces[where.outside],
                        inside_oif, dnat)


def port_forwards(new: list[Box], forwards: list[NatRule], routing: Routing, where: Sides,
                  ifaces: dict[str, int]) -> tuple[list[Box], list[Box]]:
    """The `new` boxes the dnat rules translate to an inside address, translated (tagged with
    where they were addressed), and those no dnat rule takes. As the engine does: the first
    dnat rule that matches with the real iif; failing that, for a packet to one of the
    firewall's own addresses on another interface, the first that matches as if it had arrived
    there (NAT loopback)."""
    oif_of = {name: ranges.point(ifaces[name]) for name in where.by_oif}
    rule_boxes = [rule_box(n.matches, ifaces) for n in forwards]
    live = [k for k, rb in enumerate(rule_boxes) if rb is not None]
    rbs = [rule_boxes[k] for k in live]
    decided, untouched = space.first_match(rbs, new)
    out = []
    for k, boxes_k in zip(live, decided, strict=True):
        out += translate(boxes_k, k, forwards[k], where, oif_of)
    iif = new[0][F["iif"]] if new else NONE
    for owner, addrs in routing.addresses.items():
        own = ranges.norm((4 << 128 | a, 4 << 128 | a) for f, a in addrs if f == 4)
        if owner == where.outside or not own:
            continue
        there = []
        for box in untouched:
            daddr = ranges.inter(box[F["daddr"]], own)
            if daddr:
                there.append(replace(box, daddr=daddr, iif=ranges.point(ifaces[owner])))
        decided, _ = space.first_match(rbs, there)  # what none takes is the firewall's: input
        for k, boxes_k in zip(live, decided, strict=True):
            back = [replace(b, iif=iif) for b in boxes_k]
            out += translate(back, k, forwards[k], where, oif_of)
    return out, untouched


def replace(box: Box, tag: object = ..., **fields: Ranges) -> Box:
    out = list(box)
    for name, values in fields.items():
        out[F[name]] = values
    if tag is not ...:
        out[TAG] = tag
    return tuple(out)


def translate(boxes: list[Box], k: int, rule: NatRule, where: Sides, oif_of: dict) -> list[Box]:
    """Boxes a dnat rule decided, with its destination; kept if that is on the inside. A pool
    sends some connection to every member: each member's address and port is exposed, all
    under the one forward (tag k)."""
    if rule.pool is not None:
        return [box for member in rule.pool.members for box in translate_to(
            boxes, k, int(member.addr), member.port if member.port is not None
            else rule.pool.port, where, oif_of)]
    if rule.to_addr is None:
        return []
    port = rule.to_ports.lo if rule.to_ports is not None else None
    return translate_to(boxes, k, int(rule.to_addr), port, where, oif_of)


def translate_to(boxes: list[Box], k: int, addr: int, port: int | None, where: Sides,
                 oif_of: dict) -> list[Box]:
    to = 4 << 128 | addr
    oif = next((name for name, addrs in where.by_oif.items() if ranges.contains(addrs, to)), None)
    if oif is None:
        return []
    out = []
    for box in boxes:
        fields = {"daddr": ranges.point(to), "oif": oif_of[oif],
                  "ct_status": ranges.point(CT_STATUS_BITS[CtStatus.DNAT])}
        if port is not None:
            proto = box[F["proto"]][0][0]
            fields["dport"] = ranges.point(proto << 16 | port)
        tag = Forwarded(k, box[F["daddr"]], box[F["dport"]])
        out.append(replace(box, tag=tag, **fields))
    return out


# -- projections -----------------------------------------------------------------------------

CLASS_FILTER: dict[str, RuleBox] = {
    "tcp_syn": ((F["proto"], ranges.point(TCP)), (F["tcp_flags"], SYN_NO_ACK)),
    "tcp_any": ((F["proto"], ranges.point(TCP)),),
    "udp": ((F["proto"], ranges.point(UDP)),),
    "icmp": ((F["proto"], ranges.norm([(ICMP, ICMP), (ICMPV6, ICMPV6)])),),
}


@dataclass
class ForwardUse:
    rule: NatRule
    daddr: Ranges = ()  # encoded, as addressed by the sender
    dport: Ranges = ()  # decoded ports as addressed (empty for ICMP)


@dataclass
class ClassExposure:
    """One class's exposure: decoded ports (ICMP: types per family), addresses, senders."""

    name: str
    ports: Ranges = ()
    types: dict[int, Ranges] = field(default_factory=dict)
    addresses: dict[int, Ranges] = field(default_factory=dict)  # family -> plain ints
    sources: dict[int, Ranges] = field(default_factory=dict)
    source_ports: Ranges = ()
    forwards: dict[int, ForwardUse] = field(default_factory=dict)

    @property
    def count(self) -> int:
        if self.name == "icmp":
            return sum(ranges.count(t) for t in self.types.values())
        return ranges.count(self.ports)

    @property
    def exposed(self) -> bool:
        return any(self.addresses.values())

    def ephemeral_share(self) -> float:
        return ranges.count(ranges.clip(self.ports, *EPHEMERAL)) / (EPHEMERAL[1] - EPHEMERAL[0] + 1)


def project(exposure: Exposure, name: str) -> ClassExposure:
    out = ClassExposure(name)
    parts: dict[str, list] = {"ports": [], "sports": []}
    per_family: dict[str, dict[int, list]] = {"addr": {}, "src": {}, "types": {}}
    for region in exposure.regions:
        part = region.within(CLASS_FILTER[name])
        if part == region.packets.false:
            continue
        daddr = region.project(part, F["daddr"])
        fam = daddr[0][0] >> 128
        bits = ADDRESS_BITS[fam]
        per_family["addr"].setdefault(fam, []).extend(decode_low(daddr, bits))
        saddr = region.project(part, F["saddr"])
        per_family["src"].setdefault(fam, []).extend(decode_low(saddr, bits))
        if name == "icmp":
            types = region.project(part, F["icmp_type"])
            per_family["types"].setdefault(fam, []).extend(decode_low(types, 8))
        else:
            parts["ports"].extend(decode_low(region.project(part, F["dport"]), 16))
            parts["sports"].extend(decode_low(region.project(part, F["sport"]), 16))
        tag = region.tag
        if tag is not None:
            use = out.forwards.setdefault(tag.nat, ForwardUse(exposure.forwards[tag.nat]))
            use.daddr = ranges.union(use.daddr, tag.daddr)
            if tag.dport != NONE:
                use.dport = ranges.union(use.dport, decode_low(tag.dport, 16))
    out.ports = ranges.norm(parts["ports"])
    out.source_ports = ranges.norm(parts["sports"])
    out.addresses = {f: ranges.norm(v) for f, v in sorted(per_family["addr"].items())}
    out.sources = {f: ranges.norm(v) for f, v in sorted(per_family["src"].items())}
    out.types = {f: ranges.norm(v) for f, v in sorted(per_family["types"].items())}
    return out
