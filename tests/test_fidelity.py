"""What the differential test against Linux found, as specifications (docs/fidelity.md).

Each class of disagreement the kernel settled has its case here, so the engine cannot drift back
without the kernel in the loop; tests/lab/test_difftest.py checks the same against the kernel.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fw import craft
from fw.dsl import load_ruleset
from fw.engine.engine import Engine
from fw.engine.packet import decode
from tests.flows import Clock, Tcp, send

CLIENT, SERVER = "192.0.2.2", "203.0.113.10"
OPEN = """mode stateful
policy forward drop
forward {
    ct state established,related accept
    ct state invalid drop
    iif lan accept
}
"""
FORWARD_ALL = "mode stateful\npolicy forward accept\nforward {\n}\n"


def engine(tmp_path: Path, text: str = OPEN, **options) -> Engine:
    path = tmp_path / "r.fw"
    path.write_text(text)
    return Engine(load_ruleset(str(path)), **options)


class TestMidStreamPickup:
    """nf_conntrack_tcp_loose=1 (Linux's default): an ACK-class segment with no entry opens a
    connection in the middle; the engine's `tcp_loose` option, on by default."""

    def test_the_side_allowed_to_open_picks_the_connection_up(self, tmp_path: Path) -> None:
        talk = Tcp(engine(tmp_path), f"{CLIENT}:40000", f"{SERVER}:80")
        assert talk.client("PA", data=100) == "accept new"
        assert talk.server("A") == "accept established"
        assert talk.server("PA", data=50) == "accept established"
        assert talk.client("FA") == "accept established"

    def test_without_loose_only_a_syn_opens(self, tmp_path: Path) -> None:
        talk = Tcp(engine(tmp_path, tcp_loose=False), f"{CLIENT}:40000", f"{SERVER}:80")
        assert talk.client("PA", data=100) == "drop invalid"

    def test_a_reset_before_any_reply_ends_it_and_the_next_ack_picks_up_again(
        self, tmp_path: Path
    ) -> None:
        e = engine(tmp_path)
        talk = Tcp(e, f"{CLIENT}:40000", f"{SERVER}:80")
        assert talk.client("A") == "accept new"
        assert talk.client("R") == "accept new"
        assert len(e.conntrack) == 0
        assert talk.client("A") == "accept new"


class TestChecksums:
    """nf_conntrack_checksum=1: conntrack verifies the transport checksum in prerouting; a
    packet with a wrong one is invalid (and, untracked, not translated)."""

    def bad(self, raw: bytes, offset: int) -> bytes:
        buf = bytearray(raw)
        buf[offset] ^= 0x55
        return bytes(buf)

    @pytest.mark.parametrize("proto", ["tcp", "udp"])
    def test_a_bad_checksum_is_invalid(self, tmp_path: Path, proto: str) -> None:
        e, clock = engine(tmp_path), Clock()
        if proto == "tcp":
            raw, at = craft.tcp(CLIENT, SERVER, 40000, 80, "S", seq=1), 20 + 16
        else:
            raw, at = craft.udp(CLIENT, SERVER, 40000, 53, b"q"), 20 + 6
        assert send(e, self.bad(raw, at), clock) == "drop invalid"
        assert len(e.conntrack) == 0
        assert send(e, raw, clock) == "accept new"

    def test_a_bad_checksum_passes_where_the_rules_let_invalid_through(
        self, tmp_path: Path
    ) -> None:
        e, clock = engine(tmp_path, FORWARD_ALL), Clock()
        raw = craft.udp(CLIENT, SERVER, 40000, 53, b"q")
        assert send(e, self.bad(raw, 26), clock) == "accept invalid"

    def test_adapters_that_cannot_tell_a_pending_checksum_turn_it_off(
        self, tmp_path: Path
    ) -> None:
        e, clock = engine(tmp_path, verify_checksums=False), Clock()
        raw = craft.udp(CLIENT, SERVER, 40000, 53, b"q")
        assert send(e, self.bad(raw, 26), clock) == "accept new"

    def test_the_firewalls_own_packets_are_not_checked(self, tmp_path: Path) -> None:
        e, clock = engine(tmp_path, FORWARD_ALL), Clock()
        raw = self.bad(craft.udp("192.0.2.1", SERVER, 40000, 53, b"q"), 26)
        assert send(e, raw, clock, hook="output") == "accept new"


class TestIcmpQueries:
    """Linux's ICMP tracker opens connections for timestamp, information and address-mask
    requests as for echo; their replies are then established."""

    @pytest.mark.parametrize(("query", "reply"), [(13, 14), (15, 16), (17, 18)])
    def test_a_query_opens_a_connection(self, tmp_path: Path, query: int, reply: int) -> None:
        e, clock = engine(tmp_path), Clock()
        ask = craft.icmp(CLIENT, SERVER, query, 0, b"\0" * 12, rest=7 << 16 | 1)
        answer = craft.icmp(SERVER, CLIENT, reply, 0, b"\0" * 12, rest=7 << 16 | 1)
        assert send(e, ask, clock) == "accept new"
        assert send(e, answer, clock) == "accept established"

    def test_a_reply_nobody_asked_for_is_invalid(self, tmp_path: Path) -> None:
        e, clock = engine(tmp_path), Clock()
        answer = craft.icmp(SERVER, CLIENT, 14, 0, b"\0" * 12, rest=7 << 16 | 1)
        assert send(e, answer, clock, iif="wan") == "drop invalid"


class TestTupleClash:
    """A server answers a masqueraded host at its inside address (it saw it on an invalid
    packet that left untranslated): the new connection's reply tuple is the masqueraded one's
    original. Linux's NAT gives it another source port from the same class and lets it in."""

    def test_the_new_connection_gets_another_source_port(self, tmp_path: Path) -> None:
        e, clock = engine(tmp_path, FORWARD_ALL + "nat {\n    oif wan masquerade\n}\n"), Clock()
        out = e.process(craft.udp(CLIENT, SERVER, 33000, 22, b"q"), iif="lan", now=clock.now)
        assert out.accepted and out.packet is not None  # masqueraded
        back = e.process(craft.udp(SERVER, CLIENT, 22, 33000, b"a"), iif="wan",
                         now=clock.advance(0.01))
        assert back.accepted, back.reason
        pkt = decode(back.packet)
        assert (pkt.dport, 1 <= pkt.sport <= 511, pkt.sport != 22) == (33000, True, True)
        again = e.process(craft.udp(SERVER, CLIENT, 22, 33000, b"a"), iif="wan",
                          now=clock.advance(0.01))
        assert decode(again.packet).sport == pkt.sport
