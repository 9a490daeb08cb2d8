"""Checksums and NAT rewrites: whatever we change in place, scapy must recompute the same sums."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.utils import checksum as scapy_checksum

from fw import craft
from fw.engine.checksum import (
    csum_update,
    internet_checksum,
    rewrite_v4,
    rewrite_v4_icmp_inner,
    verify,
)
from fw.engine.packet import decode

V4 = st.integers(0, 2**32 - 1)
PORT = st.integers(0, 65535)
SLOW = [HealthCheck.too_slow]


def addr(i: int) -> str:
    return str(ipaddress.IPv4Address(i))


@given(st.binary(max_size=200))
def test_internet_checksum_matches_scapy(data: bytes) -> None:
    assert internet_checksum(data) == scapy_checksum(data)


def test_internet_checksum_of_zeros_and_ones() -> None:
    assert internet_checksum(b"\0\0\0\0") == 0xFFFF
    assert internet_checksum(b"\xff\xff") == 0


@given(st.binary(min_size=2, max_size=64).filter(lambda b: len(b) % 2 == 0), st.data())
def test_csum_update_equals_recomputation(data: bytes, draw: st.DataObject) -> None:
    words = len(data) // 2
    start = draw.draw(st.integers(0, words - 1)) * 2
    size = draw.draw(st.integers(1, min(8, words - start // 2))) * 2
    new_field = draw.draw(st.binary(min_size=size, max_size=size))
    changed = data[:start] + new_field + data[start + size :]
    updated = csum_update(internet_checksum(data), data[start : start + size], new_field)
    assert updated == internet_checksum(changed) or not any(changed)


def test_verify_on_crafted_packets() -> None:
    for raw in (
        craft.tcp("192.0.2.1", "192.0.2.2", 1, 2, "S", payload=b"abc"),
        craft.udp("2001:db8::1", "2001:db8::2", 1, 2, b"odd"),
        craft.icmp_echo("192.0.2.1", "192.0.2.2", 8, 7, 1, b"ping"),
        craft.icmp_echo("2001:db8::1", "2001:db8::2", 8, 7, 1),
    ):
        assert verify(decode(raw))
        broken = bytearray(raw)
        broken[-1] ^= 0xFF if len(raw) > 48 else 0
        broken[-2] ^= 0x01
        assert not verify(decode(bytes(broken)))


# --- rewrites -------------------------------------------------------------------------------


@st.composite
def v4_packets(draw: st.DrawFn) -> bytes:
    head = IP(src=addr(draw(V4)), dst=addr(draw(V4)), ttl=draw(st.integers(1, 255)))
    kind = draw(st.sampled_from(["tcp", "udp", "udp0", "icmp"]))
    payload = draw(st.binary(max_size=33))
    if kind == "tcp":
        l4 = TCP(sport=draw(PORT), dport=draw(PORT), seq=draw(st.integers(0, 2**32 - 1)))
    elif kind == "icmp":
        l4 = ICMP(type=draw(st.sampled_from([0, 8])), id=draw(PORT), seq=draw(PORT))
    else:
        l4 = UDP(sport=draw(PORT), dport=draw(PORT), chksum=0 if kind == "udp0" else None)
    return bytes(head / l4 / payload)


def scapy_sums(raw: bytes) -> tuple[int, int]:
    """(IP checksum, L4 checksum) as scapy computes them from scratch for these bytes."""
    sp = IP(raw)
    l4 = sp.payload
    del sp.chksum
    if not (isinstance(l4, UDP) and l4.chksum == 0):
        del l4.chksum
    again = IP(bytes(sp))
    return again.chksum, again.payload.chksum


def buffer_sums(raw: bytes) -> tuple[int, int]:
    sp = IP(raw)
    return sp.chksum, sp.payload.chksum


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW)
@given(v4_packets(), st.data())
def test_rewrite_v4_keeps_checksums_right(raw: bytes, data: st.DataObject) -> None:
    buf = bytearray(raw)
    pkt = decode(buf)
    maybe = lambda s: data.draw(st.none() | s)  # noqa: E731
    changes = {"src": maybe(V4), "dst": maybe(V4)}
    if pkt.sport >= 0:
        changes |= {"sport": maybe(PORT), "dport": maybe(PORT)}
    else:
        changes["icmp_id"] = maybe(PORT)
    rewrite_v4(buf, pkt, **changes)
    # Known limit: an ICMP message rewritten to all zeros but its checksum needs 0xffff, which
    # an incremental update (one's complement +0 and -0 alike) cannot tell from 0.
    icmp = pkt.l4_offset
    assume(pkt.sport >= 0 or any(buf[icmp : icmp + 2]) or any(buf[icmp + 4 : pkt.length]))
    assert buffer_sums(bytes(buf)) == scapy_sums(bytes(buf))
    assert verify(decode(bytes(buf)))
    fresh = decode(bytes(buf))
    for key, value in changes.items():
        if value is not None:
            assert getattr(fresh, key) == value == getattr(pkt, key)


def test_udp_without_checksum_stays_without() -> None:
    buf = bytearray(bytes(IP() / UDP(sport=1, dport=2, chksum=0) / b"x"))
    rewrite_v4(buf, decode(buf), src=12345, sport=99)
    assert IP(bytes(buf))[UDP].chksum == 0 and verify(decode(bytes(buf)))


def test_udp_checksum_never_becomes_zero() -> None:
    """A computed 0 is sent as 0xffff; find a rewrite that lands there and check it."""
    raw = craft.udp("192.0.2.1", "192.0.2.2", 1000, 2000, b"abcd")
    for port in range(65536):
        buf = bytearray(raw)
        rewrite_v4(buf, decode(buf), sport=port)
        if buf[26:28] == b"\xff\xff":
            assert scapy_sums(bytes(buf))[1] == 0xFFFF
            return
    pytest.fail("no port gives a zero UDP checksum")


def test_rewrite_of_later_fragment_touches_only_ip_header() -> None:
    raw = bytes(IP(src="192.0.2.1", dst="192.0.2.2", frag=10, proto=6) / (b"z" * 16))
    buf = bytearray(raw)
    rewrite_v4(buf, decode(buf), dst=ip_int("198.51.100.7"))
    assert buf[20:] == raw[20:] and verify(decode(bytes(buf)))


def test_rewriting_ports_of_portless_packet_is_a_bug() -> None:
    buf = bytearray(bytes(IP() / ICMP(type=8)))
    with pytest.raises(ValueError):
        rewrite_v4(buf, decode(buf), sport=1)
    buf = bytearray(bytes(IP() / TCP()))
    with pytest.raises(ValueError):
        rewrite_v4(buf, decode(buf), icmp_id=1)
    buf = bytearray(bytes(IPv6() / TCP()))
    with pytest.raises(ValueError):
        rewrite_v4(buf, decode(buf), src=1)


def ip_int(text: str) -> int:
    return int(ipaddress.ip_address(text))


# --- the packet quoted inside an ICMP error -------------------------------------------------


@st.composite
def icmp_errors(draw: st.DrawFn) -> tuple[bytes, bool]:
    """An ICMP error quoting a TCP/UDP/echo packet, whole or cut to the minimal 28 bytes."""
    kind = draw(st.sampled_from(["tcp", "udp", "icmp"]))
    src, dst = addr(draw(V4)), addr(draw(V4))
    if kind == "tcp":
        l4 = TCP(sport=draw(PORT), dport=draw(PORT), seq=draw(st.integers(0, 2**32 - 1)))
    elif kind == "udp":
        l4 = UDP(sport=draw(PORT), dport=draw(PORT))
    else:
        l4 = ICMP(type=8, id=draw(PORT), seq=draw(PORT))
    quote = bytes(IP(src=src, dst=dst) / l4 / draw(st.binary(max_size=20)))
    whole = draw(st.booleans())
    quote = quote if whole else quote[:28]
    outer = IP(src=addr(draw(V4)), dst=src) / ICMP(type=draw(st.sampled_from([3, 11])))
    return bytes(outer / quote), whole


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW)
@given(icmp_errors(), st.data())
def test_rewrite_v4_icmp_inner(case: tuple[bytes, bool], data: st.DataObject) -> None:
    raw, whole = case
    buf = bytearray(raw)
    pkt = decode(buf)
    assert pkt.invalid is None and pkt.inner is not None
    maybe = lambda s: data.draw(st.none() | s)  # noqa: E731
    changes = {"src": maybe(V4), "dst": maybe(V4)}
    if pkt.inner.sport >= 0:
        changes |= {"sport": maybe(PORT), "dport": maybe(PORT)}
    else:
        changes["icmp_id"] = maybe(PORT)
    rewrite_v4_icmp_inner(buf, pkt, **changes)
    out = bytes(buf)
    assert internet_checksum(out[20:]) == 0  # the outer ICMP checksum
    assert _scapy_icmp_sum(out) == IP(out)[ICMP].chksum
    inner = out[28:]
    assert internet_checksum(inner[:20]) == 0  # the quoted IP header checksum
    if whole:  # the quote is a whole packet: its own checksums must be right too
        assert verify(decode(inner))
    fresh = decode(out).inner
    assert fresh is not None and fresh.raw == pkt.inner.raw
    for key, value in changes.items():
        if value is not None:
            assert getattr(fresh, key) == value


def _scapy_icmp_sum(raw: bytes) -> int:
    """Scapy's ICMP checksum over the ICMP message as it stands."""
    sp = IP(raw[:20]) / ICMP(raw[20:])
    del sp[ICMP].chksum
    return IP(bytes(sp))[ICMP].chksum


