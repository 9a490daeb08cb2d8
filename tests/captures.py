"""Capture files written byte by byte, so tests control every field a reader trusts.

scapy's writers only make well-formed files with one link type per interface they choose; the
tests need several interfaces of different link types in one pcapng, blocks without timestamps,
link types nobody knows, and files cut in the middle of a block.
"""

from __future__ import annotations

import gzip
import struct

from fw import craft

# link-layer headers that carry an IPv4 packet, by link type
ETHERNET = bytes.fromhex("020000000001" "020000000002" "0800")
SLL2 = bytes.fromhex("0800 0000 00000002 0001 01 06 020000000002 0000")
NULL_V4 = struct.pack("<I", 2)  # BSD loopback: the address family in host (here little) order
SYN = craft.tcp("192.0.2.2", "203.0.113.10", 40000, 80, "S")
SYN6 = craft.tcp("2001:db8:1::2", "2001:db8:2::10", 40000, 80, "S")
SYNACK = craft.tcp("203.0.113.10", "203.0.113.1", 80, 40000, "SA", ack=1)
ICMP_ERROR = craft.icmp("203.0.113.10", "203.0.113.1", 3, 3,
                        payload=craft.udp("203.0.113.1", "203.0.113.10", 5353, 53))


def pcap(records: list[tuple[float, bytes]], linktype: int = 1) -> bytes:
    """A classic little-endian microsecond pcap: header, then one record per packet."""
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)
    for when, data in records:
        sec = int(when)
        out += struct.pack("<IIII", sec, round((when - sec) * 1e6), len(data), len(data)) + data
    return out


def block(kind: int, body: bytes) -> bytes:
    """A pcapng block: type, total length, body padded to 32 bits, total length again."""
    body += b"\0" * (-len(body) % 4)
    size = 12 + len(body)
    return struct.pack("<II", kind, size) + body + struct.pack("<I", size)


def shb() -> bytes:
    return block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(linktype: int, snaplen: int = 262144) -> bytes:
    return block(1, struct.pack("<HHI", linktype, 0, snaplen))


def epb(interface: int, when: float, data: bytes) -> bytes:
    """An Enhanced Packet Block: microsecond time (the default resolution)."""
    ticks = round(when * 1e6)
    head = struct.pack("<IIIII", interface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
    return block(6, head + data)


def spb(data: bytes) -> bytes:
    """A Simple Packet Block: no interface (the first one is meant), no timestamp."""
    return block(3, struct.pack("<I", len(data)) + data)


def several_interfaces() -> bytes:
    """Ethernet, raw IP, BSD loopback and Linux SLL2 interfaces, then an untimed packet."""
    return (shb() + idb(1) + idb(101) + idb(0) + idb(276)
            + epb(0, 100.0, ETHERNET + SYN) + epb(1, 100.5, SYN6)
            + epb(2, 101.0, NULL_V4 + SYN) + epb(3, 101.5, SLL2 + SYN)
            + spb(ETHERNET + SYN))


def seeds() -> list[bytes]:
    """Well-formed captures of each kind the reader knows, for fuzzers to damage."""
    conversation = [(1.0, ETHERNET + SYN), (1.1, ETHERNET + SYNACK), (1.2, ETHERNET + ICMP_ERROR)]
    return [
        pcap(conversation),
        pcap([(2.0, SYN6), (2.5, SYN)], linktype=101),
        several_interfaces(),
        shb() + idb(147) + epb(0, 3.0, SYN) + idb(113) + epb(1, 3.5, bytes(16) + SYN),
        gzip.compress(pcap(conversation), mtime=0),
    ]
