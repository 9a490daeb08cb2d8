"""The packet decoder against scapy's dissection, on good, odd and hostile bytes."""

from __future__ import annotations

import ast
import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.packet import Raw

from fw.core.protocols import ACK, SYN
from fw.engine import packet as packet_mod
from fw.engine.packet import Packet, decode

V4 = st.integers(0, 2**32 - 1).map(lambda i: str(ipaddress.IPv4Address(i)))
V6 = st.integers(0, 2**128 - 1).map(lambda i: str(ipaddress.IPv6Address(i)))
PORT = st.integers(0, 65535)
U32 = st.integers(0, 2**32 - 1)
TCP_OPTIONS = [
    [],
    [("MSS", 1460)],
    [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 2)), ("NOP", None), ("WScale", 7)],
    [("NOP", None), ("NOP", None), ("Timestamp", (5, 6))],
    [("WScale", 14), ("EOL", None)],
]
V6_EXT = [IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrDestOpt]
FORBIDDEN = {"netfilterqueue", "scapy", "pyroute2", "socket", "time", "asyncio", "threading"}


def ip_int(text: str) -> int:
    return int(ipaddress.ip_address(text))


@st.composite
def transport(draw: st.DrawFn, v6: bool):  # -> scapy layer, expected proto
    kind = draw(st.sampled_from(["tcp", "udp", "icmp", "other"]))
    if kind == "tcp":
        opts = draw(st.sampled_from(TCP_OPTIONS))
        flags = draw(st.integers(0, 255))
        return TCP(sport=draw(PORT), dport=draw(PORT), seq=draw(U32), ack=draw(U32),
                   flags=flags, window=draw(PORT), options=opts), 6  # fmt: skip
    if kind == "udp":
        return UDP(sport=draw(PORT), dport=draw(PORT)), 17
    if kind == "icmp" and v6:
        echo = draw(st.sampled_from([ICMPv6EchoRequest, ICMPv6EchoReply]))
        return echo(id=draw(PORT), seq=draw(PORT)), 58
    if kind == "icmp":
        itype = draw(st.sampled_from([0, 8, 13, 14, 9]))
        return ICMP(type=itype, code=draw(st.integers(0, 255)), id=draw(PORT)), 1
    return Raw(b""), draw(st.sampled_from([47, 50, 132, 103]))


@st.composite
def scapy_packets(draw: st.DrawFn):
    v6 = draw(st.booleans())
    l4, proto = draw(transport(v6))
    payload = Raw(draw(st.binary(max_size=40)))
    if v6:
        head = IPv6(src=draw(V6), dst=draw(V6), hlim=draw(st.integers(0, 255)))
        for ext in draw(st.lists(st.sampled_from(V6_EXT), max_size=3)):
            head = head / ext()
        if isinstance(l4, Raw):
            return _v6_other(head, proto, payload)
        return head / l4 / payload
    head = IP(src=draw(V4), dst=draw(V4), ttl=draw(st.integers(0, 255)), id=draw(PORT))
    if isinstance(l4, Raw):
        head.proto = proto
    return head / l4 / payload


def _v6_other(head, proto: int, payload: Raw):
    """Set the last next-header of a v6 chain to `proto` (scapy leaves it 59 for raw data)."""
    last = head
    while last.payload:
        last = last.payload
    last.nh = proto
    return head / payload


