"""Build packets as bytes, checksums included, without scapy.

The CLI (`explain`), the tests and the benchmarks need many packets fast; scapy takes tens of
microseconds per packet, this takes a few. Every builder returns a whole IP packet and infers
the family from the addresses, so one call site serves IPv4 and IPv6.
"""

from __future__ import annotations

import functools
import ipaddress
import struct

from fw.core.protocols import ICMP, ICMPV6, TCP, UDP
from fw.engine.checksum import internet_checksum, l4_checksum

Address = str | ipaddress.IPv4Address | ipaddress.IPv6Address

TCP_FLAG_LETTERS = {
    "F": 0x01,
    "S": 0x02,
    "R": 0x04,
    "P": 0x08,
    "A": 0x10,
    "U": 0x20,
    "E": 0x40,
    "C": 0x80,
}

_V4 = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_ICMP = struct.Struct("!BBHI")


def tcp_flags(flags: str | int) -> int:
    """Flags as tcpdump/scapy letters ("SA", "PA") or already a number."""
    if isinstance(flags, int):
        return flags
    value = 0
    for letter in flags.upper():
        if letter not in TCP_FLAG_LETTERS:
            raise ValueError(f"unknown TCP flag {letter!r} (use F S R P A U E C)")
        value |= TCP_FLAG_LETTERS[letter]
    return value


@functools.lru_cache(maxsize=4096)
def _addr(a: Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parsing dominates building a packet, and benchmarks reuse a handful of addresses."""
    if isinstance(a, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return a
    return ipaddress.ip_address(a)


def _pair(src: Address, dst: Address) -> tuple[int, int, int]:
    """(family, src, dst) as ints; mixing families is a caller bug."""
    s, d = _addr(src), _addr(dst)
    if s.version != d.version:
        raise ValueError(f"{s} and {d} are not of the same IP version")
    return s.version, int(s), int(d)


def ipv4(
    src: Address,
    dst: Address,
    proto: int,
    payload: bytes,
    ttl: int = 64,
    ident: int = 0,
    flags_frag: int = 0,
) -> bytes:
    """An IPv4 packet; `flags_frag` is the raw flags+fragment-offset field (0x4000 is DF)."""
    s, d = _addr(src).packed, _addr(dst).packed
    head = _V4.pack(0x45, 0, 20 + len(payload), ident, flags_frag, ttl, proto, 0, s, d)
    csum = internet_checksum(head)
    return head[:10] + csum.to_bytes(2) + head[12:] + payload


def ipv6(src: Address, dst: Address, proto: int, payload: bytes, ttl: int = 64) -> bytes:
    """An IPv6 packet; `proto` is the first next-header (extension headers go in `payload`)."""
    s, d = _addr(src).packed, _addr(dst).packed
    return _V6.pack(6 << 28, len(payload), proto, ttl, s, d) + payload


def ip(src: Address, dst: Address, proto: int, payload: bytes, ttl: int = 64) -> bytes:
    """An IP packet of the family of the addresses."""
    if _addr(src).version == 4:
        return ipv4(src, dst, proto, payload, ttl)
    return ipv6(src, dst, proto, payload, ttl)


def _with_csum(segment: bytes, off: int, csum: int) -> bytes:
    return segment[:off] + csum.to_bytes(2) + segment[off + 2 :]


def tcp(
    src: Address,
    dst: Address,
    sport: int,
    dport: int,
    flags: str | int = "S",
    seq: int = 0,
    ack: int = 0,
    window: int = 64240,
    payload: bytes = b"",
    options: bytes = b"",
    ttl: int = 64,
) -> bytes:
    """A TCP segment in an IP packet; `options` is padded with EOL to a multiple of 4 bytes."""
    family, s, d = _pair(src, dst)
    options += b"\0" * (-len(options) % 4)
    doff = (5 + len(options) // 4) << 4
    head = _TCP.pack(sport, dport, seq, ack, doff, tcp_flags(flags), window, 0, 0)
    segment = head + options + payload
    segment = _with_csum(segment, 16, l4_checksum(family, s, d, TCP, segment))
    return ip(src, dst, TCP, segment, ttl)


def udp(
    src: Address, dst: Address, sport: int, dport: int, payload: bytes = b"", ttl: int = 64
) -> bytes:
    family, s, d = _pair(src, dst)
    segment = _UDP.pack(sport, dport, 8 + len(payload), 0) + payload
    segment = _with_csum(segment, 6, l4_checksum(family, s, d, UDP, segment))
    return ip(src, dst, UDP, segment, ttl)


def icmp(
    src: Address,
    dst: Address,
    type: int,
    code: int = 0,
    payload: bytes = b"",
    rest: int = 0,
    ttl: int = 64,
) -> bytes:
    """ICMP (IPv4) or ICMPv6 by family; `rest` is the header's second word (id/seq, MTU...)."""
    family, s, d = _pair(src, dst)
    proto = ICMP if family == 4 else ICMPV6
    segment = _ICMP.pack(type, code, 0, rest) + payload
    segment = _with_csum(segment, 2, l4_checksum(family, s, d, proto, segment))
    return ip(src, dst, proto, segment, ttl)


def icmpv6(
    src: Address,
    dst: Address,
    type: int,
    code: int = 0,
    payload: bytes = b"",
    rest: int = 0,
    ttl: int = 64,
) -> bytes:
    """ICMPv6 (the family comes from the addresses, this name only reads better)."""
    if _addr(src).version != 6:
        raise ValueError("icmpv6 needs IPv6 addresses")
    return icmp(src, dst, type, code, payload, rest, ttl)


_V6_ECHO = {8: 128, 0: 129}


def icmp_echo(
    src: Address,
    dst: Address,
    type: int = 8,
    id: int = 0,
    seq: int = 0,
    payload: bytes = b"",
    ttl: int = 64,
) -> bytes:
    """Echo request/reply; the v4 numbers (8, 0) also work for IPv6, so callers stay generic."""
    if _addr(src).version == 6:
        type = _V6_ECHO.get(type, type)
    return icmp(src, dst, type, 0, payload, (id << 16) | seq, ttl)
