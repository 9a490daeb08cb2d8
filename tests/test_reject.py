"""What a `reject` sends back, checked field by field and checksum by checksum with scapy."""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6

from fw import craft
from fw.core.protocols import ACK, RST
from fw.engine.checksum import verify
from fw.engine.packet import decode
from fw.engine.reject import build_reject

CLIENT, SERVER = "192.0.2.2", "203.0.113.10"
CLIENT6, SERVER6 = "2001:db8:1::2", "2001:db8:2::10"


def ip_int(text: str) -> int:
    return int(ipaddress.ip_address(text))


def reject(raw: bytes, **kw: int) -> bytes:
    out = build_reject(decode(raw), **kw)
    assert out is not None
    assert verify(decode(out)), "checksums of the reject are wrong"
    return out


def scapy_agrees(out: bytes) -> None:
    """Scapy recomputes the checksums of `out` to what it already holds."""
    sp = IPv6(out) if out[0] >> 4 == 6 else IP(out)
    if sp.version == 4:
        del sp.chksum
    del sp.payload.chksum
    assert bytes(sp) == out


def test_rst_for_syn() -> None:
    out = reject(craft.tcp(CLIENT, SERVER, 40000, 443, "S", seq=1000))
    sp = IP(out)
    assert (sp.src, sp.dst, sp[TCP].sport, sp[TCP].dport) == (SERVER, CLIENT, 443, 40000)
    assert sp[TCP].flags == RST | ACK and sp[TCP].seq == 0 and sp[TCP].ack == 1001
    assert sp.flags == "DF" and sp.ttl == 64
    scapy_agrees(out)


def test_rst_for_syn_fin_with_data_counts_all() -> None:
    out = reject(craft.tcp(CLIENT, SERVER, 1, 2, "SF", seq=2**32 - 2, payload=b"abcd"))
    assert IP(out)[TCP].ack == (2**32 - 2 + 4 + 2) % 2**32


def test_rst_for_ack_takes_its_ack_as_seq() -> None:
    out = reject(craft.tcp(CLIENT, SERVER, 1, 2, "PA", seq=5, ack=777, payload=b"x"))
    tcp = IP(out)[TCP]
    assert tcp.flags == RST and tcp.seq == 777 and tcp.ack == 0
    scapy_agrees(out)


def test_rst_ipv6() -> None:
    out = reject(craft.tcp(CLIENT6, SERVER6, 40000, 22, "S", seq=9))
    sp = IPv6(out)
    assert (sp.src, sp.dst, sp.nh, sp.hlim) == (SERVER6, CLIENT6, 6, 64)
    assert sp[TCP].flags == RST | ACK and sp[TCP].ack == 10
    scapy_agrees(out)


def test_udp_gets_port_unreachable_quoting_it() -> None:
    offending = craft.udp(CLIENT, SERVER, 5353, 53, b"query")
    out = reject(offending)
    sp = IP(out)
    assert (sp.src, sp.dst, sp[ICMP].type, sp[ICMP].code) == (SERVER, CLIENT, 3, 3)
    assert out[28:] == offending
    pkt = decode(out)
    assert pkt.invalid is None and pkt.inner is not None and pkt.inner.dport == 53
    scapy_agrees(out)


def test_quote_fits_in_576_bytes() -> None:
    out = reject(craft.udp(CLIENT, SERVER, 1, 2, bytes(1400)))
    assert len(out) == 576 and decode(out).invalid is None


def test_ipv6_port_unreachable_fits_in_1280() -> None:
    offending = craft.udp(CLIENT6, SERVER6, 1, 2, bytes(2000))
    out = reject(offending)
    sp = IPv6(out)
    assert (sp[ICMPv6DestUnreach].type, sp[ICMPv6DestUnreach].code) == (1, 4)
    assert len(out) == 1280 and out[48:] == offending[:1232]
    assert (sp.src, sp.dst) == (SERVER6, CLIENT6)


def test_src_override() -> None:
    out = reject(craft.udp(CLIENT, SERVER, 1, 2), src_override=ip_int("198.51.100.1"))
    assert IP(out).src == "198.51.100.1"
    out = reject(craft.tcp(CLIENT, SERVER, 1, 2), src_override=ip_int("198.51.100.1"))
    assert IP(out).src == "198.51.100.1"


def test_echo_request_and_other_protocols_get_port_unreachable() -> None:
    for raw in (craft.icmp_echo(CLIENT, SERVER, 8, 1, 1), craft.ip(CLIENT, SERVER, 47, b"gre!")):
        assert IP(reject(raw))[ICMP].type == 3
    assert IPv6(reject(craft.icmp_echo(CLIENT6, SERVER6, 8, 1, 1))).nh == 58


@pytest.mark.parametrize(
    "raw",
    [
        craft.tcp(CLIENT, SERVER, 1, 2, "R"),
        craft.tcp(CLIENT, SERVER, 1, 2, "RA"),
        craft.icmp(SERVER, CLIENT, 3, 3, craft.udp(CLIENT, SERVER, 1, 2)),
        craft.icmp(SERVER6, CLIENT6, 1, 4, craft.udp(CLIENT6, SERVER6, 1, 2)),
        craft.udp(CLIENT, "224.0.0.251", 5353, 5353),
        craft.udp(CLIENT, "255.255.255.255", 68, 67),
        craft.udp("0.0.0.0", SERVER, 68, 67),
        craft.udp(CLIENT6, "ff02::fb", 5353, 5353),
        bytes(IP(src=CLIENT, dst=SERVER, frag=20, proto=17) / (b"x" * 8)),
        b"\x00garbage",
        bytes(IP(src=CLIENT, dst=SERVER) / TCP(dataofs=2)),
    ],
)
def test_no_answer(raw: bytes) -> None:
    assert build_reject(decode(raw)) is None


def test_first_fragment_is_answered() -> None:
    raw = bytes(IP(src=CLIENT, dst=SERVER, flags="MF") / UDP(sport=1, dport=2, len=500) / b"x")
    assert IP(reject(raw))[ICMP].type == 3
