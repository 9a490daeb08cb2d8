"""The pcap adapter's I/O: captures in (raw IP bytes + timestamps), accepted packets out.

Reading goes through scapy's raw readers, which do not dissect: the engine decodes the bytes
itself. A capture that is cut short raises CaptureError *after* the packets before the damage
were handed out, so a replay still judges everything that could be read.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from fw.errors import CaptureError
from fw.userfiles import UnreadableFile, open_regular

SNAPLEN = 262_144
LINKTYPE_RAW = 101
LINKTYPE_MASK = 0xFFFF  # the upper bits of a pcap header's link type carry FCS details
# link type -> bytes before the IP header (Ethernet is read by ethertype, VLAN tags skipped)
LINK_HEADERS: dict[int, int] = {
    0: 4, 12: 0, 101: 0, 108: 4, 113: 16, 228: 0, 229: 0, 276: 20,
}
IP_ETHERTYPES = (0x0800, 0x86DD)
DAMAGE = (struct.error, ValueError, OverflowError, OSError, zlib.error)
PROTOCOL_FIELD = {113: 14, 276: 0}  # where Linux cooked captures (SLL, SLL2) keep the ethertype


@dataclass(frozen=True, slots=True)
class Frame:
    index: int
    time: float
    data: bytes  # from the IP header on; b"" when the frame carries no IP packet
    not_ip: str = ""  # then what it carries instead: "ethertype 0x0806", "link type 147"


def open_reader(path: str):
    """A scapy raw reader on the file, which must be a regular file (see fw.userfiles)."""
    logging.getLogger("scapy").setLevel(logging.ERROR)  # we report damage ourselves, once
    from scapy.error import Scapy_Exception
    from scapy.utils import RawPcapReader

    try:
        f = open_regular(path)
    except UnreadableFile as exc:
        raise CaptureError(str(exc)) from None
    try:
        return RawPcapReader(f)
    except (Scapy_Exception, EOFError, *DAMAGE) as exc:
        f.close()
        raise CaptureError(f"{path}: not a pcap or pcapng capture ({exc})") from None


def read_frames(path: str) -> Iterator[Frame]:
    """Every frame as raw IP; CaptureError at the end if the file was damaged."""
    reader = open_reader(path)
    raw = reader.f.fileobj if isinstance(reader.f, gzip.GzipFile) else None
    index, when = 0, 0.0
    try:
        for data, meta in iter_records(reader):
            check_record(path, index, data, meta)
            when = timestamp(meta, when)
            link = linktype(reader, meta)
            payload = ip_payload(data, link)
            yield Frame(index, when, payload, "" if payload else not_ip(data, link))
            index += 1
    except CutShort as exc:
        raise CaptureError(f"{path}: capture cut short after packet {index} "
                           f"({exc.left} bytes of a damaged record at the end)") from None
    except DamagedBlock as exc:
        raise CaptureError(f"{path}: damaged after packet {index} ({exc})") from None
    finally:
        reader.close()
        if raw is not None:
            raw.close()


class DamagedBlock(Exception):
    """scapy met a block it cannot read past (read_frames says where)."""


class CutShort(Exception):
    """scapy stopped before the end of the file: what is left is not a whole record."""

    def __init__(self, left: int) -> None:
        super().__init__(left)
        self.left = left


def iter_records(reader) -> Iterator[tuple[bytes, object]]:
    """scapy's packet records. It ends a file with EOFError, and a damaged one too: the position
    where the failed read started tells them apart (a pcapng is read block by block for that,
    since one packet read may pass over several blocks that are not packets)."""
    from scapy.error import Scapy_Exception

    read = getattr(reader, "_read_block", reader._read_packet)
    size = None if isinstance(reader.f, gzip.GzipFile) else os.fstat(reader.f.fileno()).st_size
    while True:
        start = reader.f.tell()
        try:
            record = read(SNAPLEN)
        except EOFError:
            if size is not None and start < size:
                raise CutShort(size - start) from None
            return
        except (Scapy_Exception, *DAMAGE) as exc:
            raise DamagedBlock(str(exc) or type(exc).__name__) from None
        if record is not None:
            yield record


def linktype(reader, meta) -> int:
    """pcapng gives each packet its interface's link type; pcap has one, in the file header."""
    value = getattr(meta, "linktype", None)
    if value is None:
        value = reader.linktype
    return value & LINKTYPE_MASK


