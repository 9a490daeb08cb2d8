"""One concrete packet per difference, in the syntax `fwlab explain` takes, with the packets
that set up its connection state (`--after`).

The point is chosen so that replaying it as it stands meets the region: a source routed through
the region's `iif` where there is one, documentation addresses and common ports where the
region allows them, and, for packets whose translation would move them elsewhere, a point no
NAT rule of either file takes (a reply's opener too, so that the reply is addressed plainly).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TypeVar

from fw.analysis import space
from fw.analysis.space import TAG, Box, RuleBox
from fw.core import ranges
from fw.core.fields import MISSING, F
from fw.core.protocols import ACK, ICMP, ICMPV6, QUERY_REPLY, SYN, TCP, UDP
from fw.core.ranges import Ranges
from fw.craft import TCP_FLAG_LETTERS

SWAPS = (("saddr", "daddr"), ("sport", "dport"), ("iif", "oif"))
# (query, reply) ICMP types, encoded: an echo request is answered by an echo reply only
# (conntrack keys queries on their type, as Linux)
ANSWERS = tuple((p << 8 | q, p << 8 | r) for p, f in ((ICMP, 4), (ICMPV6, 6))
                for q, r in QUERY_REPLY[f].items())
SWAPPED = {F[x]: F[y] for a, b in SWAPS for x, y in ((a, b), (b, a))}
PREFERRED_ADDRESSES = ("198.51.100.66", "203.0.113.66", "192.0.2.10", "192.0.2.66",
                       "198.51.100.10", "203.0.113.10", "2001:db8:2::66", "2001:db8:1::10",
                       "2001:db8:1::66", "2001:db8::66")
PREFERRED_ENCODED = tuple(a.version << 128 | int(a)
                          for a in map(ipaddress.ip_address, PREFERRED_ADDRESSES))
PREFERRED_PORTS = {"sport": (40000, 50000, 1024, 80, 53), "dport": (80, 443, 53, 22, 8080)}
PREFERRED_PROTOCOLS = (TCP, UDP, ICMP, ICMPV6, 47)  # 47: GRE, a protocol rules name
PREFERRED_ICMP = tuple(p << 8 | t for t4, t6 in ((8, 128), (0, 129), (3, 1), (11, 3))
                       for p, t in ((ICMP, t4), (ICMPV6, t6)))  # echo, reply, errors
PREFERRED_FLAGS = (SYN, SYN | ACK, ACK, ACK | 0x08, ACK | 0x01, 0x04, ACK | 0x04, 0x01)
T = TypeVar("T")
MAX_PIECES = 64  # a point avoiding NAT rules is looked for among this many pieces
ISN_OPENER, ISN_REPLY = 1000, 5000


def reversed_rule(rule: RuleBox) -> RuleBox:
    """A rule box seen from the other direction (flags and ICMP types dropped: loose)."""
    return tuple((SWAPPED.get(i, i), v) for i, v in rule
                 if i not in (F["tcp_flags"], F["icmp_type"]))


def avoiding(box: Box, avoid: Sequence[RuleBox]) -> list[Box]:
    """Pieces of the box no avoided rule matches (the box itself when nothing is left)."""
    pieces = [box]
    for rule in avoid:
        nxt: list[Box] = []
        for piece in pieces:
            if space.intersect(piece, rule) is None:
                nxt.append(piece)
            else:
                nxt += space.difference(piece, rule)
        pieces = nxt[:MAX_PIECES]
        if not pieces:
            return [box]
    return pieces


class Points:
    """Points of boxes: encoded field values, chosen as described above."""

    def __init__(self, names: dict[int, str], routed: dict[str, Ranges], local: Ranges) -> None:
        self.names = names
        self.routed = routed
        self.local = local

    def point(self, box: Box, avoid: Sequence[RuleBox] = ()) -> list[int]:
        pieces = avoiding(box, avoid)
        for piece in pieces:
            found = self.consistent(piece)
            if found is not None:
                return found
        return self.plain(pieces[0])

    def consistent(self, box: Box) -> list[int] | None:
        """A point whose source is routed through its iif, if the box has one."""
        iifs = [v for lo, hi in box[F["iif"]] for v in range(lo, hi + 1)]
        for iif in iifs:
            name = self.names.get(iif)
            if name is None:
                continue
            saddr = ranges.inter(box[F["saddr"]], self.routed.get(name, ()))
            if saddr:
                return self.plain(box, iif=iif, saddr=saddr)
        return None if iifs and iifs != [MISSING] else self.plain(box)

    def plain(self, box: Box, iif: int | None = None, saddr: Ranges | None = None) -> list[int]:
        values = [value(box[i]) for i in range(TAG)]
        if iif is not None:
            values[F["iif"]] = iif
        held = saddr if saddr is not None else box[F["saddr"]]
        values[F["saddr"]], values[F["daddr"]] = self.addresses(held, box[F["daddr"]])
        values[F["proto"]] = first_of(box[F["proto"]], PREFERRED_PROTOCOLS)
        for name, prefer in PREFERRED_PORTS.items():
            values[F[name]] = port(box[F[name]], prefer)
        values[F["tcp_flags"]] = first_of(box[F["tcp_flags"]], PREFERRED_FLAGS, avoid_zero=True)
        values[F["icmp_type"]] = first_of(box[F["icmp_type"]], PREFERRED_ICMP)
        return values

    def addresses(self, saddrs: Ranges, daddrs: Ranges) -> tuple[int, int]:
        """Source and destination, different where the sets allow: a packet from an address to
        itself is its own reply (conntrack finds it in the original direction), so it can
        never stand for a reply, and a real one rarely travels so."""
        daddr = self.address(daddrs)
        saddr = self.address(ranges.cut(saddrs, daddr, daddr) or saddrs)
        if saddr == daddr:
            daddr = self.address(ranges.cut(daddrs, saddr, saddr) or daddrs)
        return saddr, daddr

    def address(self, held: Ranges) -> int:
        """A documentation address where the set allows one; never the firewall's own unless
        the set holds nothing else; the first host of a prefix rather than its network."""
        if held == ranges.point(MISSING):
            return MISSING
        for v in PREFERRED_ENCODED:
            if ranges.contains(held, v):
                return v
        rest = ranges.sub(held, self.local) or held
        lo, hi = rest[0]
        return lo + 1 if hi > lo else lo


def value(held: Ranges) -> int:
    return held[0][0]


def port(held: Ranges, prefer: Sequence[int]) -> int:
    if held == ranges.point(MISSING):
        return MISSING
    base = held[0][0] & ~0xFFFF
    for p in prefer:
        if ranges.contains(held, base | p):
            return base | p
    lo, hi = held[0]
    return lo + 1 if hi > lo and lo & 0xFFFF == 0 else lo


def first_of(held: Ranges, prefer: Sequence[int], avoid_zero: bool = False) -> int:
    if held == ranges.point(MISSING):
        return MISSING
    for v in prefer:
        if ranges.contains(held, v):
            return v
    if avoid_zero and ranges.contains(held, 0) and ranges.sub(held, ((0, 0),)):
        return ranges.sub(held, ((0, 0),))[0][0]
    return held[0][0]


# -- as text ---------------------------------------------------------------------------------

def flags_text(flags: int) -> str:
    letters = "".join(letter for letter, bit in TCP_FLAG_LETTERS.items() if flags & bit)
    return letters or "0"


def address_text(encoded: int) -> str:
    if encoded >> 128 == 4:
        return str(ipaddress.IPv4Address(encoded & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address(encoded & ((1 << 128) - 1)))


def endpoint_text(addr: int, port_: int) -> str:
    text = address_text(addr)
    return f"[{text}]:{port_ & 0xFFFF}" if addr >> 128 == 6 else f"{text}:{port_ & 0xFFFF}"


def packet_text(v: list[int], extra: str = "") -> str:
    """The point as `explain` reads it; `extra` adds options (seq, ack, quoting ...)."""
    proto = v[F["proto"]]
    src, dst = v[F["saddr"]], v[F["daddr"]]
    if proto in (TCP, UDP):
        text = (f"{'tcp' if proto == TCP else 'udp'} {endpoint_text(src, v[F['sport']])} -> "
                f"{endpoint_text(dst, v[F['dport']])}")
        if proto == TCP:
            text += f" flags {flags_text(v[F['tcp_flags']])}"
    elif proto in (ICMP, ICMPV6) and v[F["icmp_type"]] != MISSING:
        word = "icmp" if proto == ICMP else "icmpv6"
        text = (f"{word} {address_text(src)} -> {address_text(dst)} "
                f"type {v[F['icmp_type']] & 0xFF}")
    else:
        text = f"proto {proto} {address_text(src)} -> {address_text(dst)}"
    return f"{text} {extra}".rstrip()


def reversed_point(v: Sequence[T]) -> list[T]:
    """A point (or a box: any per-field sequence) seen from the other direction."""
    out = list(v)
    for i, j in SWAPPED.items():
        out[i] = v[j]
    return out


def reply_sequence(reply: list[int], opener: list[int]) -> tuple[str, tuple[str, ...]]:
    """A reply in `established` and the packets before it: the opener, and for TCP the
    handshake when the reply is not the SYN/ACK itself (sequence numbers that fit)."""
    proto = reply[F["proto"]]
    if proto == TCP:
        syn = packet_text(opener, f"seq {ISN_OPENER}")
        if reply[F["tcp_flags"]] == SYN | ACK:
            return packet_text(reply, f"seq {ISN_REPLY} ack {ISN_OPENER + 1}"), (syn,)
        synack = list(reply)
        synack[F["tcp_flags"]] = SYN | ACK
        ack = list(opener)
        ack[F["tcp_flags"]] = ACK
        return (packet_text(reply, f"seq {ISN_REPLY + 1} ack {ISN_OPENER + 1}"),
                (syn, packet_text(synack, f"seq {ISN_REPLY} ack {ISN_OPENER + 1}"),
                 packet_text(ack, f"seq {ISN_OPENER + 1} ack {ISN_REPLY + 1}")))
    return packet_text(reply), (packet_text(opener),)
