"""One nft JSON match (`nft -j list ruleset`) as the fwlab matches that accept the same packets.

Anything fwlab cannot say exactly raises Unsupported naming the expression; the caller adds
where it stands. Family restrictions (`meta nfproto ipv4`, `ip protocol` in an inet table) become
`ip saddr 0.0.0.0/0` / `ip6 saddr ::/0`, which fwlab reads as "any IPv4 / IPv6 packet".
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network, summarize_address_range

from fw.core.icmp_types import ICMP_TYPES, ICMPV6_TYPES
from fw.core.protocols import PROTOCOL_NAMES, PROTOCOLS, TCP_FLAGS
from fw.core.vocab import CT_STATES, CtStatus
from fw.errors import FwlabError
from fw.model import (
    AddrMatch,
    CtStateMatch,
    CtStatusMatch,
    IcmpTypeMatch,
    IfaceMatch,
    Match,
    PortMatch,
    PortRange,
    ProtoMatch,
    TcpFlagsMatch,
)

ANY = {4: IPv4Network("0.0.0.0/0"), 6: IPv6Network("::/0")}
NFT_PROTO_NAMES = {"ipv6-icmp": 58, **PROTOCOL_NAMES}
ALL_FLAGS = 0xFF
TCP_FLAGS_FIELD = {"payload": {"protocol": "tcp", "field": "flags"}}


class Unsupported(FwlabError):
    """An nft construct with no exact fwlab equivalent; `what` says which."""

    def __init__(self, what: str) -> None:
        super().__init__(f"unsupported: {what}")
        self.what = what


def family_match(family: int, negate: bool = False) -> AddrMatch:
    """Any packet of this family (or, negated, any packet of the other one)."""
    if negate:
        family = 10 - family
    return AddrMatch(kind="saddr", family=family, prefixes=(ANY[family],))


def translate_match(match: dict, table_family: str) -> list[Match]:
    """`{"op": ..., "left": ..., "right": ...}` as fwlab matches (usually one)."""
    op, left, right = match.get("op", "=="), match["left"], match["right"]
    if op == "!" and left == TCP_FLAGS_FIELD:  # `tcp flags ! syn,ack`: all of them clear
        return [TcpFlagsMatch(set=0, clear=flag_bits(right))]
    if op not in ("==", "!=", "in"):
        raise Unsupported(f"the comparison '{op}'")
    if isinstance(right, dict) and "|" in right:
        raise Unsupported(f"{describe(left)} compared with a|b (nft compares the whole value)")
    negate = op == "!="
    if isinstance(left, dict) and "meta" in left:
        return meta_match(left["meta"]["key"], negate, right)
    if isinstance(left, dict) and "payload" in left:
        return payload_match(left["payload"], op, right, table_family)
    if isinstance(left, dict) and "ct" in left and left["ct"].get("key") == "state":
        return [ct_state(negate, right)]
    if isinstance(left, dict) and "ct" in left and left["ct"].get("key") == "status":
        return [ct_status(negate, right)]
    if isinstance(left, dict) and "&" in left:
        return [masked_flags(left["&"], negate, right)]
    raise Unsupported(describe(left))


def describe(expr: object) -> str:
    """A short name for an expression: `fib daddr type`, `meta mark`, `payload ip dscp`."""
    if not isinstance(expr, dict) or not expr:
        return repr(expr)
    kind, body = next(iter(expr.items()))
    if not isinstance(body, dict):
        return kind
    if kind == "payload":
        return f"{body.get('protocol', 'raw payload')} {body.get('field', '')}".strip()
    if kind == "fib":
        return f"fib {' . '.join(body.get('flags', []))} {body.get('result', '')}".strip()
    detail = body.get("key") or body.get("field") or ""
    return f"{kind} {detail}".strip()


def elements(right: object) -> list:
    """The values on a match's right side: one value, a list, or an anonymous set."""
    if isinstance(right, dict) and "set" in right:
        return list(right["set"])
    if isinstance(right, str) and right.startswith("@"):
        raise Unsupported(f"the named set {right} (give its elements)")
    return list(right) if isinstance(right, list) else [right]


def meta_match(key: str, negate: bool, right: object) -> list[Match]:
    if key in ("iifname", "oifname", "iif", "oif"):
        names = tuple(str(v) for v in elements(right))
        if any(not isinstance(v, str) or "*" in v for v in elements(right)):
            raise Unsupported(f"meta {key} with a wildcard or index")
        return [IfaceMatch(kind=key[:3], names=names, negate=negate)]
    if key == "l4proto":
        return [ProtoMatch(protos=protos(right), negate=negate)]
    if key == "nfproto":
        families = {"ipv4": 4, "ipv6": 6}
        values = [families.get(v) for v in elements(right)]
        if len(values) != 1 or values[0] is None:
            raise Unsupported(f"meta nfproto {right}")
        return [family_match(values[0], negate)]
    raise Unsupported(f"meta {key}")


def protos(right: object) -> tuple[int, ...]:
    out = []
    for value in elements(right):
        if isinstance(value, int):
            out.append(value)
        elif value in NFT_PROTO_NAMES:
            out.append(NFT_PROTO_NAMES[value])
        else:
            try:
                out.append(socket.getprotobyname(value))
            except OSError:
                raise Unsupported(f"the protocol {value!r}") from None
    return tuple(out)