def expected(raw: bytes) -> dict:
    """What the decoder must say, read off scapy's dissection of the same bytes."""
    s = IPv6(raw) if raw[0] >> 4 == 6 else IP(raw)
    exp = {"family": 4 if s.version == 4 else 6, "src": ip_int(s.src), "dst": ip_int(s.dst)}
    exp["ttl"] = s.hlim if s.version == 6 else s.ttl
    if TCP in s:
        t = s[TCP]
        exp |= {"proto": 6, "sport": t.sport, "dport": t.dport, "seq": t.seq, "ack": t.ack}
        exp |= {"tcp_flags": int(t.flags), "window": t.window, "payload_len": len(t.payload)}
        opts = dict(t.options)
        exp["wscale"] = opts.get("WScale", -1) if t.flags & SYN else -1
        exp["sack_perm"] = bool(t.flags & SYN) and "SAckOK" in opts
    elif UDP in s:
        exp |= {"proto": 17, "sport": s[UDP].sport, "dport": s[UDP].dport}
        exp["payload_len"] = len(s[UDP].payload)
    elif ICMP in s:
        i = s[ICMP]
        exp |= {"proto": 1, "icmp_type": i.type, "icmp_code": i.code}
        exp["icmp_id"] = i.id if i.type in (0, 8, 13, 14, 15, 16, 17, 18) else -1
    elif ICMPv6EchoRequest in s or ICMPv6EchoReply in s:
        i = s[ICMPv6EchoRequest] if ICMPv6EchoRequest in s else s[ICMPv6EchoReply]
        exp |= {"proto": 58, "icmp_type": i.type, "icmp_code": i.code, "icmp_id": i.id}
    return exp


def assert_fields(pkt: Packet, exp: dict) -> None:
    got = {key: getattr(pkt, key) for key in exp}
    assert got == exp


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scapy_packets())
def test_agrees_with_scapy(sp) -> None:
    raw = bytes(sp)
    pkt = decode(raw)
    assert pkt.invalid is None
    assert pkt.length == len(raw)
    assert_fields(pkt, expected(raw))
    if pkt.proto not in (6, 17, 1, 58):
        assert pkt.sport == -1 and pkt.l4_offset > 0


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_never_raise(data: bytes) -> None:
    check_sane(decode(data), data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scapy_packets(), st.data())
def test_mutated_packets_never_raise(sp, data: st.DataObject) -> None:
    raw = bytearray(bytes(sp))
    for _ in range(data.draw(st.integers(0, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(0, len(raw)))]
    check_sane(decode(raw), raw)
    check_sane(decode(memoryview(bytes(raw))), raw)


def check_sane(pkt: Packet, data: bytes | bytearray) -> None:
    """Invariants any result must keep, plus: the safety net in decode() never fired."""
    assert not (pkt.invalid or "").startswith("undecodable"), pkt.invalid
    assert pkt.raw == data
    if pkt.invalid is None:
        assert pkt.family in (4, 6) and pkt.length <= len(data)
    if pkt.sport >= 0:
        assert 0 <= pkt.l4_offset <= len(data)


_TS = [("NOP", None), ("NOP", None), ("Timestamp", (5, 6))]


@st.composite
def plain_tcp_v4(draw: st.DrawFn) -> bytearray:
    """The shapes decode's fast path takes, then a few bytes of the headers changed and the
    end maybe cut: every check of the fast path is hit from both sides."""
    opts = draw(st.sampled_from([[], _TS, [("NOP", None)] * 12, [("MSS", 1460)] * 3]))
    sp = IP(src=draw(V4), dst=draw(V4), ttl=draw(st.integers(0, 255))) / TCP(
        sport=draw(PORT), dport=draw(PORT), seq=draw(U32), ack=draw(U32),
        flags=draw(st.integers(0, 255)), window=draw(PORT), options=opts,
    ) / Raw(draw(st.binary(max_size=30)))  # fmt: skip
    raw = bytearray(bytes(sp))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.sampled_from([0, 2, 3, 6, 7, 9, 32, 40, 41, 42, 43]) | st.integers(0, 51))
        if at < len(raw):
            raw[at] = draw(st.sampled_from([0x45, 0x50, 0x80, 6, 1, 8, 10, 0, 0x20, 0xFF]))
    return raw[: draw(st.sampled_from([len(raw), len(raw) - 1, 40, 39, 52]))]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain_tcp_v4())
def test_fast_path_agrees_with_the_general_decoder(raw: bytearray) -> None:
    fast = decode(raw)
    assert fast == packet_mod.decode_general(raw)
    check_sane(fast, raw)


# --- specific shapes -----------------------------------------------------------------------


