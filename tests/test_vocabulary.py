"""The vocabulary nft and pf users expect (docs/rules-extensions.md): address ranges, service
and protocol names, defines in nat targets, `reject with`, log levels, `ct state untracked`,
`ct status`, `limit rate`. Each is read into the model and judged by the engine as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from fw import craft
from fw.dsl import load, load_ruleset
from fw.engine.engine import Engine
from fw.engine.packet import decode
from fw.model import AddrRange, RuleSet

LAN, LAN2, WAN = "192.0.2.2", "192.0.2.15", "203.0.113.9"
FW_WAN = "203.0.113.1"


def ruleset(tmp_path: Path, body: str, mode: str = "stateless") -> RuleSet:
    path = tmp_path / "r.fw"
    path.write_text(f"mode {mode}\npolicy input drop\npolicy forward drop\npolicy output accept\n"
                    + body)
    return load_ruleset(str(path))


def problems(tmp_path: Path, body: str, mode: str = "stateless") -> list[str]:
    path = tmp_path / "r.fw"
    path.write_text(f"mode {mode}\npolicy input drop\npolicy forward drop\npolicy output accept\n"
                    + body)
    return [d.message for d in load(str(path)).diagnostics]


def verdict(engine: Engine, raw: bytes, now: float = 0.0, iif: str = "lan") -> str:
    return engine.process(raw, iif=iif, now=now).verdict


class TestAddressRanges:
    def test_a_range_matches_from_its_first_to_its_last_address(self, tmp_path: Path) -> None:
        rs = ruleset(tmp_path, "forward {\n ip saddr 192.0.2.10-192.0.2.20 accept\n}\n")
        (match,) = rs.chains["forward"][0].matches
        assert match.prefixes == (AddrRange(lo="192.0.2.10", hi="192.0.2.20"),)
        engine = Engine(rs)
        inside = [verdict(engine, craft.udp(f"192.0.2.{n}", WAN, 1, 2)) for n in (10, 15, 20)]
        outside = [verdict(engine, craft.udp(f"192.0.2.{n}", WAN, 1, 2)) for n in (9, 21)]
        assert inside == ["accept"] * 3 and outside == ["drop"] * 2

    def test_ranges_mix_with_prefixes_in_a_set_and_in_ipv6(self, tmp_path: Path) -> None:
        rs = ruleset(tmp_path, "define ok = { 192.0.2.10-192.0.2.20, 198.51.100.0/24 }\n"
                     "forward {\n ip saddr $ok accept\n ip6 saddr 2001:db8::10-2001:db8::1f "
                     "accept\n}\n")
        engine = Engine(rs)
        assert verdict(engine, craft.udp("198.51.100.7", WAN, 1, 2)) == "accept"
        assert verdict(engine, craft.udp("2001:db8::1f", "2001:db8:2::9", 1, 2)) == "accept"
        assert verdict(engine, craft.udp("2001:db8::20", "2001:db8:2::9", 1, 2)) == "drop"

    @pytest.mark.parametrize(("text", "message"), [
        ("192.0.2.20-192.0.2.10", "address range 192.0.2.20-192.0.2.10 is reversed (did you "
                                  "mean 192.0.2.10-192.0.2.20?)"),
        ("192.0.2.1-192.0.2.300", "'192.0.2.300' is not an IP address"),
    ])
    def test_bad_ranges_are_errors(self, tmp_path: Path, text: str, message: str) -> None:
        assert message in problems(tmp_path, f"forward {{\n ip saddr {text} accept\n}}\n")


class TestNames:
    def test_service_names_are_ports_per_protocol(self, tmp_path: Path) -> None:
        rs = ruleset(tmp_path, "forward {\n tcp dport { ssh, https, 8080 } accept\n"
                     " udp dport domain accept\n}\n")
        tcp, udp = rs.chains["forward"]
        assert [str(r) for r in tcp.matches[0].ranges] == ["22", "443", "8080"]
        assert [str(r) for r in udp.matches[0].ranges] == ["53"]

    def test_an_unknown_service_is_an_error_with_a_suggestion(self, tmp_path: Path) -> None:
        found = problems(tmp_path, "forward {\n tcp dport htps accept\n}\n")
        assert "unknown tcp service 'htps' (did you mean 'https'?)" in found

    def test_protocol_names_from_the_shipped_table(self, tmp_path: Path) -> None:
        rs = ruleset(tmp_path, "forward {\n proto { gre, esp, ah, sctp, ipip } accept\n}\n")
        assert rs.chains["forward"][0].matches[0].protos == (47, 50, 51, 132, 94)

    def test_defines_in_nat_targets(self, tmp_path: Path) -> None:
        rs = ruleset(tmp_path, "define nas = 192.0.2.10\ndefine smb = 445\n"
                     "define pub = 203.0.113.5\nnat {\n iif wan tcp dport 445 dnat to $nas:$smb\n"
                     " iif wan tcp dport 139 dnat to $nas\n oif wan snat to $pub\n}\n",
                     mode="stateful")
        assert [(str(n.to_addr), n.to_ports and n.to_ports.lo) for n in rs.nat] == [
            ("192.0.2.10", 445), ("192.0.2.10", None), ("203.0.113.5", None)]


class TestRejectWith:
    def test_icmp_type_chooses_the_code(self, tmp_path: Path) -> None:
        rs = ruleset(tmp_path, "forward {\n ip saddr 192.0.2.0/24 reject with icmp type "
                     "admin-prohibited\n}\n")
        reply = Engine(rs).process(craft.udp(LAN, WAN, 1000, 53), iif="lan").reply
        answer = decode(reply)
        assert (answer.icmp_type, reply[21]) == (3, 13)

    def test_tcp_reset_needs_a_tcp_only_rule(self, tmp_path: Path) -> None:
        found = problems(tmp_path, "forward {\n ip saddr 192.0.2.0/24 reject with tcp reset\n}\n")
        assert any("'reject with tcp reset' needs a rule that matches TCP only" in m
                   for m in found)

    def test_icmp_needs_an_ipv4_only_rule(self, tmp_path: Path) -> None:
        found = problems(tmp_path, "forward {\n udp dport 53 reject with icmp type "
                         "host-unreachable\n}\n")
        assert any("needs a rule that matches IPv4 only" in m for m in found)


class TestLog:
    @pytest.mark.parametrize("words", ['prefix "in " level info', 'level info prefix "in "'])
    def test_prefix_and_level_in_either_order(self, tmp_path: Path, words: str) -> None:
        rs = ruleset(tmp_path, f"forward {{\n log {words} drop\n}}\n")
        (event,) = Engine(rs).process(craft.udp(LAN, WAN, 1, 2), iif="lan").logs
        assert (event.prefix, event.level) == ("in ", "info")

    def test_an_unknown_level_is_an_error(self, tmp_path: Path) -> None:
        found = problems(tmp_path, "forward {\n log level warning drop\n}\n")
        assert any("unknown log level 'warning' (did you mean 'warn'?)" in m for m in found)


class TestCt:
    def test_ct_status_dnat_matches_port_forwarded_connections(self, tmp_path: Path) -> None:
        rs = ruleset(tmp_path, "forward {\n ct status dnat accept\n}\n"
                     "nat {\n iif wan tcp dport 8080 dnat to 192.0.2.10:80\n}\n", mode="stateful")
        engine = Engine(rs)
        forwarded = craft.tcp(WAN, FW_WAN, 40000, 8080, "S")
        assert verdict(engine, forwarded, iif="wan") == "accept"
        assert verdict(engine, craft.tcp(WAN, "192.0.2.10", 40001, 80, "S"), iif="wan") == "drop"

    def test_ct_status_and_state_untracked_need_a_stateful_file(self, tmp_path: Path) -> None:
        found = problems(tmp_path, "forward {\n ct status snat accept\n}\n")
        assert "'ct status' needs 'mode stateful'" in found
        rs = ruleset(tmp_path, "input {\n ct state untracked accept\n}\n", mode="stateful")
        assert rs.chains["input"][0].matches[0].states == ("untracked",)


class TestLimit:
    def test_burst_then_the_rate(self, tmp_path: Path) -> None:
        """nft's bucket: `burst` packets at once (5 by default), then one per 1/rate."""
        rs = ruleset(tmp_path, "forward {\n limit rate 2/second accept\n}\n")
        engine = Engine(rs)
        ping = craft.icmp_echo(LAN, WAN)
        first = [verdict(engine, ping, now=0.0) for _ in range(7)]
        assert first == ["accept"] * 5 + ["drop"] * 2
        assert [verdict(engine, ping, now=0.5) for _ in range(2)] == ["accept", "drop"]
        assert verdict(engine, ping, now=0.9) == "drop"
        assert verdict(engine, ping, now=1.0) == "accept"

    def test_over_matches_what_the_rate_refuses(self, tmp_path: Path) -> None:
        rs = ruleset(tmp_path, "forward {\n limit rate over 1/minute burst 2 packets drop\n"
                     " accept\n}\n")
        engine = Engine(rs)
        ping = craft.icmp_echo(LAN, WAN)
        assert [verdict(engine, ping, now=t) for t in (0, 1, 2, 3)] == [
            "accept", "accept", "drop", "drop"]
        assert verdict(engine, ping, now=63) == "accept"

    def test_a_later_rule_spends_no_token_on_packets_decided_earlier(self,
                                                                      tmp_path: Path) -> None:
        rs = ruleset(tmp_path, "forward {\n proto udp accept\n limit rate 1/hour burst 1 packets "
                     "accept\n}\n")
        engine = Engine(rs)
        for _ in range(3):
            verdict(engine, craft.udp(LAN, WAN, 1, 2))
        assert verdict(engine, craft.icmp_echo(LAN, WAN)) == "accept"

    def test_explain_names_the_limit(self, tmp_path: Path) -> None:
        rs = ruleset(tmp_path, "forward {\n limit rate 1/hour burst 1 packets accept\n}\n")
        engine = Engine(rs)
        engine.process(craft.icmp_echo(LAN, WAN), iif="lan")
        decision = engine.process(craft.icmp_echo(LAN, WAN), iif="lan", trace=True)
        assert str(decision.trace[0].failed) == "limit rate 1/hour burst 1 packets"

    @pytest.mark.parametrize(("text", "message"), [
        ("limit rate 0/second", "a rate of 0 lets nothing through: use drop"),
        ("limit rate 1/fortnight", "unknown rate unit 'fortnight'"),
        ("limit rate 1/second burst 10 bytes", "fwlab limits packets, not 'bytes'"),
    ])
    def test_bad_limits(self, tmp_path: Path, text: str, message: str) -> None:
        found = problems(tmp_path, f"forward {{\n {text} accept\n}}\n")
        assert any(message in m for m in found), found


