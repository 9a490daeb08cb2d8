"""Internet checksum (RFC 1071), incremental update (RFC 1624) and in-place NAT rewrites.

Arithmetic trick used throughout: 2**16 == 1 (mod 0xffff), so the one's complement sum of the
16-bit words of a buffer is congruent to the buffer read as one big integer, modulo 0xffff. A
full checksum is then one `int.from_bytes` and one `%`, and the RFC 1624 update
HC' = ~(~HC + ~m + m') becomes HC' = (HC + m - m') mod 0xffff, where m and m' may be whole
fields (a 32-bit address, a 128-bit one) as long as they start on a 16-bit boundary of the
checksummed data. The result is never 0xffff, exactly like a full recomputation over data that
is not all zero, so incremental and full checksums agree bit for bit.
"""

from __future__ import annotations

from fw.core.protocols import ICMP, ICMPV6, TCP, UDP
from fw.engine.packet import Packet

_IP_CSUM = 10
_L4_CSUM = {TCP: 16, UDP: 6, ICMP: 2, ICMPV6: 2}  # checksum offset inside the L4 header


def _fold(total: int) -> int:
    """One's complement sum of words whose integer total is `total` (0 only for all-zero data)."""
    s = total % 0xFFFF
    return 0xFFFF if s == 0 and total else s


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """RFC 1071 checksum of `data`, an odd length padded with a zero byte; `initial` is a sum."""
    n = int.from_bytes(data)
    if len(data) & 1:
        n <<= 8
    return ~_fold(n + initial) & 0xFFFF


def pseudo_header_sum(family: int, src: int, dst: int, proto: int, length: int) -> int:
    """The TCP/UDP/ICMPv6 pseudo header's contribution, to pass as `initial`.

    Both families sum the same words (v6 only widens length and protocol), hence one formula.
    """
    return _fold(src + dst + proto + length)


def l4_checksum(family: int, src: int, dst: int, proto: int, segment: bytes | bytearray) -> int:
    """Checksum of a transport segment whose checksum field is zero; ICMPv4 has no pseudo header."""
    if proto == ICMP and family == 4:
        return internet_checksum(segment)
    csum = internet_checksum(segment, pseudo_header_sum(family, src, dst, proto, len(segment)))
    return 0xFFFF if proto == UDP and csum == 0 else csum


def csum_update(old_csum: int, old_bytes: bytes, new_bytes: bytes) -> int:
    """RFC 1624 eqn. 3 for a 16-bit aligned, even-length field changing from old to new."""
    return (old_csum + int.from_bytes(old_bytes) - int.from_bytes(new_bytes)) % 0xFFFF


def verify(pkt: Packet) -> bool:
    """Whether the IPv4 header checksum and the transport checksum (when whole) are right."""
    raw = pkt.raw
    if pkt.invalid or pkt.family == 0:
        return False
    if pkt.family == 4 and internet_checksum(raw[: (raw[0] & 15) * 4]) != 0:
        return False
    off = _L4_CSUM.get(pkt.proto)
    if off is None or pkt.l4_offset < 0 or pkt.is_fragment:
        return True
    segment = raw[pkt.l4_offset : pkt.length]
    if pkt.proto == UDP and pkt.family == 4 and segment[6:8] == b"\0\0":
        return True
    if pkt.proto == ICMP:
        return internet_checksum(segment) == 0
    pseudo = pseudo_header_sum(pkt.family, pkt.src, pkt.dst, pkt.proto, len(segment))
    return internet_checksum(segment, pseudo) == 0


def transport_ok(pkt: Packet) -> bool:
    """What conntrack checks with nf_conntrack_checksum=1: the TCP, UDP or ICMP checksum of
    a whole (unfragmented) segment. One big-int sum: with the checksum field in, the words of a
    correct segment and its pseudo header sum to 0xffff, i.e. 0 mod 0xffff (and not 0)."""
    proto, off = pkt.proto, pkt.l4_offset
    if proto not in _L4_CSUM or off < 0 or pkt.more_fragments or pkt.frag_offset:
        return True  # (pkt.is_fragment, inlined: every packet comes here)
    segment = pkt.raw[off : pkt.length]
    if off + len(segment) < pkt.length:
        return True  # a copy cut short (decode's wire_len): nothing to check it by
    if proto == UDP and pkt.family == 4 and segment[6:8] == b"\0\0":
        return True  # no checksum
    total = int.from_bytes(segment)
    if len(segment) & 1:
        total <<= 8
    pseudo = 0
    if proto != ICMP or pkt.family != 4:
        pseudo = pkt.src + pkt.dst + proto + len(segment)
        total += pseudo
    return (total % 0xFFFF == 0 and total != 0) or not_computed_yet(segment, proto, pseudo)


