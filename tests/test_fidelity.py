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
from fw.views import tuple_fields
from tests.flows import Clock, Playbook, Tcp, send

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


class TestResetsTheFirewallSends:
    """Linux's nf_send_reset: the RST a `reject` sends closes the connection of the packet it
    answers (nf_ct_set_closing), and a RST answering a packet with no connection (invalid)
    goes through conntrack's output hook, where it may hit one."""

    def test_a_reset_for_an_invalid_packet_ends_the_connection_it_belongs_to(
        self, tmp_path: Path
    ) -> None:
        """Found by the difftest: web's connection to the attacker was picked up and
        masqueraded; the attacker's FIN to web's inside address is invalid and rejected; the
        RST (web's address and port to the attacker) is that connection's, which never saw a
        reply: gone. Web's own FIN then opens nothing and leaves untranslated."""
        rules = ("mode stateful\npolicy forward drop\nforward {\n    oif wan accept\n"
                 "    iif wan ct state invalid reject\n}\nnat {\n    oif wan masquerade\n}\n")
        Playbook(engine(tmp_path, rules))("""
            tcp 192.0.2.10:123 -> 203.0.113.66:700 flags A
                => accept new; nat 203.0.113.1:123 -> 203.0.113.66:700
            tcp 203.0.113.66:700 -> 192.0.2.10:123 flags FA => reject invalid; reply tcp flags R
            tcp 192.0.2.10:123 -> 203.0.113.66:700 flags FA => accept invalid; nat (none)
        """)

    def test_a_reset_closes_a_simultaneous_open(self, tmp_path: Path) -> None:
        """The server's SYN-ACK of a simultaneous open is rejected: the connection is in
        CLOSE, where the client's SYN-ACK is invalid (and dropped); its data still passes."""
        rules = ("mode stateful\npolicy forward accept\nforward {\n    ct state invalid drop\n"
                 "    ip6 saddr 2001:db8:2::10 reject\n}\n")
        e = engine(tmp_path, rules)
        Playbook(e)("""
            tcp [2001:db8:2::10]:40000 -> [2001:db8:1::2]:443 flags S seq 1000
                => reject new; reply tcp flags RA
            tcp [2001:db8:1::2]:443 -> [2001:db8:2::10]:40000 flags S seq 5000 => accept new
            tcp [2001:db8:2::10]:40000 -> [2001:db8:1::2]:443 flags SA seq 1000 ack 5001
                => reject established; reply tcp flags R
            tcp [2001:db8:1::2]:443 -> [2001:db8:2::10]:40000 flags SA seq 5000 ack 1001
                => drop invalid
        """)
        assert [conn.state_name for conn in e.conntrack] == ["CLOSE"]

    def test_a_reset_closes_a_port_forwarded_connection(self, tmp_path: Path) -> None:
        """The same through a port forward: web's SYN is rejected; the outside's SYN-ACK to
        the forwarded port is then invalid, left untranslated, and the firewall's own."""
        rules = ("mode stateful\npolicy forward accept\npolicy input drop\nforward {\n"
                 "    iif lan reject\n}\nnat {\n    oif wan masquerade\n"
                 "    iif wan tcp dport 8080 dnat to 192.0.2.10:80\n}\n")
        Playbook(engine(tmp_path, rules))("""
            tcp 203.0.113.10:33000 -> 203.0.113.1:8080 flags S seq 1000
                => accept new; nat 203.0.113.10:33000 -> 192.0.2.10:80
            tcp 192.0.2.10:80 -> 203.0.113.10:33000 flags S seq 5000
                => reject established; reply tcp flags RA
            tcp 203.0.113.10:33000 -> 203.0.113.1:8080 flags SA seq 1000 ack 5001
                => drop invalid; rule policy
        """)

    @pytest.mark.parametrize("proto", ["tcp", "udp"])
    def test_no_answer_to_a_bad_checksum(self, tmp_path: Path, proto: str) -> None:
        """nf_reject checks the checksum itself: no RST, no port unreachable (and so no RST
        that could close a connection)."""
        e = engine(tmp_path, "mode stateless\npolicy forward accept\nforward {\n"
                   "    iif lan reject\n}\n")
        raw = bytearray(craft.tcp(CLIENT, SERVER, 40000, 80, "PA", seq=1, ack=1) if proto == "tcp"
                        else craft.udp(CLIENT, SERVER, 40000, 53, b"q"))
        raw[20 + (16 if proto == "tcp" else 6)] ^= 0x55
        decision = e.process(bytes(raw), now=0)
        assert (decision.verdict, decision.reply) == ("reject", None)
        lab = Engine(e.ruleset, verify_checksums=False)  # the lab cannot tell: it answers
        assert lab.process(bytes(raw), now=0).reply is not None

    def test_a_reset_for_a_new_connection_changes_nothing(self, tmp_path: Path) -> None:
        e = engine(tmp_path, "mode stateful\npolicy forward accept\nforward {\n"
                   "    tcp dport 23 reject\n}\n")
        Playbook(e)("tcp 192.0.2.2:40000 -> 203.0.113.10:23 flags S => reject new")
        assert len(e.conntrack) == 0


