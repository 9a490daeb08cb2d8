"""Captures as replay meets them: pcapng interfaces of several link types, blocks without a
timestamp, unknown link types, files cut short or damaged, and paths that are not files."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from fw.errors import CaptureError
from fw.pcap import read_frames
from tests import captures as cap
from tests.cli import fwlab

RULES = "rules/stateful-web.fw"
SYN, SYN6 = cap.SYN, cap.SYN6


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_each_pcapng_packet_is_read_with_its_interfaces_link_type(tmp_path: Path) -> None:
    frames = list(read_frames(write(tmp_path, "multi.pcapng", cap.several_interfaces())))
    assert [f.data for f in frames] == [SYN, SYN6, SYN, SYN, SYN]
    assert [f.time for f in frames] == [100.0, 100.5, 101.0, 101.5, 101.5]  # SPB: no time


def test_a_pcapng_of_several_link_types_replays(tmp_path: Path, in_repo: Path) -> None:
    result = fwlab("replay", "--json", RULES, write(tmp_path, "multi.pcapng",
                                                    cap.several_interfaces()))
    assert result.code == 0, result.err
    packets = [json.loads(line)["packet"] for line in result.out.splitlines()]
    assert packets[1] == "tcp [2001:db8:1::2]:40000 -> [2001:db8:2::10]:80 flags S"
    assert packets.count("tcp 192.0.2.2:40000 -> 203.0.113.10:80 flags S") == 4


@pytest.mark.parametrize("linktype", [147, 0xFFFF, 105, 127])
def test_an_unknown_link_type_still_gets_a_verdict(tmp_path: Path, in_repo: Path,
                                                   linktype: int) -> None:
    data = cap.shb() + cap.idb(linktype) + cap.epb(0, 1.0, b"\x88" * 40)
    result = fwlab("replay", "--json", RULES, write(tmp_path, "odd.pcapng", data))
    assert result.code == 0, result.err
    row = json.loads(result.out)
    assert (row["packet"], row["verdict"]) == (f"not IP (link type {linktype})", "drop")


def test_an_ethernet_frame_without_ip_says_what_it_carries(tmp_path: Path) -> None:
    arp = cap.ETHERNET[:12] + bytes.fromhex("0806") + bytes(28)
    llc = cap.ETHERNET[:12] + bytes.fromhex("0026") + bytes(38)
    frames = list(read_frames(write(tmp_path, "l2.pcap", cap.pcap([(1.0, arp), (2.0, llc)]))))
    assert [(f.data, f.not_ip) for f in frames] == [
        (b"", "ethertype 0x0806"), (b"", "802.3 frame of 38 bytes")]


def test_pcap_link_type_upper_bits_are_fcs_details_not_another_type(tmp_path: Path) -> None:
    path = write(tmp_path, "fcs.pcap", cap.pcap([(1.0, cap.ETHERNET + SYN)], 0x30000001))
    assert [f.data for f in read_frames(path)] == [SYN]


def test_a_pcapng_cut_inside_a_block_is_judged_up_to_the_cut(tmp_path: Path,
                                                               in_repo: Path) -> None:
    packet = cap.epb(0, 1.0, cap.ETHERNET + SYN)
    whole = cap.shb() + cap.idb(1) + packet * 2
    result = fwlab("replay", "--json", RULES, write(tmp_path, "cut.pcapng", whole[:-10]))
    assert result.code == 2
    assert len(result.out.splitlines()) == 1
    assert result.err.strip().endswith(f"capture cut short after packet 1 ({len(packet) - 10} "
                                       "bytes of a damaged record at the end)")


def test_a_damaged_second_section_is_one_line(tmp_path: Path, in_repo: Path) -> None:
    bad_shb = struct.pack("<IIIHHq", 0x0A0D0D0A, 100, 0x1A2B3C4D, 1, 0, -1)  # options missing
    data = cap.shb() + cap.idb(1) + cap.epb(0, 1.0, cap.ETHERNET + SYN) + bad_shb
    result = fwlab("replay", "--json", RULES, write(tmp_path, "bad.pcapng", data))
    assert result.code == 2
    assert "damaged after packet 1" in result.err
    assert len(result.err.strip().splitlines()) == 1


@pytest.mark.parametrize(("target", "why"), [
    ("/dev/zero", "is a character device, not a regular file"),
    ("/dev/urandom", "is a character device, not a regular file"),
    ("fifo", "is a FIFO, not a regular file"),
    ("dir", "is a directory, not a regular file"),
])
def test_a_capture_must_be_a_regular_file(tmp_path: Path, in_repo: Path, target: str,
                                          why: str) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    path = target if target.startswith("/") else str(tmp_path / target)
    result = fwlab("replay", RULES, path)
    assert (result.code, result.err) == (2, f"fwlab: {path}: {why}\n")


def test_a_truncated_gzip_capture_is_not_a_crash(tmp_path: Path) -> None:
    import gzip

    data = gzip.compress(cap.pcap([(1.0, cap.ETHERNET + SYN)] * 3))
    path = write(tmp_path, "cut.pcap.gz", data[: len(data) // 2])
    try:
        frames = list(read_frames(path))
    except CaptureError:
        return
    assert len(frames) <= 3
