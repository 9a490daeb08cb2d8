"""The field schema: what a rule can test, and every match and packet as integers per field.

One encoding for the classifier (fw/engine/classify.py), the shadow check (fw/dsl/shadow.py) and
the symbolic analysis (fw/analysis), so the three can never disagree on what a match means.
A field's value says everything a rule can ask in one integer:
- an address is `family << 128 | addr` (an `ip saddr` test never matches IPv6);
- a port is `proto << 16 | port` (so `tcp dport 80` never matches UDP);
- an ICMP type is `proto << 8 | type`;
- interfaces and ct states are small numbers (`interface_ids`, `CT_STATES`' order);
- ct status is the connection's NAT bits (CT_STATUS_BITS: 1 snat, 2 dnat), 0 when none;
- a value that does not exist for the packet is MISSING (-1), which only rules that do not test
  the field accept.
Negation is the complement within the field's own domain, as nftables' protocol dependencies
make `tcp dport != 80` match TCP only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Protocol

from fw.core.protocols import ADDRESS_BITS, FAMILY_OF_ICMP, ICMP, ICMP_OF_FAMILY, ICMPV6, TCP
from fw.core.ranges import IntervalSet, Ranges, norm
from fw.core.vocab import CT_STATES, CT_STATUS_BITS
from fw.model import (
    AddrMatch,
    AddrRange,
    CtStateMatch,
    CtStatusMatch,
    IcmpTypeMatch,
    IfaceMatch,
    Match,
    PortMatch,
    ProtoMatch,
    TcpFlagsMatch,
)

FIELDS = ("iif", "oif", "saddr", "daddr", "proto", "sport", "dport", "tcp_flags", "icmp_type",
          "ct_state", "ct_status")
F = {name: i for i, name in enumerate(FIELDS)}
MISSING = -1
CT_STATE_ID = {state: i for i, state in enumerate(CT_STATES)}
CT_STATUS_MAX = sum(CT_STATUS_BITS.values())


# -- encoders of single values -----------------------------------------------------------------

def addr_value(family: int, addr: int) -> int:
    return (family << 128) | addr


def addr_domain(family: int) -> tuple[int, int]:
    return addr_value(family, 0), addr_value(family, (1 << ADDRESS_BITS[family]) - 1)


def port_domain(proto: int) -> tuple[int, int]:
    return proto << 16, proto << 16 | 0xFFFF


def network_range(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network | AddrRange,
) -> tuple[int, int]:
    """A prefix or an address range as the encoded addresses it holds."""
    family = net.version
    if isinstance(net, AddrRange):
        return addr_value(family, int(net.lo)), addr_value(family, int(net.hi))
    return (addr_value(family, int(net.network_address)),
            addr_value(family, int(net.broadcast_address)))


def decode_low(ranges: Ranges, bits: int) -> Ranges:
    """Strip the encoding's high part (proto << 16, family << 128) off values of one kind."""
    mask = (1 << bits) - 1
    return norm((lo & mask, hi & mask) for lo, hi in ranges)


# -- matches -----------------------------------------------------------------------------------

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
        return match.kind, IntervalSet(map(network_range, match.prefixes)), \
            addr_domain(match.family)
    if isinstance(match, ProtoMatch):
        return "proto", IntervalSet((p, p) for p in match.protos), (0, 255)
    if isinstance(match, PortMatch):
        base = match.proto << 16
        ranges = ((base | r.lo, base | r.hi) for r in match.ranges)
        return match.kind, IntervalSet(ranges), port_domain(match.proto)
    if isinstance(match, TcpFlagsMatch):
        flags = (f for f in range(256) if f & match.set == match.set and not f & match.clear)
        return "tcp_flags", IntervalSet((f, f) for f in flags), (0, 255)
    if isinstance(match, IcmpTypeMatch):
        base = ICMP_OF_FAMILY[match.family] << 8
        types = IntervalSet((base | t, base | t) for t in match.types)
        return "icmp_type", types, (base, base | 255)
    if isinstance(match, CtStateMatch):
        ids = IntervalSet((CT_STATE_ID[s], CT_STATE_ID[s]) for s in match.states)
        return "ct_state", ids, (0, len(CT_STATES) - 1)
    if isinstance(match, CtStatusMatch):
        mask = sum(CT_STATUS_BITS[s] for s in match.statuses)
        bits = IntervalSet((v, v) for v in range(CT_STATUS_MAX + 1) if v & mask)
        return "ct_status", bits, (0, CT_STATUS_MAX)
    raise TypeError(match)  # pragma: no cover - the Match union is closed


