"""Decode the IP and transport headers of one packet, sans-IO.

The engine calls `decode` on every packet, so it reads the buffer in place with precompiled
`struct` formats, creates exactly one `Packet`, and never raises: a malformed packet is a verdict
input (conntrack's INVALID), not an error. A packet whose headers cannot be trusted gets
`invalid` set to a short reason, with every field that could be read still filled in, so that
`explain` and the log can say what arrived.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from fw.core.protocols import (
    ICMP,
    ICMPV6,
    QUERY_REPLY,
    QUERY_TYPES,
    SYN,
    TCP,
    UDP,
)

ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8
ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY = 128, 129
ICMP_ERRORS = frozenset({3, 4, 5, 11, 12})
ICMPV6_ERRORS = frozenset({1, 2, 3, 4})

_V4 = struct.Struct("!BBHHHBBHII")  # ver/ihl tos len id frag ttl proto csum src dst
_V6 = struct.Struct("!IHBB")  # ver/tc/flow, payload length, next header, hop limit
_TCP = struct.Struct("!HHIIBBH")  # sport dport seq ack offset flags window
_PORTS = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

_V6_EXT = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options: (len+1)*8 bytes
_V6_FRAG, _V6_AH = 44, 51
_V6_WALK = _V6_EXT | {_V6_FRAG, _V6_AH}
_ICMP_HDR = 8  # every ICMP/ICMPv6 message we look into has an 8-byte header
_TS_LAYOUT = b"\x01\x01\x08\x0a"  # NOP NOP timestamp: the options of nearly every data segment


@dataclass(slots=True)
class Packet:
    """One decoded packet: plain fields, so the hot path reads attributes, not properties."""

    raw: bytes | bytearray
    family: int = 0
    src: int = 0
    dst: int = 0
    proto: int = -1
    length: int = 0
    ttl: int = 0
    l4_offset: int = -1
    sport: int = -1
    dport: int = -1
    tcp_flags: int = 0
    seq: int = 0
    ack: int = 0
    window: int = 0
    payload_len: int = 0
    wscale: int = -1
    sack_perm: bool = False
    icmp_type: int = -1
    icmp_code: int = -1
    icmp_id: int = -1
    frag_id: int = -1
    frag_offset: int = 0
    more_fragments: bool = False
    invalid: str | None = None
    inner: Packet | None = None

    @property
    def is_fragment(self) -> bool:
        """An atomic IPv6 fragment (offset 0, no MF) is a whole packet, so it is not one."""
        return self.more_fragments or self.frag_offset > 0

    @property
    def is_first_fragment(self) -> bool:
        return self.more_fragments and self.frag_offset == 0

    @property
    def is_later_fragment(self) -> bool:
        """Later fragments carry no L4 header: ports and flags are unknown."""
        return self.frag_offset > 0

    @property
    def is_icmp_error(self) -> bool:
        if self.family == 4:
            return self.proto == ICMP and self.icmp_type in ICMP_ERRORS
        return self.proto == ICMPV6 and self.icmp_type in ICMPV6_ERRORS

    @property
    def is_echo_request(self) -> bool:
        if self.family == 4:
            return self.proto == ICMP and self.icmp_type == ICMP_ECHO_REQUEST
        return self.proto == ICMPV6 and self.icmp_type == ICMPV6_ECHO_REQUEST

    @property
    def is_query_request(self) -> bool:
        """An ICMP query that opens a connection as Linux tracks it (echo, timestamp...)."""
        if self.proto != (ICMP if self.family == 4 else ICMPV6) or self.icmp_id < 0:
            return False
        return self.icmp_type in QUERY_REPLY[self.family]

    @property
    def is_echo_reply(self) -> bool:
        if self.family == 4:
            return self.proto == ICMP and self.icmp_type == ICMP_ECHO_REPLY
        return self.proto == ICMPV6 and self.icmp_type == ICMPV6_ECHO_REPLY


# An IPv4 header without options and the TCP header up to the window, for decode's fast path:
# version/IHL, total length, frag, ttl, proto, src, dst | sport, dport, seq, ack, offset, flags, win
_V4_TCP = struct.Struct("!BxHxxHBBxxIIHHIIBBH")


def decode(buf: bytes | bytearray | memoryview, wire_len: int | None = None) -> Packet:
    """Decode `buf` (starting at the IP header); never raises, whatever the bytes.

    `wire_len`: the packet's size when `buf` holds only its first bytes, as a capture cut at
    its snap length (pcap's orig_len, the lab queue's copy range: a 64 KiB GSO packet of an
    untranslated flow need not cross into userspace whole). Sizes and validity then follow the
    packet's headers as if it were whole; only headers are read, so a cut inside them is
    `invalid`.

    The fast path, inlined because it runs for nearly every packet: an unfragmented TCP/IPv4
    packet with a 20-byte IP header and no TCP options (or only NOP NOP timestamp), whole and
    valid, is read with one `unpack_from` and built with one call. Anything else goes the
    general way (`decode_general`), which gives the same result for these packets too.
    """
    raw = buf if type(buf) is bytes or type(buf) is bytearray else bytes(buf)
    end = len(raw) if wire_len is None else max(wire_len, len(raw))
    if len(raw) >= 40:
        vihl, total, frag, ttl, proto, src, dst, sport, dport, seq, ack, doff, flags, window = (
            _V4_TCP.unpack_from(raw)
        )
        if vihl == 0x45 and proto == TCP and not frag & 0x3FFF and 40 <= total <= end:
            hlen = (doff >> 4) << 2
            if hlen == 20 or (hlen == 32 and total >= 52 and raw[40:44] == _TS_LAYOUT):
                return Packet(
                    raw, 4, src, dst, TCP, total, ttl, 20, sport, dport, flags, seq, ack, window,
                    total - 20 - hlen,
                )  # fmt: skip
    return decode_general(raw, end)


def decode_general(raw: bytes | bytearray, end: int | None = None) -> Packet:
    """Any packet, any shape: what `decode` does when its fast path declines. `end`: the
    packet's size on the wire (len(raw) unless it was cut short)."""
    pkt = Packet(raw)
    end = len(raw) if end is None else end
    try:
        if raw and raw[0] >> 4 == 4:  # the common case first, one call less
            _decode_v4(pkt, raw, end, False)
        else:
            _decode_ip(pkt, raw, end, False)
    except Exception as exc:  # a decoder bug must not take the engine down with it
        cut = len(raw) < end  # or a copy cut inside the headers (decode's wire_len)
        pkt.invalid = "headers cut short" if cut else f"undecodable: {type(exc).__name__}"
    return pkt


