"""What `exposure --live` plans to send, and how it reads what arrived, without a lab: the
senders and targets once a flow is open, `--inside PREFIX`, the ICMP types probed, and the
per-sender comparison that tells the NAT filtering behaviours apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from fw.analysis.exposure import analyse
from fw.commands.exposure import Result, compare_live, write_plot
from fw.dsl import load_ruleset
from fw.errors import LabError
from fw.lab.exposure_live import blocks, plan
from fw.lab.topology import default_topology

ROOT = Path(__file__).resolve().parent.parent
OPENER = "udp 192.0.2.2:5000 -> 203.0.113.10:3478"


def exposure(name: str, **kw):
    return analyse(load_ruleset(str(ROOT / name)), **kw)


def test_after_the_client_opens_and_every_outside_host_probes_from_two_ports() -> None:
    p = plan(exposure("rules/nat/address-dependent.fw", after=[OPENER]), default_topology())
    assert [(o.host, o.dst) for o in p.openers] == [("client", "203.0.113.10")]
    assert [(s.host, s.sport) for s in p.senders] == [
        ("attacker", 3478), ("attacker", 40000), ("server", 3478), ("server", 40000)]
    fw = [t for t in p.targets if t.host == "fw"]
    assert [(t.address, t.also) for t in fw] == [("203.0.113.1", [(5000, 5000)])]
    sweeps = blocks(p, (4990, 5010))
    # one per sender, port and class (the flow opened again before each, and no class's probes
    # overtaking another's through the openers queue), and ICMP once per host
    assert len(sweeps) == 4 * 3 + 2
    assert all(len({(i.get("proto"), i.get("flags")) for i in b.probes}) == 1 for b in sweeps)
    assert sum(len(b.probes) for b in blocks(p, (1, 65535))) == sum(
        len(b.probes) for b in sweeps)  # long or short: the same probes


def test_an_after_packet_no_lab_host_can_send_is_one_line() -> None:
    e = exposure("rules/nat/address-dependent.fw",
                 after=["udp 192.0.2.99:5000 -> 203.0.113.10:3478"])
    with pytest.raises(LabError, match=r"no host of the lab has the address 192\.0\.2\.99"):
        plan(e, default_topology())


def test_inside_prefix_picks_hosts_by_address() -> None:
    p = plan(exposure("rules/stateless-web.fw", inside="192.0.2.2/32"), default_topology())
    assert [(t.host, t.address) for t in p.targets] == [("client", "192.0.2.2")]
    assert p.listeners == {"client": "eth0"}
    assert [s.host for s in p.senders] == ["attacker"] and not p.openers


def test_icmp_types_probed_are_the_echo_request_and_those_let_in() -> None:
    p = plan(exposure("tests/lab/rules/icmp-in.fw"), default_topology())
    assert p.icmp_types == {4: [3, 8], 6: [128]}


def live_of(udp: dict[str, list[str]]) -> dict:
    return {"udp": {"count": 1, "ranges": ["5000"]}, "icmp": {"count": 0, "types": []},
            "senders": {"udp": udp}, "engine": "fwlab",
            "probe": {"ports": "4990-5010", "icmp_types": {"4": [8]}, "senders": list(udp)}}


def test_each_sender_is_compared_with_what_it_reaches(tmp_path: Path) -> None:
    r = Result("ad.fw", exposure("rules/nat/address-dependent.fw", after=[OPENER]))
    right = {"203.0.113.10:3478": ["5000"], "203.0.113.10:40000": ["5000"],
             "203.0.113.66:40000": [], "[2001:db8:2::66]:40000": []}
    assert compare_live(r, live_of(right), (4990, 5010)) == []
    wrong = right | {"203.0.113.66:40000": ["5000"], "203.0.113.10:40000": []}
    assert compare_live(r, live_of(wrong), (4990, 5010)) == [
        "ad.fw: udp from 203.0.113.10:40000: computed 5000, measured none",
        "ad.fw: udp from 203.0.113.66:40000: computed none, measured 5000"]
    r.lives["fwlab"] = live_of(right)
    chart = tmp_path / "measured.svg"
    write_plot([r], str(chart))
    svg = chart.read_text()
    assert "measured in the lab" in svg and "probed in the lab: 4990-5010" in svg


def test_the_listener_keeps_who_sent_what_icmp_included() -> None:
    from ipaddress import ip_address

    from fw import craft
    from fw.lab.probe import Arrivals

    arrivals = Arrivals({int(ip_address("203.0.113.10")), int(ip_address("2001:db8:2::66"))})
    eth = bytes(12)
    arrivals.frame(eth + b"\x08\x00" + craft.udp("203.0.113.10", "192.0.2.2", 3478, 5000))
    arrivals.frame(eth + b"\x86\xdd" + craft.icmp_echo("2001:db8:2::66", "2001:db8:1::2", 128))
    arrivals.frame(eth + b"\x08\x00" + craft.udp("203.0.113.66", "192.0.2.2", 1, 5000))  # no peer
    got = arrivals.as_json()["arrivals"]
    assert got["udp"] == [["203.0.113.10", 3478, "192.0.2.2", 5000]]
    assert got["icmp"] == [["2001:db8:2::66", -1, "2001:db8:1::2", 128]]
    assert got["tcp_syn"] == got["tcp_any"] == []