def test_inner_rewrite_needs_an_icmp_error() -> None:
    buf = bytearray(bytes(IP() / UDP()))
    with pytest.raises(ValueError):
        rewrite_v4_icmp_inner(buf, decode(buf), src=1)
    buf6 = bytearray(bytes(IPv6() / UDP()))
    with pytest.raises(ValueError):
        rewrite_v4_icmp_inner(buf6, decode(buf6), src=1)


def test_transport_ok_agrees_with_verify_on_damaged_segments() -> None:
    """conntrack's checksum test (the engine's hot path) against the full verification."""
    import random

    from fw import craft
    from fw.engine.checksum import transport_ok, verify
    from fw.engine.packet import decode

    rng = random.Random(5)
    for _ in range(3000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(30)))
        raw = bytearray(rng.choice([
            craft.tcp("192.0.2.2", "203.0.113.10", rng.randrange(65536), 80, "PA", payload=data),
            craft.udp("2001:db8::1", "2001:db8::2", rng.randrange(65536), 53, data),
            craft.icmp("192.0.2.2", "203.0.113.10", 8, 0, data[:9], rest=rng.randrange(2**32)),
        ]))
        if rng.random() < 0.5:
            at = rng.randrange(20 if raw[0] >> 4 == 4 else 40, len(raw))
            raw[at] ^= 1 << rng.randrange(8)
        pkt = decode(bytes(raw))
        if pkt.invalid is None:
            assert transport_ok(pkt) == verify(pkt), raw.hex()