def test_plain_tcp_fields() -> None:
    sp = IP(src="192.0.2.2", dst="203.0.113.10", ttl=7) / TCP(
        sport=40000, dport=443, flags="S", seq=100,
        options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)],
    ) / b"hello"  # fmt: skip
    pkt = decode(bytes(sp))
    assert (pkt.family, pkt.proto, pkt.ttl, pkt.l4_offset) == (4, 6, 7, 20)
    assert (pkt.sport, pkt.dport, pkt.tcp_flags, pkt.seq) == (40000, 443, SYN, 100)
    assert (pkt.wscale, pkt.sack_perm, pkt.payload_len) == (7, True, 5)
    assert ipaddress.ip_address(pkt.src) == ipaddress.ip_address("192.0.2.2")


def test_wscale_only_read_on_syn() -> None:
    sp = IP() / TCP(flags="A", options=[("WScale", 7)])
    pkt = decode(bytes(sp))
    assert pkt.invalid is None and pkt.wscale == -1 and pkt.tcp_flags == ACK


def test_trailing_bytes_beyond_total_length_are_ignored() -> None:
    raw = bytes(IP() / UDP(sport=1, dport=2) / b"abc")
    pkt = decode(raw + b"\0" * 10)
    assert pkt.invalid is None and pkt.length == len(raw) and pkt.payload_len == 3


def test_ipv4_options_are_skipped() -> None:
    raw = bytes(IP(options=b"\x01\x01\x01\x00") / TCP(sport=5, dport=6))
    pkt = decode(raw)
    assert pkt.invalid is None and pkt.l4_offset == 24 and pkt.sport == 5


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty packet"),
        (b"\x55" + bytes(30), "IP version 5"),
        (bytes(IP() / TCP())[:19], "truncated IPv4 header"),
        (b"\x44" + bytes(IP() / TCP())[1:], "bad IPv4 header length"),
        (bytes(IP(len=100) / TCP()), "truncated IPv4 packet"),
        (bytes(IP(len=10) / TCP()), "IPv4 total length shorter than header"),
        (bytes(IPv6() / TCP())[:39], "truncated IPv6 header"),
        (bytes(IPv6(plen=100) / TCP()), "truncated IPv6 packet"),
        (bytes(IP(len=30) / TCP()), "truncated TCP header"),
        (bytes(IP() / TCP(dataofs=4)), "bad TCP data offset"),
        (bytes(IP() / TCP(dataofs=15)), "bad TCP data offset"),
        (bytes(IP() / TCP(options=[("MSS", 1)]))[:-4] + b"\x02\x09\0\0", "bad TCP options"),
        (bytes(IP() / UDP(len=20)), "bad UDP length"),
        (bytes(IP() / UDP(len=4)), "bad UDP length"),
        (bytes(IP(len=24) / ICMP()), "truncated ICMP header"),
    ],
)
def test_malformed(raw: bytes, reason: str) -> None:
    pkt = decode(raw)
    assert pkt.invalid == reason


def test_malformed_keeps_what_it_could_read() -> None:
    pkt = decode(bytes(IP(src="192.0.2.1", dst="192.0.2.9") / TCP(dataofs=3)))
    assert pkt.invalid and pkt.proto == 6 and pkt.src == ip_int("192.0.2.1")
    assert pkt.sport == -1 and pkt.dport == -1


def test_other_protocol_is_valid_without_l4_fields() -> None:
    pkt = decode(bytes(IP(proto=47) / (b"\0" * 12)))
    assert (pkt.invalid, pkt.proto, pkt.sport, pkt.icmp_type, pkt.payload_len) == (
        None,
        47,
        -1,
        -1,
        12,
    )


# --- fragments ------------------------------------------------------------------------------