_CSUM_AT = {TCP: 16, UDP: 6}


def not_computed_yet(segment: bytes, proto: int, pseudo: int) -> bool:
    """A segment a local sender left to the device to checksum (CHECKSUM_PARTIAL, as on a veth)
    carries only its pseudo header's sum; a capture in the lab is full of them, and Linux never
    calls them bad. A wrong checksum looks like this by chance once in 65,535."""
    at = _CSUM_AT.get(proto)
    if at is None or len(segment) < at + 2:
        return False
    return int.from_bytes(segment[at : at + 2]) % 0xFFFF == pseudo % 0xFFFF


def _put(buf: bytearray, off: int, size: int, new: int) -> int:
    """Write a field; return old - new, the checksum delta of the change."""
    old = int.from_bytes(buf[off : off + size])
    buf[off : off + size] = new.to_bytes(size)
    return old - new


def _adjust(buf: bytearray, off: int, delta: int, udp: bool = False) -> int:
    """Apply `delta` to the checksum at `off`; UDP's 0 means "no checksum" and stays 0."""
    old = (buf[off] << 8) | buf[off + 1]
    if (udp and old == 0) or delta % 0xFFFF == 0:
        return 0  # nothing changed: keep the field as it was (0xFFFF and 0 are not one value)
    new = (old + delta) % 0xFFFF
    if udp and new == 0:
        new = 0xFFFF
    buf[off] = new >> 8
    buf[off + 1] = new & 0xFF
    return old - new


def _rewrite_addrs(buf: bytearray, base: int, src: int | None, dst: int | None) -> tuple[int, int]:
    """Rewrite an IPv4 header's addresses and checksum: (address delta, header checksum delta)."""
    delta = 0
    if src is not None:
        delta += _put(buf, base + 12, 4, src)
    if dst is not None:
        delta += _put(buf, base + 16, 4, dst)
    return delta, _adjust(buf, base + _IP_CSUM, delta) if delta else 0


def _rewrite_ports(buf: bytearray, l4: int, sport: int | None, dport: int | None) -> int:
    delta = 0
    if sport is not None:
        delta += _put(buf, l4, 2, sport)
    if dport is not None:
        delta += _put(buf, l4 + 2, 2, dport)
    return delta


def _check_ports(pkt: Packet, ports: bool, icmp_id: int | None) -> None:
    """Rewriting a field the packet lacks is a caller bug, not a packet problem."""
    if ports and (pkt.sport < 0 or pkt.proto not in (TCP, UDP)):
        raise ValueError("packet has no ports to rewrite")
    if icmp_id is not None and pkt.icmp_id < 0:
        raise ValueError("packet has no ICMP echo id to rewrite")


def rewrite_v4(
    buf: bytearray,
    pkt: Packet,
    *,
    src: int | None = None,
    dst: int | None = None,
    sport: int | None = None,
    dport: int | None = None,
    icmp_id: int | None = None,
) -> None:
    """NAT44 in place: new addresses/ports/echo id, checksums updated, `pkt` kept in step."""
    if pkt.family != 4:
        raise ValueError("rewrite_v4 needs an IPv4 packet (NAT is NAT44)")
    _check_ports(pkt, sport is not None or dport is not None, icmp_id)
    addr_delta = _rewrite_addrs(buf, 0, src, dst)[0]
    l4 = pkt.l4_offset
    if pkt.sport >= 0:
        delta = addr_delta + _rewrite_ports(buf, l4, sport, dport)
        if delta:
            _adjust(buf, l4 + _L4_CSUM[pkt.proto], delta, udp=pkt.proto == UDP)
    elif icmp_id is not None:
        _adjust(buf, l4 + 2, _put(buf, l4 + 4, 2, icmp_id))
    _update_fields(pkt, src, dst, sport, dport, icmp_id)


