"""`dnat to POOL` in the engine: a layer-4 load balancer as a network engineer would test one.

Clients on the internet side talk to the virtual address (the firewall's outside address, VIP);
backends on the LAN answer. Every connection must stay on the member it was given, replies must
come back from the VIP, and the spread must be what the method promises.
"""

from __future__ import annotations

from collections import Counter
from ipaddress import ip_address
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, IPerror, UDPerror

from fw import craft
from fw.dsl import load_ruleset
from fw.engine.decision import Decision
from fw.engine.engine import Engine
from fw.engine.packet import decode

VIP, CLIENT, CLIENT2 = "203.0.113.1", "203.0.113.66", "203.0.113.67"
BACKENDS = ("192.0.2.10", "192.0.2.11", "192.0.2.12")
RULES = """mode stateful
define web = { 192.0.2.10, 192.0.2.11, 192.0.2.12 }
policy forward drop
forward {
    ct state established,related accept
    iif wan ip daddr { 192.0.2.10, 192.0.2.11, 192.0.2.12, 192.0.2.13 } accept
}
nat {
"""


def engine(tmp_path: Path, rule: str, seed: int = 0) -> Engine:
    path = tmp_path / "lb.fw"
    path.write_text(f"{RULES}    iif wan {rule}\n}}\n")
    return Engine(load_ruleset(str(path)), seed=seed)


def udp(e: Engine, src: str, sport: int, dst: str, dport: int, now: float) -> Decision:
    return e.process(craft.udp(src, dst, sport, dport, payload=b"hi"), now=now)


def leaves(d: Decision) -> tuple[str, int, str, int]:
    assert d.verdict == "accept", d.reason
    pkt = decode(d.packet)
    return str(ip_address(pkt.src)), pkt.sport, str(ip_address(pkt.dst)), pkt.dport


def member(e: Engine, client: str, sport: int, now: float = 0.0, dport: int = 53) -> str:
    """Open a connection from client:sport to the VIP; the backend it was sent to."""
    return leaves(udp(e, client, sport, VIP, dport, now))[2]


def spread(e: Engine, count: int, client: str = CLIENT) -> Counter:
    return Counter(member(e, client, 1024 + i) for i in range(count))


class TestChoice:
    def test_round_robin_takes_members_in_order(self, tmp_path: Path) -> None:
        e = engine(tmp_path, "udp dport 53 dnat to $web")
        assert [member(e, CLIENT, 1000 + i) for i in range(7)] == [*BACKENDS * 2, BACKENDS[0]]

    def test_weighted_round_robin_is_smooth(self, tmp_path: Path) -> None:
        e = engine(tmp_path, "udp dport 53 dnat to { 192.0.2.10 weight 2, 192.0.2.11, "
                             "192.0.2.12 }")
        a, b, c = BACKENDS
        assert [member(e, CLIENT, 1000 + i) for i in range(8)] == [a, b, c, a] * 2

    def test_member_port_then_pool_port_then_the_packets_own(self, tmp_path: Path) -> None:
        e = engine(tmp_path, "udp dport 53 dnat to { 192.0.2.10:5353, 192.0.2.11 }:5300")
        assert leaves(udp(e, CLIENT, 1000, VIP, 53, 0))[2:] == ("192.0.2.10", 5353)
        assert leaves(udp(e, CLIENT, 1001, VIP, 53, 0))[2:] == ("192.0.2.11", 5300)
        plain = engine(tmp_path, "udp dport 53 dnat to $web")
        assert leaves(udp(plain, CLIENT, 1000, VIP, 53, 0))[2:] == ("192.0.2.10", 53)

    def test_hash_is_a_function_of_address_and_port(self, tmp_path: Path) -> None:
        one, two = (engine(tmp_path, "udp dport 53 dnat to $web hash") for _ in range(2))
        firsts = [member(one, CLIENT, 2000 + i) for i in range(30)]
        assert [member(two, CLIENT, 2000 + i) for i in reversed(range(30))] == firsts[::-1]
        assert set(firsts) == set(BACKENDS)

    def test_source_hash_keeps_one_client_on_one_member(self, tmp_path: Path) -> None:
        e = engine(tmp_path, "udp dport 53 dnat to $web source-hash")
        assert len(spread(e, 30)) == 1
        clients = {member(e, f"198.51.100.{i}", 1000) for i in range(1, 40)}
        assert clients == set(BACKENDS)

    def test_random_repeats_with_the_seed(self, tmp_path: Path) -> None:
        runs = [spread(engine(tmp_path, "udp dport 53 dnat to $web random", seed), 60)
                for seed in (1, 1, 2)]
        assert runs[0] == runs[1] and set(runs[0]) == set(BACKENDS)
        order = [[member(engine(tmp_path, "udp dport 53 dnat to $web random", 1), CLIENT, p)
                  for p in range(3)] for _ in range(2)]
        assert order[0] == order[1]

    def test_explain_says_which_member_and_why(self, tmp_path: Path) -> None:
        e = engine(tmp_path, "udp dport 53 dnat to $web")
        member(e, CLIENT, 1000)
        change = udp(e, CLIENT, 1001, VIP, 53, 0).nat[0]
        assert change.kind == "dnat"
        assert change.why == "round-robin, step 2 of 3: member 2 of 3 (192.0.2.11)"
        later = udp(e, CLIENT, 1001, VIP, 53, 0.1).nat[0]
        assert later.why == ""