def test_ipv4_fragments() -> None:
    frags = fragment(IP(src="192.0.2.2", dst="192.0.2.3", id=4242) / UDP(sport=7, dport=9)
                     / (b"x" * 100), fragsize=40)  # fmt: skip
    pkts = [decode(bytes(f)) for f in frags]
    first, *later = pkts
    assert first.invalid is None and first.is_first_fragment and first.is_fragment
    assert (first.sport, first.dport, first.frag_id, first.frag_offset) == (7, 9, 4242, 0)
    for pkt in later:
        assert pkt.invalid is None and pkt.is_later_fragment and not pkt.is_first_fragment
        assert (pkt.proto, pkt.sport, pkt.l4_offset, pkt.frag_id) == (17, -1, -1, 4242)
    assert [p.frag_offset for p in pkts] == [f.frag * 8 for f in frags]
    assert [p.more_fragments for p in pkts] == [True] * (len(pkts) - 1) + [False]


def test_ipv4_unfragmented_with_df() -> None:
    pkt = decode(bytes(IP(flags="DF", id=99) / TCP()))
    assert pkt.frag_id == -1 and not pkt.is_fragment


def test_ipv6_fragments() -> None:
    sp = IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(id=0xABCDEF) / UDP(
        sport=5, dport=6) / (b"y" * 300)  # fmt: skip
    pkts = [decode(bytes(f)) for f in fragment6(sp, 150)]
    assert len(pkts) > 2 and all(p.invalid is None for p in pkts)
    first, *later = pkts
    assert first.is_first_fragment and first.frag_id == 0xABCDEF and first.sport == 5
    assert first.l4_offset == 48
    for pkt in later:
        assert pkt.is_later_fragment and pkt.proto == 17 and pkt.sport == -1
        assert pkt.frag_id == 0xABCDEF


def test_ipv6_atomic_fragment_is_whole() -> None:
    sp = IPv6() / IPv6ExtHdrFragment(id=1, m=0, offset=0) / TCP(sport=3, dport=4)
    pkt = decode(bytes(sp))
    assert pkt.invalid is None and not pkt.is_fragment and pkt.frag_id == 1 and pkt.sport == 3


def test_ipv6_extension_chain() -> None:
    sp = (IPv6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt()
          / TCP(sport=80, dport=81))  # fmt: skip
    pkt = decode(bytes(sp))
    assert pkt.invalid is None and pkt.proto == 6 and pkt.sport == 80
    assert pkt.l4_offset == 40 + 8 + 8 + 8


def test_ipv6_truncated_extension_chain() -> None:
    raw = bytes(IPv6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / TCP())
    pkt = decode(raw[:52])
    assert pkt.invalid is not None and pkt.proto == -1 and pkt.sport == -1


def test_ipv6_esp_terminates_chain() -> None:
    pkt = decode(bytes(IPv6(nh=50) / (b"\0" * 16)))
    assert pkt.invalid is None and pkt.proto == 50 and pkt.sport == -1


# --- ICMP errors ----------------------------------------------------------------------------


def offending(sport: int = 40000, dport: int = 53) -> bytes:
    return bytes(
        IP(src="192.0.2.2", dst="203.0.113.10") / UDP(sport=sport, dport=dport) / (b"q" * 20)
    )


def icmp_error(quote: bytes, itype: int = 3, code: int = 3) -> bytes:
    return bytes(IP(src="203.0.113.10", dst="192.0.2.2") / ICMP(type=itype, code=code) / quote)


def test_icmp_error_with_whole_quote() -> None:
    pkt = decode(icmp_error(offending()))
    assert pkt.invalid is None and pkt.is_icmp_error and pkt.icmp_id == -1
    inner = pkt.inner
    assert inner is not None and inner.invalid is None
    assert (inner.proto, inner.sport, inner.dport) == (17, 40000, 53)
    assert inner.src == ip_int("192.0.2.2") and inner.dst == ip_int("203.0.113.10")


def test_icmp_error_with_minimal_quote() -> None:
    raw = bytes(IP(src="192.0.2.2", dst="203.0.113.10") / TCP(sport=1234, dport=80, seq=77))
    pkt = decode(icmp_error(raw[:28], itype=11, code=0))
    assert pkt.invalid is None and pkt.inner is not None
    assert (pkt.inner.sport, pkt.inner.dport, pkt.inner.seq) == (1234, 80, 77)
    assert pkt.inner.length == 40  # the quoted total length, not what was quoted


