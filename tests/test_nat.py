"""NAT44 in the engine, as a network engineer would check it on a real box.

Flows are written from each end's point of view: the inside host talks to its own address, the
server answers whatever address the firewall showed it, and the tests look at what left.
"""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror

from fw import craft
from fw.dsl import load_ruleset
from fw.engine.decision import Decision
from fw.engine.engine import Engine
from fw.engine.packet import decode
from fw.packetspec import parse_packet
from tests.flows import Clock, Playbook

CLIENT, CLIENT2, SERVER, SERVER2 = "192.0.2.2", "192.0.2.3", "203.0.113.10", "203.0.113.11"
WEB, FW_WAN, FW_LAN, ATTACKER = "192.0.2.10", "203.0.113.1", "192.0.2.1", "203.0.113.66"

FORWARD_ALL = """mode stateful
policy input drop
policy output accept
policy forward drop
forward {
    ct state established,related accept
    iif lan accept
    iif wan ip daddr 192.0.2.10 tcp dport 80 accept
}
"""


def engine(tmp_path: Path, nat: str, **options) -> Engine:
    path = tmp_path / "nat.fw"
    path.write_text(FORWARD_ALL + "nat {\n" + nat + "\n}\n")
    return Engine(load_ruleset(str(path)), **options)


def left(d: Decision) -> tuple[str, int, str, int]:
    """What left the firewall: (src, sport, dst, dport); echo id as the ports for ICMP."""
    assert d.verdict == "accept", d.reason
    pkt = decode(d.packet) if d.packet is not None else None
    assert pkt is not None, "the packet was not translated"
    port = pkt.icmp_id if pkt.sport < 0 else None
    return (str(ip_address(pkt.src)), pkt.sport if port is None else port,
            str(ip_address(pkt.dst)), pkt.dport if port is None else port)


def udp(e: Engine, src: str, sport: int, dst: str, dport: int, now: float) -> Decision:
    """One datagram at `now`, written as the playbooks write it (tests/flows.py)."""
    return Playbook(e, Clock(now - 0.01)).send(f"udp {src}:{sport} -> {dst}:{dport} len 2")


@pytest.fixture
def masq(tmp_path: Path) -> Engine:
    return engine(tmp_path, "    oif wan masquerade")


class TestSourceNat:
    def test_port_preservation_and_reply(self, masq: Engine) -> None:
        out = udp(masq, CLIENT, 5000, SERVER, 53, 0)
        assert left(out) == (FW_WAN, 5000, SERVER, 53)
        back = udp(masq, SERVER, 53, FW_WAN, 5000, 0.1)
        assert left(back) == (SERVER, 53, CLIENT, 5000)

    def test_collision_picks_another_port_in_the_range(self, masq: Engine) -> None:
        first = left(udp(masq, CLIENT, 40000, SERVER, 53, 0))
        second = left(udp(masq, CLIENT2, 40000, SERVER, 53, 0))
        assert first[1] == 40000 and second[1] != 40000
        assert 32768 <= second[1] <= 60999

    def test_privileged_ports_stay_privileged(self, masq: Engine) -> None:
        udp(masq, CLIENT, 123, SERVER, 123, 0)
        second = left(udp(masq, CLIENT2, 123, SERVER, 123, 0))
        assert 1 <= second[1] <= 1023 and second[1] != 123

    def test_snat_to_address_and_range(self, tmp_path: Path) -> None:
        e = engine(tmp_path, "    oif wan snat to 203.0.113.5:20000-20009")
        src, sport, _, _ = left(udp(e, CLIENT, 40000, SERVER, 53, 0))
        assert src == "203.0.113.5" and 20000 <= sport <= 20009

    def test_exhaustion_drops_and_never_reuses(self, tmp_path: Path) -> None:
        e = engine(tmp_path, "    oif wan snat to 203.0.113.5:20000-20001")
        ports = {left(udp(e, f"192.0.2.{i}", 40000, SERVER, 53, 0))[1] for i in (2, 3)}
        assert ports == {20000, 20001}
        third = udp(e, "192.0.2.4", 40000, SERVER, 53, 0)
        assert third.verdict == "drop" and "exhaustion" in third.reason
        assert e.nat.mappings.counters.exhausted == 1

    def test_icmp_echo_id_is_translated(self, masq: Engine) -> None:
        udp(masq, CLIENT2, 0, SERVER, 9, 0)  # unrelated traffic
        out = masq.process(craft.icmp_echo(CLIENT, SERVER, 8, 77, 1), now=0)
        src, ident, _, _ = left(out)
        back = masq.process(craft.icmp_echo(SERVER, src, 0, ident, 1), now=0.1)
        assert left(back) == (SERVER, 77, CLIENT, 77)

    def test_tcp_through_masquerade(self, masq: Engine) -> None:
        Playbook(masq)("""
            tcp 192.0.2.2:41000 -> 203.0.113.10:80 flags S
                => accept new; nat 203.0.113.1:41000 -> 203.0.113.10:80
            tcp 203.0.113.10:80 -> 203.0.113.1:41000 flags SA
                => accept established; nat 203.0.113.10:80 -> 192.0.2.2:41000
            tcp 192.0.2.2:41000 -> 203.0.113.10:80 flags A
                => accept established; nat 203.0.113.1:41000 -> 203.0.113.10:80
            tcp 203.0.113.66:80 -> 203.0.113.1:41000 flags A => drop new
        """)


