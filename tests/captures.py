"""Capture files written byte by byte, so tests control every field a reader trusts.

scapy's writers only make well-formed files with one link type per interface they choose; the
tests need several interfaces of different link types in one pcapng, blocks without timestamps,
link types nobody knows, and files cut in the middle of a block.
"""

from __future__ import annotations

import struct

# link-layer headers that carry an IPv4 packet, by link type
ETHERNET = bytes.fromhex("020000000001" "020000000002" "0800")
SLL2 = bytes.fromhex("0800 0000 00000002 0001 01 06 020000000002 0000")
NULL_V4 = struct.pack("<I", 2)  # BSD loopback: the address family in host (here little) order


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