class TestConnections:
    def test_replies_come_back_from_the_vip(self, tmp_path: Path) -> None:
        e = engine(tmp_path, "tcp dport 80 dnat to $web:8080")
        syn = e.process(craft.tcp(CLIENT, VIP, 40000, 80, "S", seq=1), now=0)
        backend = leaves(syn)[2]
        synack = e.process(craft.tcp(backend, CLIENT, 8080, 40000, "SA", seq=9, ack=2), now=0.1)
        assert leaves(synack) == (VIP, 80, CLIENT, 40000)
        ack = e.process(craft.tcp(CLIENT, VIP, 40000, 80, "A", seq=2, ack=10), now=0.2)
        assert leaves(ack) == (CLIENT, 40000, backend, 8080)

    def test_icmp_errors_follow_the_connection(self, tmp_path: Path) -> None:
        e = engine(tmp_path, "udp dport 53 dnat to $web")
        member(e, CLIENT2, 1000)
        backend = member(e, CLIENT, 5000, 0.1)
        quoted = craft.udp(CLIENT, backend, 5000, 53, payload=b"hi")
        error = e.process(craft.icmp(backend, CLIENT, 3, 3, payload=quoted), now=0.2)
        assert error.verdict == "accept" and error.ct_state == "related"
        packet = IP(error.packet)
        assert (packet.src, packet.dst) == (VIP, CLIENT)
        inner = packet[IPerror]
        assert (inner.src, inner.dst, inner[UDPerror].dport) == (CLIENT, VIP, 53)

    def test_connections_are_counted_per_member(self, tmp_path: Path) -> None:
        e = engine(tmp_path, "udp dport 53 dnat to $web")
        spread(e, 7)
        (state,) = e.nat.pools.values()
        assert [c.total for c in state.counts] == [3, 2, 2]
        assert state.active(0.0, e.conntrack.contains) == [3, 2, 2]
        e.expire(31.0)
        assert state.active(31.0, e.conntrack.contains) == [0, 0, 0]


FLOW_METHODS = ["round-robin", "random", "hash", "source-hash"]


@st.composite
def interleavings(draw) -> tuple[str, list[tuple[int, int]]]:
    """Several UDP conversations (client, port) and the order their packets arrive in: each
    conversation is a run of (conversation, direction) steps, the runs shuffled together."""
    method = draw(st.sampled_from(FLOW_METHODS))
    sticky = draw(st.sampled_from(["", " sticky 5 seconds"]))
    count = draw(st.integers(1, 8))
    steps = [(conv, direction) for conv in range(count)
             for direction in [0, *draw(st.lists(st.integers(0, 1), max_size=6))]]
    order = draw(st.permutations(steps))
    return method + sticky, order


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=interleavings())
def test_every_connection_keeps_its_member(tmp_path: Path, case) -> None:
    options, order = case
    e = engine(tmp_path, f"udp dport 53 dnat to $web {options}")
    clients = {}
    for step, (conv, direction) in enumerate(order):
        client = (f"198.51.100.{1 + conv % 3}", 2000 + conv)
        now = step * 0.5
        if conv not in clients:  # the conversation's first packet is from the client
            clients[conv] = member(e, *client, now)
            continue
        if direction == 0:
            assert member(e, *client, now) == clients[conv]
        else:
            back = udp(e, clients[conv], 53, client[0], client[1], now)
            assert leaves(back) == (VIP, 53, *client)


