"""The pcap adapter's I/O: captures in (raw IP bytes + timestamps), accepted packets out.

Reading goes through scapy's raw readers, which do not dissect: the engine decodes the bytes
itself. A capture that is cut short raises CaptureError *after* the packets before the damage
were handed out, so a replay still judges everything that could be read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from fw.errors import CaptureError

SNAPLEN = 262_144
LINKTYPE_RAW = 101
# link type -> bytes before the IP header (None: read the ethertype like Ethernet)
LINK_HEADERS: dict[int, int] = {0: 4, 1: 14, 12: 0, 101: 0, 113: 16, 228: 0, 229: 0, 276: 20}
IP_ETHERTYPES = (0x0800, 0x86DD)


@dataclass(frozen=True, slots=True)
class Frame:
    index: int
    time: float
    data: bytes  # from the IP header on; b"" when the frame carries no IP packet


def open_reader(path: str):
    logging.getLogger("scapy").setLevel(logging.ERROR)  # we report damage ourselves, once
    from scapy.error import Scapy_Exception
    from scapy.utils import RawPcapReader

    if os.path.isdir(path):
        raise CaptureError(f"{path}: is a directory, not a capture")
    try:
        return RawPcapReader(path)
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such file") from None
    except (Scapy_Exception, OSError, EOFError) as exc:
        raise CaptureError(f"{path}: not a pcap or pcapng capture ({exc})") from None


def read_frames(path: str) -> Iterator[Frame]:
    """Every frame as raw IP; CaptureError at the end if the file was damaged."""
    reader = open_reader(path)
    try:
        index = 0
        for data, meta in iter_records(reader):
            linktype = getattr(meta, "linktype", None) or reader.linktype
            check_record(path, index, data, meta)
            yield Frame(index, timestamp(meta), ip_payload(data, linktype))
            index += 1
        check_tail(path, reader, index)
    finally:
        reader.close()


def iter_records(reader) -> Iterator[tuple[bytes, object]]:
    while True:
        try:
            record = reader._read_packet(SNAPLEN)
        except EOFError:
            return
        if record is None:
            return
        yield record


def timestamp(meta) -> float:
    if hasattr(meta, "tshigh"):
        return ((meta.tshigh << 32) | meta.tslow) / (meta.tsresol or 1_000_000)
    return meta.sec + meta.usec / 1_000_000


def ip_payload(data: bytes, linktype: int) -> bytes:
    """Strip the link-layer header (Ethernet with VLAN tags, SLL, SLL2, loopback)."""
    if linktype == 1:
        offset, ethertype = 12, int.from_bytes(data[12:14], "big")
        while ethertype in (0x8100, 0x88A8) and len(data) >= offset + 6:
            offset += 4
            ethertype = int.from_bytes(data[offset : offset + 2], "big")
        return data[offset + 2 :] if ethertype in IP_ETHERTYPES else b""
    header = LINK_HEADERS.get(linktype)
    return data[header:] if header is not None else b""


def check_record(path: str, index: int, data: bytes, meta) -> None:
    caplen = getattr(meta, "caplen", None)
    if caplen is not None and len(data) < min(caplen, SNAPLEN):
        raise CaptureError(f"{path}: capture cut short in packet {index + 1} "
                           f"({len(data)} of {caplen} bytes)")


def check_tail(path: str, reader, count: int) -> None:
    """RawPcapReader stops quietly at a partial record header; say so instead."""
    f = getattr(reader, "f", None)
    size = os.path.getsize(path)
    if f is not None and not path.endswith(".gz") and hasattr(f, "tell") and f.tell() < size:
        raise CaptureError(f"{path}: capture cut short after packet {count} "
                           f"({size - f.tell()} bytes of a damaged record at the end)")


class RawWriter:
    """Accepted packets as they leave the firewall: raw IP, original timestamps."""

    def __init__(self, path: str) -> None:
        from scapy.utils import PcapWriter

        try:
            self.writer = PcapWriter(path, linktype=LINKTYPE_RAW, sync=False)
            self.writer.write_header(None)  # write_packet() alone never writes it
        except OSError as exc:
            raise CaptureError(f"{path}: cannot write ({exc.strerror})") from None

    def write(self, data: bytes, when: float) -> None:
        sec = int(when)
        self.writer.write_packet(data, sec=sec, usec=round((when - sec) * 1_000_000))

    def close(self) -> None:
        self.writer.close()