def timestamp(meta, previous: float) -> float:
    """Seconds; a pcapng Simple Packet Block has no time, so it keeps the previous one."""
    if hasattr(meta, "tshigh"):
        if meta.tshigh is None:
            return previous
        return ((meta.tshigh << 32) | meta.tslow) / (meta.tsresol or 1_000_000)
    return meta.sec + meta.usec / 1_000_000


def ip_payload(data: bytes, linktype: int) -> bytes:
    """Strip the link-layer header (Ethernet with VLAN tags, SLL, SLL2, loopback)."""
    if linktype == 1:
        offset, ethertype = ethernet_type(data)
        return data[offset:] if ethertype in IP_ETHERTYPES else b""
    header = LINK_HEADERS.get(linktype)
    field = PROTOCOL_FIELD.get(linktype)
    if field is not None and int.from_bytes(data[field : field + 2], "big") not in IP_ETHERTYPES:
        return b""  # ARP and the like in a Linux cooked capture (tcpdump -i any)
    return data[header:] if header is not None else b""


def ethernet_type(data: bytes) -> tuple[int, int]:
    """Where an Ethernet frame's payload starts and its ethertype, past any VLAN tags."""
    offset, ethertype = 12, int.from_bytes(data[12:14], "big")
    while ethertype in (0x8100, 0x88A8) and len(data) >= offset + 6:
        offset += 4
        ethertype = int.from_bytes(data[offset : offset + 2], "big")
    return offset + 2, ethertype


def not_ip(data: bytes, linktype: int) -> str:
    """Why a frame gave no IP packet, for the replay's packet column; '' if it should have."""
    if linktype == 1:
        ethertype = ethernet_type(data)[1]
        if ethertype < 0x0600:
            return f"802.3 frame of {ethertype} bytes"
        return "" if ethertype in IP_ETHERTYPES else f"ethertype 0x{ethertype:04x}"
    field = PROTOCOL_FIELD.get(linktype)
    if field is not None:
        protocol = int.from_bytes(data[field : field + 2], "big")
        return "" if protocol in IP_ETHERTYPES else f"ethertype 0x{protocol:04x}"
    return "" if linktype in LINK_HEADERS else f"link type {linktype}"


def check_record(path: str, index: int, data: bytes, meta) -> None:
    caplen = getattr(meta, "caplen", None)
    if caplen is not None and len(data) < min(caplen, SNAPLEN):
        raise CaptureError(f"{path}: capture cut short in packet {index + 1} "
                           f"({len(data)} of {caplen} bytes)")


class RawWriter:
    """Accepted packets as they leave the firewall: raw IP, original timestamps.

    Written to a hidden file beside `path` and renamed to `path` by `close(keep=True)` only:
    a replay that fails (no such capture, a damaged one) leaves no `--out` file behind, empty
    or partial, and never clobbers an older good one."""

    def __init__(self, path: str) -> None:
        from scapy.utils import PcapWriter

        self.path = path
        head, tail = os.path.split(path)
        self.partial = os.path.join(head, f".{tail}.part")
        try:
            self.writer = PcapWriter(self.partial, linktype=LINKTYPE_RAW, sync=False)
            self.writer.write_header(None)  # write_packet() alone never writes it
        except OSError as exc:
            raise CaptureError(f"{path}: cannot write ({exc.strerror})") from None

    def write(self, data: bytes, when: float) -> None:
        sec = int(when)
        self.writer.write_packet(data, sec=sec, usec=round((when - sec) * 1_000_000))

    def close(self, keep: bool = True) -> None:
        """Finish the file: renamed into place when `keep`, removed otherwise."""
        self.writer.close()
        if keep:
            os.replace(self.partial, self.path)
        else:
            with contextlib.suppress(OSError):
                os.unlink(self.partial)