class TestMappingBehaviour:
    """RFC 4787 mapping: does one inside endpoint keep its outside port across destinations?"""

    @pytest.mark.parametrize(("behaviour", "same_addr_other_port", "other_addr"), [
        ("endpoint-independent", True, True),
        ("address-dependent", True, False),
        ("address-port-dependent", False, False),
    ])
    def test_mapping(self, tmp_path: Path, behaviour: str, same_addr_other_port: bool,
                     other_addr: bool) -> None:
        e = engine(tmp_path, f"    oif wan masquerade mapping {behaviour}")
        first = left(udp(e, CLIENT, 5000, SERVER, 3478, 0))[1]
        second = left(udp(e, CLIENT, 5000, SERVER, 3479, 0.1))[1]
        third = left(udp(e, CLIENT, 5000, SERVER2, 3478, 0.2))[1]
        assert (first == second) is same_addr_other_port
        assert (first == third) is other_addr


class TestFilteringBehaviour:
    """RFC 4787 filtering: who may send in through a mapping the inside host opened?"""

    @pytest.mark.parametrize(("behaviour", "other_port", "other_addr"), [
        ("endpoint-independent", True, True),
        ("address-dependent", True, False),
        ("address-port-dependent", False, False),
    ])
    def test_filtering(self, tmp_path: Path, behaviour: str, other_port: bool,
                       other_addr: bool) -> None:
        e = engine(tmp_path, f"    oif wan masquerade filtering {behaviour}")
        outside = left(udp(e, CLIENT, 5000, SERVER, 3478, 0))[1]
        from_other_port = udp(e, SERVER, 3479, FW_WAN, outside, 0.1)
        from_other_addr = udp(e, SERVER2, 3478, FW_WAN, outside, 0.2)
        assert from_other_port.accepted is other_port
        assert from_other_addr.accepted is other_addr
        if other_port:
            assert left(from_other_port)[2:] == (CLIENT, 5000)
            assert from_other_port.ct_state == "related"