def payload_match(payload: dict, op: str, right: object, table: str) -> list[Match]:
    proto, field = payload.get("protocol"), payload.get("field")
    negate = op == "!="
    if proto in ("ip", "ip6") and field in ("saddr", "daddr"):
        family = 4 if proto == "ip" else 6
        return [AddrMatch(kind=field, family=family, prefixes=networks(right), negate=negate)]
    if (proto, field) in (("ip", "protocol"), ("ip6", "nexthdr")):
        family = 4 if proto == "ip" else 6
        implied = [] if table == proto else [family_match(family)]
        return [*implied, ProtoMatch(protos=protos(right), negate=negate)]
    if proto in ("tcp", "udp") and field in ("sport", "dport"):
        number = PROTOCOLS[proto]
        return [PortMatch(kind=field, proto=number, ranges=port_ranges(right), negate=negate)]
    if proto == "tcp" and field == "flags":
        return [tested_flags(op, right)]
    if proto in ("icmp", "icmpv6") and field == "type":
        return [icmp_types(proto, negate, right)]
    raise Unsupported(f"{proto} {field}")


def networks(right: object) -> tuple[IPv4Network | IPv6Network, ...]:
    out: list[IPv4Network | IPv6Network] = []
    for value in elements(right):
        if isinstance(value, str):
            out.append(ip_network(value))
        elif isinstance(value, dict) and "prefix" in value:
            out.append(ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}"))
        elif isinstance(value, dict) and "range" in value:
            lo, hi = (ip_address(a) for a in value["range"])
            out.extend(summarize_address_range(lo, hi))
        else:
            raise Unsupported(f"the address {value!r}")
    return tuple(out)


def port_ranges(right: object) -> tuple[PortRange, ...]:
    out = []
    for value in elements(right):
        if isinstance(value, dict) and "range" in value:
            out.append(PortRange(lo=port(value["range"][0]), hi=port(value["range"][1])))
        else:
            out.append(PortRange(lo=port(value), hi=port(value)))
    return tuple(out)


def port(value: object) -> int:
    if isinstance(value, int):
        return value
    try:
        return socket.getservbyname(str(value))
    except OSError:
        raise Unsupported(f"the port {value!r}") from None


def flag_bits(value: object) -> int:
    if isinstance(value, int):
        return value
    names = value if isinstance(value, list) else [value]
    if not all(isinstance(n, str) and n in TCP_FLAGS for n in names):
        raise Unsupported(f"the tcp flags {value!r}")
    return sum(TCP_FLAGS[n] for n in set(names))


def masked_flags(operands: list, negate: bool, right: object) -> TcpFlagsMatch:
    """`tcp flags & (syn | ack) == syn`: the mask's bits set in `right` set, the rest clear."""
    what, mask = operands
    if what != TCP_FLAGS_FIELD:
        raise Unsupported(f"a bitwise test of {describe(what)}")
    mask_bits, value = flag_bits(mask), flag_bits(right)
    if value & ~mask_bits:
        raise Unsupported("tcp flags compared with bits outside their mask")
    return TcpFlagsMatch(set=value, clear=mask_bits & ~value, negate=negate)


def tested_flags(op: str, right: object) -> TcpFlagsMatch:
    """`tcp flags == syn` / `!= syn` compare every flag; `tcp flags syn` (op `in`) asks for
    one flag set. `tcp flags syn,ack` (any of them) is an OR one fwlab match cannot say."""
    if isinstance(right, dict):
        raise Unsupported("tcp flags compared with a set of values")
    bits = flag_bits(right)
    if op == "in":
        if bin(bits).count("1") != 1:
            raise Unsupported("tcp flags tested for any of several flags")
        return TcpFlagsMatch(set=bits, clear=0)
    return TcpFlagsMatch(set=bits, clear=ALL_FLAGS & ~bits, negate=op == "!=")


def icmp_types(proto: str, negate: bool, right: object) -> IcmpTypeMatch:
    table = ICMP_TYPES if proto == "icmp" else ICMPV6_TYPES
    types = []
    for value in elements(right):
        number = value if isinstance(value, int) else table.get(str(value))
        if number is None:
            raise Unsupported(f"the {proto} type {value!r}")
        types.append(number)
    return IcmpTypeMatch(family=4 if proto == "icmp" else 6, types=tuple(types), negate=negate)


def ct_state(negate: bool, right: object) -> CtStateMatch:
    states = elements(right)
    if not all(s in CT_STATES for s in states):
        raise Unsupported(f"ct state {right!r}")
    return CtStateMatch(states=tuple(states), negate=negate)


def ct_status(negate: bool, right: object) -> CtStatusMatch:
    statuses = elements(right)
    if not statuses or not all(s in tuple(CtStatus) for s in statuses):
        raise Unsupported(f"ct status {right!r} (fwlab knows snat, dnat)")
    return CtStatusMatch(statuses=tuple(CtStatus(s) for s in statuses), negate=negate)