def _decode_ip(pkt: Packet, raw: bytes | bytearray, end: int, quoted: bool) -> None:
    """`quoted` is the lenient mode for the packet inside an ICMP error, which is cut short."""
    if end == 0:
        pkt.invalid = "empty packet"
        return
    version = raw[0] >> 4
    if version == 4:
        _decode_v4(pkt, raw, end, quoted)
    elif version == 6:
        _decode_v6(pkt, raw, end, quoted)
    else:
        pkt.invalid = f"IP version {version}"


def _decode_v4(pkt: Packet, raw: bytes | bytearray, end: int, quoted: bool) -> None:
    pkt.family = 4
    if end < 20:
        pkt.invalid = "truncated IPv4 header"
        return
    vihl, _, total, ident, frag, pkt.ttl, proto, _, pkt.src, pkt.dst = _V4.unpack_from(raw)
    pkt.proto = proto
    ihl = (vihl & 15) << 2
    if ihl < 20 or ihl > end:
        pkt.invalid = "bad IPv4 header length" if ihl < 20 else "truncated IPv4 options"
        return
    if total < ihl:
        pkt.invalid = "IPv4 total length shorter than header"
        return
    if total > end:
        if not quoted:
            pkt.invalid = "truncated IPv4 packet"
            return
    else:
        end = total
    pkt.length = total
    if frag & 0x3FFF:
        pkt.frag_id = ident
        pkt.more_fragments = bool(frag & 0x2000)
        pkt.frag_offset = (frag & 0x1FFF) << 3
        if pkt.frag_offset:
            return
    pkt.l4_offset = ihl
    _decode_l4(pkt, raw, ihl, end, proto, quoted)


def _decode_v6(pkt: Packet, raw: bytes | bytearray, end: int, quoted: bool) -> None:
    pkt.family = 6
    if end < 40:
        pkt.invalid = "truncated IPv6 header"
        return
    _, plen, nh, pkt.ttl = _V6.unpack_from(raw)
    pkt.src = int.from_bytes(raw[8:24])
    pkt.dst = int.from_bytes(raw[24:40])
    total = 40 + plen
    if total > end:
        if not quoted:
            pkt.invalid = "truncated IPv6 packet"
            return
    else:
        end = total
    pkt.length = total
    off = 40
    if nh in _V6_WALK:
        nh, off = _walk_v6_ext(pkt, raw, nh, end)
        if off < 0:
            return
    pkt.proto = nh
    if pkt.frag_offset:
        return
    pkt.l4_offset = off
    _decode_l4(pkt, raw, off, end, nh, quoted)


def _walk_v6_ext(pkt: Packet, raw: bytes | bytearray, nh: int, end: int) -> tuple[int, int]:
    """Follow the extension header chain: (upper protocol, its offset), offset -1 if broken."""
    off = 40
    while nh in _V6_WALK:
        if off + 8 > end:
            pkt.invalid = "truncated IPv6 extension header"
            return nh, -1
        if nh == _V6_FRAG:
            fo = _U16.unpack_from(raw, off + 2)[0]
            pkt.frag_offset = fo & 0xFFF8
            pkt.more_fragments = bool(fo & 1)
            pkt.frag_id = _U32.unpack_from(raw, off + 4)[0]
            if pkt.frag_offset:  # what follows is fragment data, not a header
                return raw[off], off + 8
            size = 8
        elif nh == _V6_AH:
            size = (raw[off + 1] + 2) << 2
        else:
            size = (raw[off + 1] + 1) << 3
        nh = raw[off]
        off += size
    if off > end:
        pkt.invalid = "truncated IPv6 extension header"
        return nh, -1
    return nh, off