class TestMappingLifetime:
    def test_udp_mapping_is_gone_with_its_conntrack_entry_as_in_linux(
        self, tmp_path: Path
    ) -> None:
        """Behind Linux's masquerade the mapping is the conntrack entry: an unanswered UDP
        flow's is gone 30 s after its last packet (coturn's natdiscovery measured ~35 s)."""
        e = engine(tmp_path, "    oif wan masquerade filtering endpoint-independent")
        udp(e, CLIENT, 5000, SERVER, 53, 0)
        udp(e, CLIENT, 5000, SERVER, 53, 10)
        e.expire(39)
        assert len(e.nat.mappings) == 1
        e.expire(40.5)
        assert len(e.nat.mappings) == 0
        assert not udp(e, SERVER2, 1, FW_WAN, 5000, 41).accepted

    def test_udp_mapping_lives_120s_after_last_outbound_with_the_rfc_hold(
        self, tmp_path: Path
    ) -> None:
        e = engine(tmp_path, "    oif wan masquerade filtering endpoint-independent",
                   nat_mapping_hold=120.0)
        udp(e, CLIENT, 5000, SERVER, 53, 0)
        udp(e, CLIENT, 5000, SERVER, 53, 100)  # outbound refresh (REQ-6)
        udp(e, SERVER, 53, FW_WAN, 5000, 150)  # inbound does not refresh
        e.expire(215)
        assert len(e.nat.mappings) == 1  # 100 + 120 = 220
        e.expire(260)
        assert len(e.nat.mappings) == 0
        assert not udp(e, SERVER2, 1, FW_WAN, 5000, 261).accepted


class TestDestinationNat:
    @pytest.fixture
    def forward(self, tmp_path: Path) -> Engine:
        return engine(tmp_path, "    oif wan masquerade\n"
                                "    iif wan tcp dport 8080 dnat to 192.0.2.10:80")

    def test_port_forward_and_reply(self, forward: Engine) -> None:
        syn = forward.process(craft.tcp(ATTACKER, FW_WAN, 5555, 8080, "S", seq=1), now=0)
        assert left(syn) == (ATTACKER, 5555, WEB, 80)
        assert syn.rule.text.endswith("tcp dport 80 accept")  # forward saw the new destination
        reply = forward.process(craft.tcp(WEB, ATTACKER, 80, 5555, "SA", seq=5, ack=2), now=0.1)
        assert left(reply) == (FW_WAN, 8080, ATTACKER, 5555)

    def test_hairpin(self, forward: Engine) -> None:
        syn = forward.process(craft.tcp(CLIENT, FW_WAN, 5555, 8080, "S", seq=1), now=0)
        src, sport, dst, dport = left(syn)
        assert (src, dst, dport) == (FW_LAN, WEB, 80)
        reply = forward.process(craft.tcp(WEB, FW_LAN, 80, sport, "SA", seq=5, ack=2), now=0.1)
        assert left(reply) == (FW_WAN, 8080, CLIENT, 5555)


class TestFragments:
    def test_later_fragments_get_the_first_fragments_addresses(self, masq: Engine) -> None:
        whole = craft.udp(CLIENT, SERVER, 5000, 53, payload=b"x" * 64)
        first = craft.ipv4(CLIENT, SERVER, 17, whole[20:44], ident=9, flags_frag=0x2000)
        later = craft.ipv4(CLIENT, SERVER, 17, whole[44:], ident=9, flags_frag=3)
        assert IP(masq.process(first, now=0).packet).src == FW_WAN
        out = masq.process(later, now=0.1)
        assert out.verdict == "accept" and IP(out.packet).src == FW_WAN
        assert_checksums(out.packet)


class TestIcmpErrors:
    def test_error_for_masqueraded_flow_reaches_the_inside_host(self, masq: Engine) -> None:
        udp(masq, CLIENT2, 5000, SERVER, 53, 0)  # takes 5000: the client's port will move
        out = left(udp(masq, CLIENT, 5000, SERVER, 53, 0.1))
        quoted = craft.udp(FW_WAN, SERVER, out[1], 53, payload=b"hi")
        error = masq.process(craft.icmp(SERVER, FW_WAN, 3, 3, payload=quoted), now=0.2)
        assert error.verdict == "accept" and error.ct_state == "related"
        packet = IP(error.packet)
        assert (packet.src, packet.dst) == (SERVER, CLIENT)
        inner = packet[IPerror]
        assert (inner.src, inner[UDPerror].sport, inner.dst) == (CLIENT, 5000, SERVER)
        assert_checksums(error.packet)


