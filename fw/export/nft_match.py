"""One fwlab match as the nft expression that accepts exactly the same packets.

nft's own protocol dependencies give the engine's domains for free: `tcp dport != 80` matches
TCP only, `ip saddr` IPv4 only, as fwlab's classifier does (see fw/engine/classify.py).
TCP flags are written in mask form: fwlab's `tcp flags syn,!ack` is "SYN set and ACK clear",
which is `tcp flags & (syn | ack) == syn`; nft's bare `tcp flags syn` would mean something else
across nft versions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv6Address, collapse_addresses, ip_network

from fw.core.fields import implied_protocol, rule_protocols
from fw.core.icmp_types import type_name
from fw.core.protocols import TCP_FLAGS
from fw.core.ranges import norm
from fw.errors import FwlabError
from fw.model import (
    Addresses,
    AddrMatch,
    AddrRange,
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

NFT_PROTOS = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp"}
NFT_FLAGS = {bit: name for name, bit in TCP_FLAGS.items() if name != "ece"}
PORT_PROTOS = {6: "tcp", 17: "udp"}
COMMENT_MAX = 128
IFNAMSIZ = 16


def nft_set(items: Sequence[str]) -> str:
    """One value bare, several as an anonymous set."""
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def quoted(text: str) -> str:
    """A string nft reads back unchanged (it has no escape for the double quote)."""
    return '"' + text.replace('"', "'") + '"'


def comment_expr(text: str) -> str:
    """nft refuses comments over 128 bytes: a longer one is cut (the rule file keeps it whole)."""
    cut = text.encode()[:COMMENT_MAX].decode(errors="ignore")
    return f"comment {quoted(cut)}"


def op(match: Match) -> str:
    return "!= " if match.negate else ""


def match_expr(match: Match) -> str:
    if isinstance(match, IfaceMatch):
        return f"{match.kind}name {op(match)}{nft_set([iface(n, match) for n in match.names])}"
    if isinstance(match, AddrMatch):
        family = "ip" if match.family == 4 else "ip6"
        return f"{family} {match.kind} {op(match)}{nft_set(prefixes(match.prefixes))}"
    if isinstance(match, ProtoMatch):
        names = [NFT_PROTOS.get(p, str(p)) for p in sorted(set(match.protos))]
        return f"meta l4proto {op(match)}{nft_set(names)}"
    if isinstance(match, PortMatch):
        return f"{PORT_PROTOS[match.proto]} {match.kind} {op(match)}{nft_set(ports(match.ranges))}"
    if isinstance(match, TcpFlagsMatch):
        return flags_expr(match)
    if isinstance(match, IcmpTypeMatch):
        word = "icmp" if match.family == 4 else "icmpv6"
        types = [type_name(match.family, t) for t in sorted(set(match.types))]
        return f"{word} type {op(match)}{nft_set(types)}"
    if isinstance(match, CtStateMatch):
        # `ct state != a,b` compares the whole value with a|b (always true): negate a set
        states = ",".join(match.states) if not match.negate else nft_set(list(match.states))
        return f"ct state {op(match)}{states}"
    if isinstance(match, CtStatusMatch):
        statuses = ",".join(match.statuses) if not match.negate else nft_set(list(match.statuses))
        return f"ct status {op(match)}{statuses}"
    raise TypeError(match)  # pragma: no cover - the Match union is closed


def exported_matches(matches: Sequence[Match]) -> list[Match]:
    """The matches to write: a `proto` set beside a match that implies one protocol of it
    (`proto { tcp, udp } tcp dport 80`) says nothing more, and nft refuses the pair
    ("conflicting protocols specified"), so it is left out; `check` refuses the rule where
    the implied protocol is not in the set."""
    implied = {p for p in map(implied_protocol, matches) if p is not None}
    return [m for m in matches
            if not (isinstance(m, ProtoMatch) and not m.negate and len(set(m.protos)) > 1
                    and implied and implied <= set(m.protos))]


def iface(name: str, match: IfaceMatch) -> str:
    """Linux interface names are at most 15 bytes; nft refuses longer ones."""
    if len(name.encode()) > IFNAMSIZ - 1:
        raise FwlabError(f"the kernel cannot name an interface '{name}' (at most "
                         f"{IFNAMSIZ - 1} characters)", match.span)
    return quoted(name)


def prefixes(nets: Iterable[Addresses]) -> list[str]:
    """Overlapping prefixes merged (an nft interval set refuses overlaps); hosts bare.
    With address ranges among them, the merged intervals: a prefix where one is exact."""
    nets = list(nets)
    if any(isinstance(n, AddrRange) for n in nets):
        return [interval_text(lo, hi, nets[0].version) for lo, hi in norm(map(bounds, nets))]
    merged = list(collapse_addresses(nets)) if nets else []
    return [str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n) for n in merged]


def bounds(net: Addresses) -> tuple[int, int]:
    if isinstance(net, AddrRange):
        return int(net.lo), int(net.hi)
    return int(net.network_address), int(net.broadcast_address)


def interval_text(lo: int, hi: int, version: int) -> str:
    """`a.b.c.d` for one address, a prefix when the interval is one, else `lo-hi`."""
    kind = IPv4Address if version == 4 else IPv6Address
    first, last = kind(lo), kind(hi)
    if lo == hi:
        return str(first)
    size = hi - lo + 1
    if size & (size - 1) == 0 and lo % size == 0:
        return str(ip_network(f"{first}/{first.max_prefixlen - size.bit_length() + 1}"))
    return f"{first}-{last}"


def ports(ranges: Iterable[PortRange]) -> list[str]:
    """Port ranges merged where they overlap or touch, in order."""
    merged: list[list[int]] = []
    for r in sorted(ranges, key=lambda r: (r.lo, r.hi)):
        if merged and r.lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], r.hi)
        else:
            merged.append([r.lo, r.hi])
    return [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in merged]


def flag_names(bits: int) -> list[str]:
    return [name for bit, name in NFT_FLAGS.items() if bits & bit]


def flags_expr(match: TcpFlagsMatch) -> str:
    """`tcp flags & (syn | ack) == syn`: the tested bits masked, compared with those set."""
    mask = flag_names(match.set | match.clear)
    masked = mask[0] if len(mask) == 1 else "(" + " | ".join(mask) + ")"
    wanted = " | ".join(flag_names(match.set)) or "0x0"
    return f"tcp flags & {masked} {'!=' if match.negate else '=='} {wanted}"


def implies_proto(matches: Iterable[Match]) -> set[int] | None:
    """The protocols a rule's matches allow, or None when any may pass (for `reject`)."""
    return rule_protocols(list(matches))