class TestWeights:
    WEIGHTED = "udp dport 53 dnat to { 192.0.2.10 weight 1, 192.0.2.11 weight 2, " \
               "192.0.2.12 weight 3, 192.0.2.13 weight 4 }"

    @pytest.mark.parametrize("method", ["round-robin", "random", "hash"])
    def test_weights_hold_within_2_percent_over_10000_connections(self, tmp_path: Path,
                                                                  method: str) -> None:
        e = engine(tmp_path, f"{self.WEIGHTED} {method}")
        counts = Counter(member(e, f"198.51.100.{1 + i % 200}", 1024 + i) for i in range(10_000))
        shares = [counts[f"192.0.2.1{i}"] / 10_000 for i in range(4)]
        for share, weight in zip(shares, (1, 2, 3, 4), strict=True):
            assert abs(share - weight / 10) <= 0.02, shares
        if method == "round-robin":
            assert shares == [0.1, 0.2, 0.3, 0.4]

    def test_source_hash_weights_over_many_clients(self, tmp_path: Path) -> None:
        e = engine(tmp_path, f"{self.WEIGHTED} source-hash")
        counts = Counter(member(e, str(ip_address("198.18.0.0") + i), 1024)
                         for i in range(10_000))
        shares = [counts[f"192.0.2.1{i}"] / 10_000 for i in range(4)]
        assert all(abs(s - w / 10) <= 0.02 for s, w in zip(shares, (1, 2, 3, 4), strict=True))


class TestStickiness:
    def test_a_client_keeps_its_member_while_a_connection_is_open(self, tmp_path: Path) -> None:
        e = engine(tmp_path, "udp dport 53 dnat to $web sticky 30 seconds")
        first = member(e, CLIENT, 1000, 0.0)
        assert member(e, CLIENT2, 1000, 0.5) != first
        assert [member(e, CLIENT, 1001 + i, 1.0 + i) for i in range(5)] == [first] * 5

    def test_stickiness_expires_n_seconds_after_the_last_connection_ends(
            self, tmp_path: Path) -> None:
        e = engine(tmp_path, "udp dport 53 dnat to $web sticky 30 seconds")
        first = member(e, CLIENT, 1000, 0.0)  # an unanswered UDP flow: its entry ends at 30
        assert e.next_expiry() == 30.0
        assert e.expire(30.0) == 1
        (state,) = e.nat.pools.values()
        assert list(state.sticky) == [int(ip_address(CLIENT))]
        assert e.next_expiry() == 60.0  # 30 s after the connection ended
        assert member(e, CLIENT, 1001, 59.9) == first  # still sticky: and it opens a new one
        e.expire(89.9 + 0.05)
        assert state.sticky and e.next_expiry() == pytest.approx(89.9 + 30)
        e.expire(119.9)
        assert not state.sticky
        assert member(e, CLIENT, 1002, 120.0) != first  # balanced afresh (round-robin moved on)

    def test_sticky_entry_lapses_lazily_without_expire(self, tmp_path: Path) -> None:
        e = engine(tmp_path, "udp dport 53 dnat to $web sticky 10 seconds")
        first = member(e, CLIENT, 1000, 0.0)
        assert member(e, CLIENT, 1001, 39.0) == first  # the first ended at 30, +10 s
        assert member(e, CLIENT, 1002, 79.5) != first  # the second ended at 69: lapsed at 79


class TestReloadAndViews:
    def test_a_reload_keeps_the_position_of_an_unchanged_pool(self, tmp_path: Path) -> None:
        e = engine(tmp_path, "udp dport 53 dnat to $web")
        member(e, CLIENT, 1000)
        e.reload(e.ruleset)
        assert member(e, CLIENT, 1001) == BACKENDS[1]
        other = tmp_path / "other.fw"
        other.write_text(f"{RULES}    iif wan udp dport 53 dnat to $web hash\n}}\n")
        e.reload(load_ruleset(str(other)))
        assert e.nat.pools == {}  # the old pool is gone; the new one starts when first used
        member(e, CLIENT, 1002)
        assert [s.pool.method for s in e.nat.pools.values()] == ["hash"]

    def test_views_count_members_and_list_sticky_clients(self, tmp_path: Path) -> None:
        from fw.views import pool_rows, sticky_rows

        e = engine(tmp_path, "udp dport 53 dnat to $web sticky 10 seconds")
        member(e, CLIENT, 1000, 0.0)
        member(e, CLIENT2, 1000, 0.0)
        rows = pool_rows(e.nat, 1.0)
        assert [(r["address"], r["active"], r["total"], r["sticky"]) for r in rows] == [
            ("192.0.2.10", 1, 1, 1), ("192.0.2.11", 1, 1, 1), ("192.0.2.12", 0, 0, 0)]
        assert rows[0]["rule"]["text"] == "iif wan udp dport 53 dnat to $web sticky 10 seconds"
        assert [(s["client"], s["member"], s["connections"], s["expires_in"])
                for s in sticky_rows(e.nat, 1.0)] == [
            (CLIENT, "192.0.2.10", 1, None), (CLIENT2, "192.0.2.11", 1, None)]
        assert sticky_rows(e.nat, 35.0)[0]["expires_in"] == 5.0  # ended at 30, sticky 10 s
