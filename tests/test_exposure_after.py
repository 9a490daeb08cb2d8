"""`fwlab exposure --after`: what the state left by an inside host's packets lets in, per NAT
filtering behaviour (RFC 4787), checked against the engine after the same packets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fw.analysis.exposure import analyse
from fw.analysis.exposure_after import state_after
from fw.core import ranges
from fw.dsl import load_ruleset
from fw.packetspec import parse_packet
from tests.cli import fwlab

ROOT = Path(__file__).resolve().parent.parent
OPENER = "udp 192.0.2.2:5000 -> 203.0.113.10:3478"
BEHAVIOURS = {  # filtering -> (sources, source ports) that reach 192.0.2.2:5000
    "endpoint-independent": (["0.0.0.0/0"], ["0-65535"]),
    "address-dependent": (["203.0.113.10"], ["0-65535"]),
    "address-port-dependent": (["203.0.113.10"], ["3478"]),
}
SENDERS = [("203.0.113.10", 3478), ("203.0.113.10", 3479), ("198.51.100.7", 3478),
           ("198.51.100.7", 40000)]


def ruleset(filtering: str):
    return load_ruleset(str(ROOT / "rules/nat" / f"{filtering}.fw"))


@pytest.mark.parametrize("filtering", BEHAVIOURS)
def test_each_filtering_behaviour_lets_in_what_rfc4787_says(filtering: str) -> None:
    exposure = analyse(ruleset(filtering), after=[OPENER])
    udp = exposure["udp"]
    assert udp.ports == ((5000, 5000),)
    assert udp.addresses == {4: ((0xC0000202, 0xC0000202),)}
    sources, sports = BEHAVIOURS[filtering]
    from fw.analysis.exposure_text import address_ranges_text, port_ranges_text

    assert address_ranges_text(4, udp.sources[4]) == sources
    assert port_ranges_text(udp.source_ports) == sports
    assert exposure["tcp_any"].count == 0 and exposure["icmp"].count == 0


@pytest.mark.parametrize("filtering", BEHAVIOURS)
def test_the_engine_lets_in_exactly_those_senders(filtering: str) -> None:
    """The mapped port (port preservation: 5000 on the firewall's 203.0.113.1) reaches the
    inside host from the senders the analysis names, and from no one else."""
    exposure = analyse(ruleset(filtering), after=[OPENER])
    udp = exposure["udp"]
    for src, sport in SENDERS:
        engine = state_after(ruleset(filtering), exposure.routing, [OPENER])
        d = engine.process(parse_packet(f"udp {src}:{sport} -> 203.0.113.1:5000"), now=0.01)
        reached = d.accepted and d.chain == "forward" and d.oif == "lan"
        expected = (ranges.contains(udp.sources[4], int.from_bytes(bytes(
            map(int, src.split("."))), "big")) and ranges.contains(udp.source_ports, sport))
        assert reached == expected, (filtering, src, sport, d)


def test_without_after_nothing_gets_in_and_a_stateless_file_ignores_after() -> None:
    assert analyse(ruleset("endpoint-independent"))["udp"].count == 0
    stateless = load_ruleset(str(ROOT / "rules/stateless-web.fw"))
    before, after = analyse(stateless), analyse(stateless, after=[OPENER])
    assert before["udp"].ports == after["udp"].ports


def test_cli_json_and_plot(tmp_path: Path, in_repo: Path) -> None:
    files = [f"rules/nat/{b}.fw" for b in BEHAVIOURS]
    chart = tmp_path / "nat.png"
    result = fwlab("exposure", *files, "--after", OPENER, "--json", "--plot", str(chart))
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert [r["after"] for r in data["rulesets"]] == [[OPENER]] * 3
    assert [r["static"]["udp"]["sources"] for r in data["rulesets"]] == [
        s for s, _ in BEHAVIOURS.values()]
    assert chart.stat().st_size > 1000
    table = fwlab("exposure", *files, "--after", OPENER)
    assert table.code == 0 and "once the inside has sent" in table.out
    bad = fwlab("exposure", files[0], "--after", "udp nonsense")
    assert bad.code == 2 and bad.err.count("\n") == 1


TCP_OPENER = "tcp 192.0.2.2:5000 -> 203.0.113.10:3478 flags S"


def test_a_bare_syn_is_answered_by_the_flags_the_tracker_takes_in_syn_sent() -> None:
    """After a SYN, the remote endpoint's SYN/ACK, ACK and RST are replies, and so is its bare
    SYN (a simultaneous open); its FIN (with or without ACK) is not: the flags come from the
    engine's tracker."""
    exposure = analyse(ruleset("address-port-dependent"), after=[TCP_OPENER])
    syn = exposure["tcp_syn"]
    assert syn.ports == ((5000, 5000),) and syn.source_ports == ((3478, 3478),)
    for flags, taken in (("S", True), ("SA", True), ("A", True), ("R", True), ("F", False),
                         ("FA", False), ("", False)):
        engine = state_after(ruleset("address-port-dependent"), exposure.routing, [TCP_OPENER])
        d = engine.process(parse_packet(
            f"tcp 203.0.113.10:3478 -> 203.0.113.1:5000 flags {flags or '0'} ack 1"), now=0.01)
        assert (d.ct_state == "established") is taken, (flags, d)