def implied_protocol(match: Match) -> int | None:
    """`tcp dport 80` implies `proto tcp`: a rule testing it tests the protocol too."""
    if isinstance(match, PortMatch):
        return match.proto
    if isinstance(match, TcpFlagsMatch):
        return TCP
    if isinstance(match, IcmpTypeMatch):
        return ICMP_OF_FAMILY[match.family]
    return None


def rule_protocols(matches: Sequence[Match]) -> set[int] | None:
    """The protocols a rule's matches allow, or None when any may pass."""
    allowed: set[int] | None = None
    for match in matches:
        protos = match_protocols(match)
        if protos is not None:
            allowed = protos if allowed is None else allowed & protos
    return allowed


def match_protocols(match: Match) -> set[int] | None:
    implied = implied_protocol(match)
    if implied is not None:
        return {implied}
    if isinstance(match, ProtoMatch):
        return set(range(256)) - set(match.protos) if match.negate else set(match.protos)
    return None


def rule_families(matches: Sequence[Match]) -> set[int]:
    """The address families a rule can match: `ip ...` (negated too: the test stays within its
    family) and ICMP restrict it, so do protocols that exist in one family only."""
    families = {4, 6}
    for match in matches:
        if isinstance(match, AddrMatch | IcmpTypeMatch):
            families &= {match.family}
    protos = rule_protocols(matches)
    if protos is not None and protos and protos <= {ICMP, ICMPV6}:
        families &= {FAMILY_OF_ICMP[p] for p in protos}
    return families


def interface_ids(rules: Sequence, known: Sequence[str]) -> dict[str, int]:
    """Every interface name a rule or the topology mentions gets a number (0, 1, ...)."""
    names = dict.fromkeys(known)
    for rule in rules:
        for match in rule.matches:
            if isinstance(match, IfaceMatch):
                names.update(dict.fromkeys(match.names))
    return {name: i for i, name in enumerate(names)}


# -- packets -----------------------------------------------------------------------------------

class PacketFields(Protocol):
    """What `packet_values` reads of a packet (the engine's decoded Packet has it)."""

    family: int
    src: int
    dst: int
    proto: int
    sport: int
    dport: int
    tcp_flags: int
    icmp_type: int
    l4_offset: int


def packet_values(pkt: PacketFields, iif: int, oif: int, ct_state: str | None,
                  ct_status: int = MISSING) -> dict[str, int]:
    """The packet as encoded field values: what the classifier and the analysis test.
    `ct_status` is MISSING for a packet without a connection (stateless, untracked)."""
    proto = pkt.proto
    values = {
        "iif": iif,
        "oif": oif,
        "proto": proto,
        "ct_state": CT_STATE_ID[ct_state] if ct_state else MISSING,
        "ct_status": ct_status,
    }
    if pkt.family:
        values["saddr"] = addr_value(pkt.family, pkt.src)
        values["daddr"] = addr_value(pkt.family, pkt.dst)
    if pkt.sport >= 0:
        values["sport"] = proto << 16 | pkt.sport
        values["dport"] = proto << 16 | pkt.dport
    if proto == TCP and pkt.l4_offset >= 0 and pkt.sport >= 0:
        values["tcp_flags"] = pkt.tcp_flags
    if proto in (ICMP, ICMPV6) and pkt.icmp_type >= 0:
        values["icmp_type"] = proto << 8 | pkt.icmp_type
    return values


def field_list(values: dict[str, int]) -> list[int]:
    """The values in FIELDS order (the analysis's boxes are tuples in that order)."""
    return [values.get(name, MISSING) for name in FIELDS]
