"""The engine judged on conversations, as a network engineer would judge them by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from fw import craft
from fw.dsl import load_ruleset
from fw.engine.engine import Engine
from fw.views import engine_status
from tests.flows import Clock, Tcp, Udp, send

ROOT = Path(__file__).resolve().parent.parent
CLIENT, SERVER, ATTACKER = "192.0.2.2", "203.0.113.10", "203.0.113.66"


@pytest.fixture
def stateful(tmp_path: Path) -> Engine:
    """rules/stateful-web.fw without its nat block: these tests are about tracking, and
    test_nat.py about translation."""
    text = (ROOT / "rules/stateful-web.fw").read_text()
    return rules(tmp_path, text[: text.index("nat {")])


@pytest.fixture
def stateless() -> Engine:
    return Engine(load_ruleset(str(ROOT / "rules/stateless-web.fw")))


def rules(tmp_path: Path, text: str) -> Engine:
    path = tmp_path / "r.fw"
    path.write_text(text)
    return Engine(load_ruleset(str(path)))


class TestStatefulTcp:
    def test_handshake_data_and_close(self, stateful: Engine) -> None:
        talk = Tcp(stateful, f"{CLIENT}:40000", f"{SERVER}:80")
        assert talk.client("S") == "accept new"
        assert talk.server("SA") == "accept established"
        assert talk.client("A") == "accept established"
        assert talk.client("PA", data=300) == "accept established"
        assert talk.server("PA", data=1200) == "accept established"
        assert talk.client("FA") == "accept established"
        assert talk.server("FA") == "accept established"
        assert talk.client("A") == "accept established"
        (conn,) = list(stateful.conntrack)
        assert conn.state_name == "TIME_WAIT"

    def test_unsolicited_syn_ack_is_invalid_and_an_ack_new(self, stateful: Engine) -> None:
        """As Linux by default (nf_conntrack_tcp_loose=1): a bare ACK would pick a connection
        up, so it is `new`, and the rule set drops it as it drops any new inbound packet."""
        probe = Tcp(stateful, f"{ATTACKER}:80", f"{CLIENT}:40001")
        assert probe.client("SA") == "drop invalid"
        assert probe.client("A") == "drop new"
        assert probe.client("S") == "drop new"

    def test_reset_ends_the_connection(self, stateful: Engine) -> None:
        talk = Tcp(stateful, f"{CLIENT}:40002", f"{SERVER}:80")
        talk.client("S"), talk.server("SA"), talk.client("A")
        assert talk.server("R", ack=0) == "accept established"
        (conn,) = list(stateful.conntrack)
        assert conn.state_name == "CLOSE"

    def test_retransmission_is_in_window(self, stateful: Engine) -> None:
        talk = Tcp(stateful, f"{CLIENT}:40003", f"{SERVER}:80")
        talk.client("S"), talk.server("SA"), talk.client("A")
        seq = talk.next_seq[0]
        assert talk.client("PA", data=100) == "accept established"
        assert talk.client("PA", data=100, seq=seq) == "accept established"

    def test_out_of_window_segment_is_invalid(self, stateful: Engine) -> None:
        talk = Tcp(stateful, f"{CLIENT}:40004", f"{SERVER}:80")
        talk.client("S"), talk.server("SA"), talk.client("A")
        far = talk.next_seq[1] + 10_000_000
        assert talk.server("PA", data=10, seq=far) == "drop invalid"

    def test_simultaneous_open(self, tmp_path: Path) -> None:
        engine = rules(tmp_path, "mode stateful\npolicy forward drop\nforward {\n"
                       "  ct state established,related accept\n  iif lan tcp flags syn accept\n"
                       "  iif wan tcp flags syn accept\n}\n")
        talk = Tcp(engine, f"{CLIENT}:5000", f"{SERVER}:6000")
        assert talk.client("S") == "accept new"
        assert talk.server("S", ack=0) == "accept established"
        assert talk.server("SA", seq=talk.next_seq[1] - 1) == "accept established"

    def test_syn_to_a_closed_flow_after_timeout_is_new(self, stateful: Engine) -> None:
        talk = Tcp(stateful, f"{CLIENT}:40005", f"{SERVER}:80")
        talk.client("S")
        talk.clock.advance(121)  # SYN_SENT times out after 120 s
        stateful.expire(talk.clock.now)
        assert len(stateful.conntrack) == 0
        assert talk.client("S", seq=77) == "accept new"


class TestStatefulUdpIcmp:
    def test_udp_request_reply_and_expiry(self, stateful: Engine) -> None:
        dns = Udp(stateful, f"{CLIENT}:5353", f"{SERVER}:53")
        assert dns.client() == "accept new"
        assert dns.server() == "accept established"
        dns.clock.advance(31)  # 30 s: a reply alone does not make a stream
        assert dns.server() == "drop new"

    def test_echo_and_reply(self, stateful: Engine) -> None:
        clock = Clock()
        assert send(stateful, craft.icmp_echo(CLIENT, SERVER, 8, 7, 1), clock) == "accept new"
        reply = craft.icmp_echo(SERVER, CLIENT, 0, 7, 1)
        assert send(stateful, reply, clock) == "accept established"
        stray = craft.icmp_echo(ATTACKER, CLIENT, 0, 9, 1)
        assert send(stateful, stray, clock) == "drop invalid"

    def test_port_unreachable_is_related_and_a_forged_one_is_not(self, stateful: Engine) -> None:
        dns = Udp(stateful, f"{CLIENT}:5353", f"{SERVER}:53")
        dns.client()
        quoted = craft.udp(CLIENT, SERVER, 5353, 53, payload=b"q")
        error = craft.icmp(SERVER, CLIENT, 3, 3, payload=quoted)
        assert send(stateful, error, dns.clock) == "accept related"
        forged_quote = craft.udp(CLIENT, SERVER, 5353, 54, payload=b"q")
        forged = craft.icmp(ATTACKER, CLIENT, 3, 3, payload=forged_quote)
        assert send(stateful, forged, dns.clock) == "drop invalid"


class TestStateless:
    def test_return_rule_lets_unsolicited_syn_in(self, stateless: Engine) -> None:
        probe = Tcp(stateless, f"{ATTACKER}:80", f"{CLIENT}:40000")
        assert probe.client("S") == "accept -"
        assert Tcp(stateless, f"{ATTACKER}:81", f"{CLIENT}:40000").client("S") == "drop -"

    def test_malformed_packet_matches_only_rules_needing_nothing_from_it(
        self, tmp_path: Path
    ) -> None:
        engine = rules(tmp_path, "mode stateless\npolicy forward drop\nforward {\n"
                       "  tcp dport 80 accept\n  ip saddr 192.0.2.0/24 accept comment \"any\"\n}\n")
        bad = bytearray(craft.tcp(CLIENT, SERVER, 40000, 80, "S"))
        bad[32] = 0x10  # data offset 1 (< 5): the TCP header is broken
        decision = engine.process(bytes(bad), now=0)
        assert decision.verdict == "accept" and decision.rule.comment == "any"
        assert engine.stats.malformed == 1


class TestMechanics:
    def test_reject_carries_a_reset(self, tmp_path: Path) -> None:
        engine = rules(tmp_path, "mode stateless\npolicy forward drop\nforward {\n"
                       "  tcp dport 23 reject\n}\n")
        decision = engine.process(craft.tcp(CLIENT, SERVER, 40000, 23, "S"), now=0)
        assert decision.verdict == "reject" and decision.reply is not None

    def test_packet_to_the_firewall_goes_to_input(self, stateful: Engine) -> None:
        decision = stateful.process(craft.tcp(ATTACKER, "203.0.113.1", 1, 22, "S"), now=0)
        assert (decision.chain, decision.verdict, decision.rule) == ("input", "drop", None)

    def test_later_fragments_follow_the_first(self, stateful: Engine) -> None:
        whole = craft.udp(CLIENT, SERVER, 5000, 53, payload=b"x" * 64)
        first = craft.ipv4(CLIENT, SERVER, 17, whole[20:44], ident=9, flags_frag=0x2000)
        later = craft.ipv4(CLIENT, SERVER, 17, whole[44:], ident=9, flags_frag=3)
        assert stateful.process(first, now=0).verdict == "accept"
        assert stateful.process(later, now=0.1).verdict == "accept"
        orphan = craft.ipv4(CLIENT, SERVER, 17, whole[44:], ident=10, flags_frag=3)
        assert stateful.process(orphan, now=0.2).verdict == "drop"

    def test_stateless_each_fragment_is_judged_alone(self, stateless: Engine) -> None:
        """No conntrack, no reassembly (as Linux with a stateless rule set): the later
        fragment has no port for `udp dport 53 accept` to match, and the policy drops it."""
        whole = craft.udp(CLIENT, SERVER, 5000, 53, payload=b"x" * 64)
        first = craft.ipv4(CLIENT, SERVER, 17, whole[20:44], ident=9, flags_frag=0x2000)
        later = craft.ipv4(CLIENT, SERVER, 17, whole[44:], ident=9, flags_frag=3)
        assert stateless.process(first, now=0).verdict == "accept"
        assert stateless.process(later, now=0.1).verdict == "drop"

    def test_log_statements_are_reported(self, stateful: Engine) -> None:
        decision = stateful.process(craft.tcp(ATTACKER, CLIENT, 1, 9999, "S"), now=0)
        assert [e.prefix for e in decision.logs] == ["fwd-drop "]

    def test_counters(self, stateful: Engine) -> None:
        Tcp(stateful, f"{CLIENT}:40000", f"{SERVER}:80").client("S")
        rules_seen = engine_status(stateful)["chains"]["forward"]["rules"]
        assert [r["hits"] for r in rules_seen][:3] == [0, 0, 1]