def rewrite_v4_icmp_inner(
    buf: bytearray,
    pkt: Packet,
    *,
    src: int | None = None,
    dst: int | None = None,
    sport: int | None = None,
    dport: int | None = None,
    icmp_id: int | None = None,
) -> None:
    """Rewrite the header quoted in an ICMP error, so that it matches what its sender sent."""
    inner = pkt.inner
    if inner is None or pkt.family != 4:
        raise ValueError("not an IPv4 ICMP error with a quoted packet")
    _check_ports(inner, sport is not None or dport is not None, icmp_id)
    base = pkt.l4_offset + 8
    addr_delta, ip_csum_delta = _rewrite_addrs(buf, base, src, dst)
    delta = addr_delta + ip_csum_delta
    if inner.l4_offset >= 0:
        l4 = base + inner.l4_offset
        ports = (sport, dport, icmp_id)
        delta += _rewrite_inner_l4(buf, pkt.length, inner.proto, l4, addr_delta, *ports)
    _adjust(buf, pkt.l4_offset + 2, delta)
    _update_fields(inner, src, dst, sport, dport, icmp_id)
    inner.raw = bytes(buf[base : pkt.length])


def _rewrite_inner_l4(
    buf: bytearray,
    end: int,
    proto: int,
    l4: int,
    addr_delta: int,
    sport: int | None,
    dport: int | None,
    icmp_id: int | None,
) -> int:
    """Quoted ports/echo id and, when quoted, their checksum: the delta for the outer ICMP sum."""
    if icmp_id is not None:
        delta = _put(buf, l4 + 4, 2, icmp_id)
        return delta + _adjust(buf, l4 + 2, delta)
    if proto not in (TCP, UDP):
        return 0
    delta = _rewrite_ports(buf, l4, sport, dport)
    coff = l4 + _L4_CSUM[proto]
    if coff + 2 <= end and (addr_delta or delta):
        delta += _adjust(buf, coff, addr_delta + delta, udp=proto == UDP)
    return delta


def _update_fields(
    pkt: Packet,
    src: int | None,
    dst: int | None,
    sport: int | None,
    dport: int | None,
    icmp_id: int | None,
) -> None:
    if src is not None:
        pkt.src = src
    if dst is not None:
        pkt.dst = dst
    if sport is not None:
        pkt.sport = sport
    if dport is not None:
        pkt.dport = dport
    if icmp_id is not None:
        pkt.icmp_id = icmp_id


class FieldRewrite:
    """One side (source or destination) of a NAT'd IPv4 flow, rewritten the same way on every
    packet: the old values are the flow's own, so the RFC 1624 deltas are computed once per
    connection direction and each packet costs two writes and two checksum adjustments."""

    __slots__ = ("addr", "addr_at", "ip_delta", "l4_csum_at", "l4_delta", "port", "port_at",
                 "udp")

    def __init__(self, proto: int, side: str, old: tuple[int, int], new: tuple[int, int],
                 port_at: int | None) -> None:
        self.addr_at = 12 if side == "src" else 16
        self.addr = new[0].to_bytes(4)
        addr_delta = old[0] - new[0]
        self.ip_delta = addr_delta
        self.port_at = port_at
        self.port = new[1].to_bytes(2)
        port_delta = old[1] - new[1] if port_at is not None else 0
        self.l4_delta = port_delta + (addr_delta if proto in (TCP, UDP) else 0)
        self.l4_csum_at = _L4_CSUM.get(proto)
        self.udp = proto == UDP

    def apply(self, buf: bytearray, l4: int) -> None:
        at = self.addr_at
        buf[at : at + 4] = self.addr
        delta = self.ip_delta
        if delta % 0xFFFF:  # _adjust(buf, _IP_CSUM, delta) inlined: every translated packet
            new = (((buf[10] << 8) | buf[11]) + delta) % 0xFFFF
            buf[10] = new >> 8
            buf[11] = new & 0xFF
        if l4 < 0 or self.l4_csum_at is None:
            return  # a later fragment: no transport header to rewrite
        if self.port_at is not None:
            buf[l4 + self.port_at : l4 + self.port_at + 2] = self.port
        if self.l4_delta:
            _adjust(buf, l4 + self.l4_csum_at, self.l4_delta, self.udp)