def assert_checksums(raw: bytes) -> None:
    """scapy recomputes every checksum; they must equal those the engine wrote."""
    packet = IP(raw)
    fresh = IP(raw)
    del fresh.chksum
    layers = [TCP, UDP, ICMP]
    for layer in layers:
        if layer in fresh:
            del fresh[layer].chksum
    fresh = IP(bytes(fresh))
    assert packet.chksum == fresh.chksum
    for layer in layers:
        if layer in packet:
            assert packet[layer].chksum == fresh[layer].chksum, layer.__name__


ports = st.integers(1, 65535)
hosts = st.sampled_from([CLIENT, CLIENT2, "192.0.2.77"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["tcp", "udp", "icmp"]), hosts, ports, ports,
                          st.binary(max_size=40)), min_size=1, max_size=12))
def test_translated_packets_verify_and_translate_back(tmp_path_factory, flows) -> None:
    e = engine(tmp_path_factory.mktemp("nat"), "    oif wan masquerade")
    for i, (proto, src, sport, dport, payload) in enumerate(flows):
        if proto == "tcp":
            raw = craft.tcp(src, SERVER, sport, dport, "S", seq=i, payload=payload)
        elif proto == "udp":
            raw = craft.udp(src, SERVER, sport, dport, payload=payload)
        else:
            raw = craft.icmp_echo(src, SERVER, 8, sport, i, payload=payload)
        out = e.process(raw, now=i)
        if not out.accepted:
            continue  # a later SYN of the same tuple may be judged differently: not our concern
        assert_checksums(out.packet)
        o_src, o_sport, _, _ = left(out)
        assert o_src == FW_WAN
        if proto == "icmp":
            back = craft.icmp_echo(SERVER, FW_WAN, 0, o_sport, i)
        elif proto == "udp":
            back = craft.udp(SERVER, FW_WAN, dport, o_sport, payload=b"r")
        else:
            back = craft.tcp(SERVER, FW_WAN, dport, o_sport, "SA", seq=99, ack=i + 1)
        reply = e.process(back, now=i + 0.5)
        assert_checksums(reply.packet)
        _, _, r_dst, r_dport = left(reply)
        assert (r_dst, r_dport) == (src, sport)


class TestCopiesCutShort:
    """The lab's queue copies only the first bytes of packets while nothing can be rewritten
    (fw/lab/daemon.py): the engine says when that is, and judges a cut copy as the whole."""

    def plain(self, tmp_path: Path) -> Engine:
        path = tmp_path / "plain.fw"
        path.write_text(FORWARD_ALL)
        return Engine(load_ruleset(str(path)))

    def test_without_nat_nothing_is_rewritten(self, tmp_path: Path) -> None:
        assert not self.plain(tmp_path).rewrites()

    def test_a_translated_connection_outlives_its_rules(self, masq: Engine, tmp_path: Path):
        assert masq.rewrites()
        udp(masq, CLIENT, 5000, SERVER, 53, 0)
        masq.reload(self.plain(tmp_path).ruleset)
        assert masq.rewrites()  # its packets are still translated

    def test_a_cut_copy_is_judged_and_counted_as_the_whole_packet(self, tmp_path: Path) -> None:
        whole, cut = self.plain(tmp_path), self.plain(tmp_path)
        opening = "tcp 192.0.2.2:41000 -> 203.0.113.10:80 flags S"
        data = "tcp 192.0.2.2:41000 -> 203.0.113.10:80 flags A len 5000"
        books = [Playbook(e, Clock(0)) for e in (whole, cut)]
        for book in books:
            book.send(opening)
            book.send("tcp 203.0.113.10:80 -> 192.0.2.2:41000 flags SA")
        raw = parse_packet(books[0].sequences.fill(data))
        a = whole.process(raw, now=1.0)
        b = cut.process(raw[:120], now=1.0, wire_len=len(raw))
        assert (a.verdict, a.ct_state) == ("accept", "established")
        assert (b.verdict, b.ct_state, b.rule) == (a.verdict, a.ct_state, a.rule)
        assert [c.orig_bytes for c in whole.conntrack] == [c.orig_bytes for c in cut.conntrack]