class TestCheckCommand:
    def test_exact_check_finds_union_coverage(self, tmp_path: Path) -> None:
        from fw.commands.check import file_diagnostics

        path = tmp_path / "r.fw"
        path.write_text("mode stateless\npolicy forward drop\nforward {\n"
                        " tcp dport 0-1000 accept\n tcp dport 1001-65535 drop\n"
                        " proto tcp ip saddr 192.0.2.1 reject\n proto udp accept\n}\n")
        messages = [d.message for d in file_diagnostics(str(path), exact=True)]
        assert "rule never matches: rules at lines 4 and 5 take every packet it would " \
            "(exact check)" in messages
        assert len([m for m in messages if "never match" in m]) == 1

    def test_topology_option_names_interfaces_it_lacks(self, tmp_path: Path) -> None:
        from tests.cli import fwlab

        rules = tmp_path / "r.fw"
        rules.write_text("mode stateless\npolicy input drop\npolicy forward drop\n"
                         "policy output accept\nforward {\n iif dmz accept\n iif lan accept\n}\n")
        result = fwlab("check", "--strict", str(rules))
        assert result.code == 1
        assert "interface 'dmz' is not in the topology of the default lab" in result.out


class TestNeighbourDiscovery:
    """Judged by the chains like any packet, untracked, as Linux does (noct_valid_new)."""

    NS = craft.icmpv6("fe80::2", "ff02::1:ff00:1", 135, payload=bytes(16), ttl=255)

    def test_dropped_by_policy_without_a_rule(self, tmp_path: Path) -> None:
        rs = ruleset(tmp_path, "input {\n ct state established,related accept\n}\n",
                     mode="stateful")
        decision = Engine(rs).process(self.NS, iif="lan")
        assert (decision.verdict, decision.chain, decision.ct_state) == (
            "drop", "input", "untracked")

    def test_let_in_by_a_rule_and_never_tracked(self, tmp_path: Path) -> None:
        rs = ruleset(tmp_path, "input {\n ct state untracked icmpv6 type nd-neighbor-solicit "
                     "accept\n}\n", mode="stateful")
        engine = Engine(rs)
        assert engine.process(self.NS, iif="lan").verdict == "accept"
        assert list(engine.conntrack) == []

    def test_check_shows_the_rule_to_add(self, tmp_path: Path) -> None:
        from fw.commands.check import file_diagnostics

        path = tmp_path / "r.fw"
        path.write_text("mode stateless\npolicy input drop\npolicy forward accept\n"
                        "policy output accept\ninput {\n ip6 saddr 2001:db8:1::/64 accept\n}\n")
        (warning,) = [d for d in file_diagnostics(str(path)) if "neighbour" in d.message]
        assert warning.span.line == 2
        assert warning.message.endswith("add to input: icmpv6 type { nd-neighbor-solicit, "
                                        "nd-neighbor-advert, nd-router-solicit, "
                                        "nd-router-advert } accept")