def _decode_l4(
    pkt: Packet, raw: bytes | bytearray, off: int, end: int, proto: int, quoted: bool
) -> None:
    if proto == TCP:
        _decode_tcp(pkt, raw, off, end, quoted)
    elif proto == UDP:
        _decode_udp(pkt, raw, off, end, quoted)
    elif proto == (ICMP if pkt.family == 4 else ICMPV6):
        _decode_icmp(pkt, raw, off, end, quoted)
    else:
        pkt.payload_len = end - off


def _decode_tcp(pkt: Packet, raw: bytes | bytearray, off: int, end: int, quoted: bool) -> None:
    avail = end - off
    if avail < 20:
        if quoted and avail >= 8:  # an ICMP error quotes 8 bytes: ports and sequence number
            pkt.sport, pkt.dport, pkt.seq = struct.unpack_from("!HHI", raw, off)
        else:
            pkt.invalid = "truncated TCP header"
        return
    sport, dport, seq, ack, doff, flags, window = _TCP.unpack_from(raw, off)
    hlen = (doff >> 4) << 2
    if hlen < 20 or (hlen > avail and not quoted):
        pkt.invalid = "bad TCP data offset"
        return
    pkt.sport, pkt.dport, pkt.seq, pkt.ack = sport, dport, seq, ack
    pkt.tcp_flags, pkt.window, pkt.payload_len = flags, window, max(avail - hlen, 0)
    if 20 < hlen <= avail:
        _tcp_options(pkt, raw, off + 20, off + hlen, flags & SYN)


def _tcp_options(pkt: Packet, raw: bytes | bytearray, i: int, end: int, syn: int) -> None:
    """Check the option list; keep window scale and SACK-permitted, which only a SYN negotiates."""
    if end - i == 12 and raw[i : i + 4] == _TS_LAYOUT:
        return
    while i < end:
        kind = raw[i]
        if kind == 0:
            return
        if kind == 1:
            i += 1
            continue
        olen = raw[i + 1] if i + 1 < end else 0
        if olen < 2 or i + olen > end or (kind == 3 and olen != 3) or (kind == 4 and olen != 2):
            pkt.invalid = "bad TCP options"
            return
        if syn and kind == 3:
            pkt.wscale = raw[i + 2]
        elif syn and kind == 4:
            pkt.sack_perm = True
        i += olen


def _decode_udp(pkt: Packet, raw: bytes | bytearray, off: int, end: int, quoted: bool) -> None:
    avail = end - off
    if avail < 8:
        pkt.invalid = "truncated UDP header"
        return
    sport, dport, ulen = struct.unpack_from("!HHH", raw, off)
    if not quoted and not pkt.more_fragments and (ulen < 8 or ulen > avail):
        pkt.invalid = "bad UDP length"
        return
    pkt.sport, pkt.dport = sport, dport
    pkt.payload_len = min(ulen, avail) - 8 if ulen >= 8 else avail - 8


def _decode_icmp(pkt: Packet, raw: bytes | bytearray, off: int, end: int, quoted: bool) -> None:
    if end - off < _ICMP_HDR:
        pkt.invalid = "truncated ICMP header"
        return
    itype = pkt.icmp_type = raw[off]
    pkt.icmp_code = raw[off + 1]
    pkt.payload_len = end - off - _ICMP_HDR
    if pkt.family == 4:
        query, error = itype in QUERY_TYPES[4], itype in ICMP_ERRORS
    else:
        query, error = itype in QUERY_TYPES[6], itype in ICMPV6_ERRORS
    if query:
        pkt.icmp_id = _U16.unpack_from(raw, off + 4)[0]
    elif error and not quoted:
        _decode_quoted(pkt, raw[off + _ICMP_HDR : end])


def _decode_quoted(pkt: Packet, quote: bytes | bytearray) -> None:
    """The quoted header is what conntrack matches an error against, so too little is INVALID."""
    inner = pkt.inner = Packet(bytes(quote))
    _decode_ip(inner, inner.raw, len(quote), quoted=True)
    if inner.family != pkt.family:
        pkt.invalid = "ICMP error quotes no matching IP header"
    elif inner.l4_offset < 0 and not inner.frag_offset:
        pkt.invalid = "ICMP error quotes a truncated IP header"
    elif inner.l4_offset >= 0 and _quoted_l4(inner, len(quote)) < min(8, _l4_len(inner)):
        pkt.invalid = "ICMP error quotes fewer than 8 bytes of the transport header"


def _l4_len(pkt: Packet) -> int:
    """Transport bytes the packet says it has (its total length minus its headers)."""
    return pkt.length - pkt.l4_offset


def _quoted_l4(inner: Packet, quoted: int) -> int:
    """Transport bytes an ICMP error actually quotes (8 are enough: they hold the ports)."""
    return min(quoted, inner.length) - inner.l4_offset
