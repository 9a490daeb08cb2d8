"""The packet a `reject` verdict sends back: a TCP RST or an ICMP port unreachable, or what
`reject with tcp reset | icmp type CODE | icmpv6 type CODE` chose.

Follows Linux's nf_reject_ipv4/ipv6 and icmp_send: the RST obeys RFC 793's reset generation
rules, the ICMP error quotes as much of the offending packet as fits in the minimum MTU (576
bytes for IPv4, 1280 for IPv6), and nothing is sent where an answer would be wrong or would
feed a storm: to an ICMP error, a RST, a later fragment, or a multicast/broadcast/unspecified
address.
"""

from __future__ import annotations

import struct

from fw.core.protocols import ACK, FIN, ICMP, ICMPV6, RST, SYN, TCP
from fw.engine.checksum import internet_checksum, l4_checksum
from fw.engine.packet import Packet
from fw.model import RejectWith

TTL = 64  # Linux's default ip_default_ttl / hop_limit for locally generated packets
V4_MIN_MTU, V6_MIN_MTU = 576, 1280
ICMP_UNREACH, ICMP_PORT_UNREACH = 3, 3
ICMPV6_UNREACH, ICMPV6_PORT_UNREACH = 1, 4

_V4 = struct.Struct("!BBHHHBBHII")
_V6 = struct.Struct("!IHBB")
_TCP = struct.Struct("!HHIIBBHHH")
_V4_BCAST = 0xFFFFFFFF


def build_reject(pkt: Packet, *, src_override: int | None = None,
                 reply: RejectWith | None = None) -> bytes | None:
    """The answer to `pkt`, from its destination (or `src_override`); None when none is due.
    Without `reply`, TCP gets a RST and anything else a port unreachable; the rules language
    makes sure a `reply` fits the packets its rule matches (TCP only, one family)."""
    if not _may_answer(pkt):
        return None
    src = pkt.dst if src_override is None else src_override
    if reply is not None and reply.kind != "tcp-reset":
        return _unreachable(pkt, src, reply.code)
    if pkt.proto == TCP:
        return _rst(pkt, src) if pkt.sport >= 0 else None
    return _unreachable(pkt, src)


def _may_answer(pkt: Packet) -> bool:
    if pkt.family not in (4, 6) or pkt.proto < 0 or pkt.is_later_fragment:
        return False
    if _is_group_or_unspecified(pkt) or (pkt.proto == TCP and pkt.tcp_flags & RST):
        return False
    if pkt.proto == (ICMP if pkt.family == 4 else ICMPV6):
        return pkt.icmp_type >= 0 and not pkt.is_icmp_error
    return True


def _is_group_or_unspecified(pkt: Packet) -> bool:
    """Errors to or about multicast/broadcast would multiply; to 0.0.0.0/:: they go nowhere."""
    if pkt.family == 4:
        return pkt.dst >> 28 == 0xE or pkt.dst == _V4_BCAST or pkt.src == 0 or pkt.src >> 28 == 0xE
    return pkt.dst >> 120 == 0xFF or pkt.src == 0 or pkt.src >> 120 == 0xFF


def _rst(pkt: Packet, src: int) -> bytes:
    """RFC 793: answer an ACK with seq = its ack; anything else with RST|ACK acking the segment."""
    if pkt.tcp_flags & ACK:
        seq, ack, flags = pkt.ack, 0, RST
    else:
        seg_len = pkt.payload_len + bool(pkt.tcp_flags & SYN) + bool(pkt.tcp_flags & FIN)
        seq, ack, flags = 0, (pkt.seq + seg_len) & 0xFFFFFFFF, RST | ACK
    segment = _TCP.pack(pkt.dport, pkt.sport, seq, ack, 5 << 4, flags, 0, 0, 0)
    csum = l4_checksum(pkt.family, src, pkt.src, TCP, segment)
    segment = segment[:16] + csum.to_bytes(2) + segment[18:]
    return _ip(pkt.family, src, pkt.src, TCP, segment, df=True)


def _unreachable(pkt: Packet, src: int, code: int | None = None) -> bytes:
    if pkt.family == 4:
        proto, itype, port_code, room = ICMP, ICMP_UNREACH, ICMP_PORT_UNREACH, V4_MIN_MTU - 28
    else:
        proto, itype, port_code, room = ICMPV6, ICMPV6_UNREACH, ICMPV6_PORT_UNREACH, V6_MIN_MTU - 48
    code = port_code if code is None else code
    size = min(pkt.length or len(pkt.raw), len(pkt.raw), room)
    segment = bytes((itype, code, 0, 0, 0, 0, 0, 0)) + bytes(pkt.raw[:size])
    csum = l4_checksum(pkt.family, src, pkt.src, proto, segment)
    segment = segment[:2] + csum.to_bytes(2) + segment[4:]
    return _ip(pkt.family, src, pkt.src, proto, segment, df=False)


def _ip(family: int, src: int, dst: int, proto: int, payload: bytes, *, df: bool) -> bytes:
    if family == 6:
        addrs = src.to_bytes(16) + dst.to_bytes(16)
        return _V6.pack(6 << 28, len(payload), proto, TTL) + addrs + payload
    frag = 0x4000 if df else 0
    head = _V4.pack(0x45, 0, 20 + len(payload), 0, frag, TTL, proto, 0, src, dst)
    return head[:10] + internet_checksum(head).to_bytes(2) + head[12:] + payload