@pytest.mark.parametrize("cut", [0, 10, 20, 27])
def test_icmp_error_quoting_too_little_is_invalid(cut: int) -> None:
    pkt = decode(icmp_error(offending()[:cut]))
    assert pkt.invalid is not None and pkt.icmp_type == 3


def test_icmp_error_with_broken_inner_stays_valid() -> None:
    quote = bytes(IP(src="192.0.2.2", dst="203.0.113.10") / TCP(dataofs=2))
    pkt = decode(icmp_error(quote))
    assert pkt.invalid is None and pkt.inner is not None and pkt.inner.invalid is not None


def test_icmp_error_quoting_a_short_packet_whole_is_valid() -> None:
    quote = bytes(IP(src="192.0.2.2", dst="203.0.113.10", proto=47) / b"gre!")
    pkt = decode(icmp_error(quote))
    assert pkt.invalid is None and pkt.inner is not None and pkt.inner.proto == 47


def test_icmpv6_error_with_inner() -> None:
    quote = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=9, dport=10))
    sp = IPv6(src="2001:db8::2", dst="2001:db8::1") / ICMPv6DestUnreach(code=4) / quote
    pkt = decode(bytes(sp))
    assert pkt.invalid is None and pkt.is_icmp_error and (pkt.icmp_type, pkt.icmp_code) == (1, 4)
    assert pkt.inner is not None and (pkt.inner.sport, pkt.inner.dport) == (9, 10)
    assert pkt.inner.family == 6


def test_icmp_error_quoting_other_family_is_invalid() -> None:
    quote = bytes(IPv6() / UDP())
    assert decode(icmp_error(quote)).invalid is not None


def test_echo_properties() -> None:
    req = decode(bytes(IP() / ICMP(type=8, id=5)))
    rep = decode(bytes(IPv6() / ICMPv6EchoReply(id=6)))
    assert req.is_echo_request and not req.is_echo_reply and req.icmp_id == 5
    assert rep.is_echo_reply and not rep.is_echo_request and rep.icmp_id == 6
    assert not req.is_icmp_error and not rep.is_icmp_error


# --- hygiene --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["packet.py", "checksum.py", "reject.py"])
def test_engine_modules_import_no_io(name: str) -> None:
    tree = ast.parse(Path(packet_mod.__file__).with_name(name).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots = {(node.module or "").split(".")[0]}
        else:
            continue
        assert not roots & FORBIDDEN, f"{name} imports {roots & FORBIDDEN}"


# --- a copy cut short (pcap's snap length, the lab queue's copy range) ------------------------


def _headers_end(pkt: Packet, raw: bytes) -> int:
    if pkt.proto == 6:
        return pkt.l4_offset + (raw[pkt.l4_offset + 12] >> 4) * 4
    return pkt.l4_offset + 8


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scapy_packets(), st.data())
def test_a_copy_cut_after_the_headers_decodes_as_the_whole_packet(sp, data) -> None:
    """Told the packet's size, decode reads the headers of the first bytes and takes sizes from
    them: the lab copies only that much of a 64 KiB GSO packet that leaves unchanged."""
    raw = bytes(sp)
    whole = decode(raw)
    if whole.proto not in (6, 17) or whole.l4_offset < 0 or whole.is_fragment:
        return
    cut = raw[: data.draw(st.integers(_headers_end(whole, raw), len(raw)))]
    assert replace(decode(cut, len(raw)), raw=raw) == whole
    if len(cut) < len(raw):
        assert decode(cut).invalid is not None  # not told: a truncated packet


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scapy_packets(), st.data())
def test_a_copy_cut_anywhere_never_raises(sp, data) -> None:
    raw = bytes(sp)
    cut = raw[: data.draw(st.integers(0, len(raw)))]
    pkt = decode(cut, len(raw))
    assert not (pkt.invalid or "").startswith("undecodable"), pkt.invalid
