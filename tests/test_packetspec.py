"""One-line packet descriptions, and the craft builders under them, checked against scapy."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6

from fw import craft
from fw.core.icmp_types import ICMP_CODES, ICMP_TYPES, ICMPV6_TYPES, type_name
from fw.core.protocols import ACK, FIN, PSH, SYN
from fw.engine.checksum import verify
from fw.engine.packet import decode
from fw.errors import FwlabError, PacketSpecError
from fw.packetspec import MAX_QUOTING, parse_packet


def ip_int(text: str) -> int:
    return int(ipaddress.ip_address(text))


def scapy_rebuilds_same(raw: bytes) -> None:
    """Scapy, asked to recompute lengths and checksums, produces the very same bytes."""
    sp = IPv6(raw) if raw[0] >> 4 == 6 else IP(raw)
    if sp.version == 4:
        del sp.chksum, sp.len
    else:
        del sp.plen
    if hasattr(sp.payload, "chksum"):
        del sp.payload.chksum
    if isinstance(sp.payload, UDP):
        del sp.payload.len
    assert bytes(sp) == raw


# --- craft ----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    st.booleans(),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.integers(0, 255),
    st.binary(max_size=30),
    st.sampled_from([b"", b"\x02\x04\x05\xb4", b"\x01\x03\x03\x07"]),
)
def test_craft_tcp_matches_scapy(
    v6: bool, sport: int, dport: int, flags: int, payload: bytes, options: bytes
) -> None:
    src, dst = ("2001:db8::1", "2001:db8::2") if v6 else ("192.0.2.1", "192.0.2.2")
    raw = craft.tcp(src, dst, sport, dport, flags, 7, 8, 1000, payload, options)
    scapy_rebuilds_same(raw)
    sp = IPv6(raw) if v6 else IP(raw)
    assert (sp[TCP].sport, sp[TCP].dport, int(sp[TCP].flags)) == (sport, dport, flags)
    assert (sp[TCP].seq, sp[TCP].ack, sp[TCP].window) == (7, 8, 1000)


@settings(max_examples=100, deadline=None)
@given(st.booleans(), st.integers(0, 65535), st.binary(max_size=31))
def test_craft_udp_and_echo_match_scapy(v6: bool, port: int, payload: bytes) -> None:
    src, dst = ("2001:db8::1", "2001:db8::2") if v6 else ("192.0.2.1", "192.0.2.2")
    scapy_rebuilds_same(craft.udp(src, dst, port, 53, payload))
    raw = craft.icmp_echo(src, dst, 8, port, 3, payload)
    scapy_rebuilds_same(raw)
    sp = IPv6(raw) if v6 else IP(raw)
    echo = sp[ICMPv6EchoRequest] if v6 else sp[ICMP]
    data = echo.data if v6 else bytes(echo.payload)  # scapy keeps v6 echo data in a field
    assert (echo.id, echo.seq, data) == (port, 3, payload)


def test_craft_details() -> None:
    assert craft.tcp_flags("SA") == SYN | ACK and craft.tcp_flags("fpa") == FIN | PSH | ACK
    assert craft.tcp_flags(0x12) == 0x12
    with pytest.raises(ValueError):
        craft.tcp_flags("Z")
    with pytest.raises(ValueError):
        craft.udp("192.0.2.1", "2001:db8::1", 1, 2)
    raw = craft.ipv4("192.0.2.1", ipaddress.ip_address("192.0.2.2"), 17, b"", 5, 42, 0x2000)
    pkt = decode(raw)
    assert (pkt.ttl, pkt.frag_id, pkt.more_fragments) == (5, 42, True)
    assert IPv6(craft.icmp_echo("2001:db8::1", "2001:db8::2", 0)).haslayer(ICMPv6EchoReply)
    assert (
        decode(craft.tcp("192.0.2.1", "192.0.2.2", 1, 2, options=b"\x01\x03\x03\x07")).wscale == 7
    )


# --- packet descriptions --------------------------------------------------------------------


def test_tcp_description() -> None:
    pkt = decode(parse_packet("tcp 203.0.113.66:80 -> 192.0.2.2:40000 flags SA seq 5 ack 9 len 3"))
    assert pkt.invalid is None and verify(pkt)
    assert (pkt.src, pkt.dst) == (ip_int("203.0.113.66"), ip_int("192.0.2.2"))
    assert (pkt.sport, pkt.dport, pkt.tcp_flags) == (80, 40000, SYN | ACK)
    assert (pkt.seq, pkt.ack, pkt.payload_len) == (5, 9, 3)


def test_tcp_flags_default_to_syn() -> None:
    assert decode(parse_packet("tcp 192.0.2.2:1->192.0.2.3:2")).tcp_flags == SYN


def test_udp_and_ipv6_descriptions() -> None:
    pkt = decode(parse_packet("udp 192.0.2.2:5353 -> 203.0.113.10:53"))
    assert (pkt.proto, pkt.sport, pkt.dport) == (17, 5353, 53)
    pkt = decode(parse_packet("tcp [2001:db8:1::2]:40000 -> [2001:db8:2::10]:443 flags S"))
    assert (pkt.family, pkt.sport, pkt.dport) == (6, 40000, 443)
    assert pkt.dst == ip_int("2001:db8:2::10") and verify(pkt)


def test_icmp_descriptions() -> None:
    pkt = decode(parse_packet("icmp 192.0.2.2 -> 203.0.113.10 type echo-request"))
    assert pkt.is_echo_request and verify(pkt)
    pkt = decode(parse_packet("icmpv6 2001:db8:1::2 -> 2001:db8:2::10 type echo-reply id 7"))
    assert pkt.is_echo_reply and pkt.icmp_id == 7 and verify(pkt)
    pkt = decode(parse_packet("icmp 192.0.2.2 -> 203.0.113.10 type 13 code 0"))
    assert pkt.icmp_type == 13


def test_icmp_error_descriptions_quote_a_packet() -> None:
    text = "icmp 198.51.100.1 -> 192.0.2.2 type time-exceeded quoting udp 192.0.2.2:4 -> 1.2.3.4:53"
    pkt = decode(parse_packet(text))
    assert pkt.invalid is None and pkt.is_icmp_error and verify(pkt)
    assert pkt.inner is not None and (pkt.inner.sport, pkt.inner.dport) == (4, 53)
    pkt = decode(parse_packet("icmpv6 2001:db8::1 -> 2001:db8::2 type destination-unreachable"))
    assert pkt.invalid is None and pkt.inner is not None and pkt.inner.family == 6


def test_other_protocol_description() -> None:
    pkt = decode(parse_packet("proto 47 192.0.2.2 -> 203.0.113.10 ttl 3"))
    assert (pkt.proto, pkt.ttl, pkt.invalid) == (47, 3, None)


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("tcp 1.2.3:80 -> 192.0.2.2:1", "1.2.3"),
        ("tcp 192.0.2.1 -> 192.0.2.2:1", "192.0.2.1"),
        ("tcp 192.0.2.1:1 -> 192.0.2.2:70000", "70000"),
        ("tcp 192.0.2.1:1 -> 192.0.2.2:x", "x"),
        ("tcp 192.0.2.1:1 -> 192.0.2.2:2 flags SQ", "SQ"),
        ("tcp 192.0.2.1:1 -> 192.0.2.2:2 seq", "seq"),
        ("tcp 192.0.2.1:1 -> 192.0.2.2:2 colour red", "colour"),
        ("tcp 192.0.2.1:1 192.0.2.2:2", "192.0.2.1:1 192.0.2.2:2"),
        ("tcp 192.0.2.1:1 -> [2001:db8::1]:2", "[2001:db8::1]:2"),
        ("tcp [2001:db8::1:2 -> [2001:db8::1]:2", "[2001:db8::1:2"),
        ("sctp 192.0.2.1:1 -> 192.0.2.2:2", "192.0.2.1:1"),
        ("grx 192.0.2.1 -> 192.0.2.2", "grx"),
        ("tcp 192.0.2.1:1 -> 192.0.2.2:htps", "htps"),
        ("udp 192.0.2.1:1 -> 192.0.2.2:https-alt", "https-alt"),
        ("tcp 192.0.2.1:1 -> 192.0.2.2:2 flags syn,bogus", "syn,bogus"),
        ("proto 256 192.0.2.1 -> 192.0.2.2", "256"),
        ("icmp 192.0.2.1:5 -> 192.0.2.2", "192.0.2.1:5"),
        ("icmp 192.0.2.1 -> 192.0.2.2 type ping", "ping"),
        ("icmp 2001:db8::1 -> 2001:db8::2", "2001:db8::1"),
        ("icmpv6 192.0.2.1 -> 192.0.2.2", "192.0.2.1"),
        ("icmp 192.0.2.1 -> 192.0.2.2 code 300", "300"),
        ("proto grx 192.0.2.1 -> 192.0.2.2", "grx"),
        ("udp 192.0.2.1:1 -> 192.0.2.2:2 quoting udp 192.0.2.1:1 -> 192.0.2.2:2", "quoting"),
        ("icmp 192.0.2.1 -> 192.0.2.2 type time-exceeded quoting udp x -> y", "x"),
    ],
)
def test_bad_descriptions_name_the_word(text: str, word: str) -> None:
    with pytest.raises(PacketSpecError) as info:
        parse_packet(text)
    message = str(info.value)
    assert isinstance(info.value, FwlabError) and "\n" not in message
    assert message.startswith(f"bad packet {text!r}: {word!r}")


# The rules language's words mean the same packet as the numbers they stand for.
SAME_PACKET = [
    ("tcp 192.0.2.2:40000 -> 203.0.113.10:https", "tcp 192.0.2.2:40000 -> 203.0.113.10:443"),
    ("tcp 192.0.2.2:ssh -> 203.0.113.10:HTTP", "tcp 192.0.2.2:22 -> 203.0.113.10:80"),
    ("udp [2001:db8:1::2]:5353 -> [2001:db8:2::10]:domain",
     "udp [2001:db8:1::2]:5353 -> [2001:db8:2::10]:53"),
    ("udp 192.0.2.2:ntp -> 203.0.113.10:isakmp", "udp 192.0.2.2:123 -> 203.0.113.10:500"),
    ("gre 192.0.2.2 -> 203.0.113.10", "proto 47 192.0.2.2 -> 203.0.113.10"),
    ("esp 192.0.2.2 -> 203.0.113.10 ttl 9", "proto 50 192.0.2.2 -> 203.0.113.10 ttl 9"),
    ("proto ah 2001:db8:1::2 -> 2001:db8:2::10", "proto 51 2001:db8:1::2 -> 2001:db8:2::10"),
    ("sctp 192.0.2.2 -> 203.0.113.10", "proto 132 192.0.2.2 -> 203.0.113.10"),
    ("proto tcp 192.0.2.2:1 -> 203.0.113.10:2", "tcp 192.0.2.2:1 -> 203.0.113.10:2"),
    ("ipv6-icmp 2001:db8::1 -> 2001:db8::2", "icmpv6 2001:db8::1 -> 2001:db8::2"),
    ("tcp 192.0.2.2:1 -> 203.0.113.10:2 flags syn,ack",
     "tcp 192.0.2.2:1 -> 203.0.113.10:2 flags SA"),
    ("tcp 192.0.2.2:1 -> 203.0.113.10:2 flags fin,psh,ack",
     "tcp 192.0.2.2:1 -> 203.0.113.10:2 flags 25"),
    ("icmp 203.0.113.1 -> 192.0.2.2 type destination-unreachable code port-unreachable",
     "icmp 203.0.113.1 -> 192.0.2.2 type 3 code 3"),
    ("icmpv6 2001:db8::1 -> 2001:db8::2 type destination-unreachable code admin-prohibited",
     "icmpv6 2001:db8::1 -> 2001:db8::2 type 1 code 1"),
    ("icmpv6 fe80::2 -> ff02::1:ff00:1 type nd-neighbor-solicit ttl 255",
     "icmpv6 fe80::2 -> ff02::1:ff00:1 type 135 ttl 255"),
]


@pytest.mark.parametrize(("words", "numbers"), SAME_PACKET)
def test_names_mean_the_numbers_they_stand_for(words: str, numbers: str) -> None:
    assert parse_packet(words) == parse_packet(numbers)


def test_unknown_names_get_a_suggestion() -> None:
    for text, hint in [("tcp 192.0.2.1:1 -> 192.0.2.2:htps", "did you mean 'https'?"),
                       ("grx 192.0.2.1 -> 192.0.2.2", "did you mean 'gre'?"),
                       ("proto espp 192.0.2.1 -> 192.0.2.2", "did you mean 'esp'?")]:
        with pytest.raises(PacketSpecError) as info:
            parse_packet(text)
        assert hint in str(info.value) and "\n" not in str(info.value)


def test_empty_description() -> None:
    with pytest.raises(PacketSpecError):
        parse_packet("   ")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_parses_or_raises_fwlab_error(text: str) -> None:
    with contextlib.suppress(FwlabError):
        parse_packet(text)


def nested(depth: int) -> str:
    error = "icmp 198.51.100.1 -> 192.0.2.2 type time-exceeded quoting "
    return error * depth + "udp 192.0.2.2:4 -> 198.51.100.1:53"


def test_quoting_nests_up_to_the_limit() -> None:
    assert len(parse_packet(nested(MAX_QUOTING))) > len(parse_packet(nested(1)))


@pytest.mark.parametrize("depth", [MAX_QUOTING + 1, 1000, 100_000])
def test_deeper_quoting_is_one_short_line_not_a_recursion_error(depth: int) -> None:
    with pytest.raises(PacketSpecError) as info:
        parse_packet(nested(depth))
    message = str(info.value)
    assert f"'quoting' is nested {depth} deep; at most {MAX_QUOTING}" in message
    assert "\n" not in message and len(message) < 250


# --- the ICMP name tables -------------------------------------------------------------------


def test_icmp_tables() -> None:
    assert ICMP_TYPES["echo-request"] == 8 and ICMPV6_TYPES["echo-request"] == 128
    assert ICMPV6_TYPES["mld-listener-done"] == ICMPV6_TYPES["mld-listener-reduction"] == 132
    assert ICMP_CODES["port-unreachable"] == 3
    assert type_name(4, 11) == "time-exceeded" and type_name(6, 200) == "200"