class TestStatelessFragments:
    """Without conntrack Linux does not reassemble (nf_defrag is enabled with conntrack, and a
    stateless rule set only untracks): each fragment is judged alone, a later one with its data
    read where the transport header would be. Stateful, the later fragments follow the first,
    as the reassembled datagram would."""

    RULES = ("mode {mode}\npolicy forward {policy}\nforward {{\n"
             "    udp sport 1234 drop\n    udp dport 53 accept\n}}\n")

    def parts(self, sport: int, dport: int) -> list[bytes]:
        whole = craft.udp("192.0.2.10", "203.0.113.66", sport, dport, payload=b"f" * 40)
        return [craft.ipv4("192.0.2.10", "203.0.113.66", 17, whole[20:44], ident=9,
                           flags_frag=0x2000),
                craft.ipv4("192.0.2.10", "203.0.113.66", 17, whole[44:], ident=9, flags_frag=3)]

    def verdicts(self, tmp_path: Path, mode: str, policy: str, sport: int, dport: int):
        e, clock = engine(tmp_path, self.RULES.format(mode=mode, policy=policy)), Clock()
        return [send(e, raw, clock) for raw in self.parts(sport, dport)]

    def test_a_later_fragment_escapes_a_port_rule_that_dropped_its_first(
        self, tmp_path: Path
    ) -> None:
        assert self.verdicts(tmp_path, "stateless", "accept", 1234, 9) == ["drop -", "accept -"]

    def test_a_later_fragment_misses_the_port_rule_that_let_its_first_through(
        self, tmp_path: Path
    ) -> None:
        assert self.verdicts(tmp_path, "stateless", "drop", 5000, 53) == ["accept -", "drop -"]

    def test_nft_reads_a_later_fragments_data_as_its_header(self, tmp_path: Path) -> None:
        """nft's fast payload path has no fragment check: the later fragment's data ('ff',
        0x6666 = 26214) stands where the ports would be, and `udp dport 26214` matches it."""
        e, clock = engine(tmp_path, "mode stateless\npolicy forward accept\nforward {\n"
                          "    udp dport 26214 drop\n}\n"), Clock()
        assert [send(e, raw, clock) for raw in self.parts(5000, 53)] == ["accept -", "drop -"]

    def test_stateful_the_later_fragment_follows_the_first(self, tmp_path: Path) -> None:
        assert self.verdicts(tmp_path, "stateful", "accept", 1234, 9)[1].startswith("drop")
        assert self.verdicts(tmp_path, "stateful", "drop", 5000, 53)[1].startswith("accept")


class TestIcmpQueryKeys:
    """Linux keys an ICMP query on (type, code, id): an answer of another type is no answer,
    and two queries with one identifier are two connections."""

    def test_the_answer_must_be_of_the_query_type(self, tmp_path: Path) -> None:
        e = engine(tmp_path)
        Playbook(e)("""
            icmp 192.0.2.2 -> 203.0.113.10 type echo-request id 7 => accept new
            icmp 203.0.113.10 -> 192.0.2.2 type timestamp-reply id 7 => drop invalid
            icmp 203.0.113.10 -> 192.0.2.2 type echo-reply id 7 => accept established
            icmp 192.0.2.2 -> 203.0.113.10 type timestamp-request id 7 => accept new
            icmp 203.0.113.10 -> 192.0.2.2 type timestamp-reply id 7 => accept established
        """)
        assert len(e.conntrack) == 2

    def test_the_code_is_part_of_the_key(self, tmp_path: Path) -> None:
        Playbook(engine(tmp_path))("""
            icmp 192.0.2.2 -> 203.0.113.10 type echo-request id 7 => accept new
            icmp 203.0.113.10 -> 192.0.2.2 type echo-reply code 1 id 7 => drop invalid
        """)

    def test_the_conntrack_view_names_the_query(self, tmp_path: Path) -> None:
        e = engine(tmp_path)
        Playbook(e)("icmp 192.0.2.2 -> 203.0.113.10 type timestamp-request id 7 => accept new")
        conn = next(iter(e.conntrack))
        asked, answer = tuple_fields(4, conn.orig), tuple_fields(4, conn.reply)
        assert (asked["type"], answer["type"], asked["id"], answer["id"]) == (13, 14, 7, 7)
