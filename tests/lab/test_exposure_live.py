"""`fwlab exposure --live` on a reduced port range: measured and computed agree, in real packets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fw.lab import netns as labns

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.lab
def test_live_and_computed_agree_on_the_three_example_sets() -> None:
    files = ["rules/stateless-web.fw", "rules/stateful-web.fw", "rules/stateless-ack.fw"]
    result = subprocess.run(
        [sys.executable, "-m", "fw", "exposure", *files, "--live", "--ports", "32760-32780",
         "--json"], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["differences"] == []
    live = {r["file"]: r["live"] for r in data["rulesets"]}
    assert live["rules/stateless-web.fw"]["tcp_syn"] == {"count": 13, "ranges": ["32768-32780"]}
    assert live["rules/stateful-web.fw"]["tcp_syn"]["count"] == 0  # port 80 is not in the range
    assert live["rules/stateless-ack.fw"]["tcp_syn"]["count"] == 0
    assert live["rules/stateless-ack.fw"]["tcp_any"]["count"] == 13
    assert not [n for n in labns.list_labs() if n.startswith("exp")]


@pytest.mark.lab
def test_the_port_forward_is_measured(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fw", "exposure", "rules/stateful-web.fw", "--live", "--ports",
         "75-85", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (ruleset,) = json.loads(result.stdout)["rulesets"]
    assert ruleset["live"]["tcp_syn"] == {"count": 1, "ranges": ["80"]}


OPENER = "udp 192.0.2.2:5000 -> 203.0.113.10:3478"
# What each outside sender (attacker 203.0.113.66, server 203.0.113.10, the one the client sent
# to) gets in to 192.0.2.2:5000 through the mapping, per filtering behaviour (RFC 4787).
REACHED = {
    "endpoint-independent": {"203.0.113.66:3478", "203.0.113.66:40000", "203.0.113.10:3478",
                             "203.0.113.10:40000"},
    "address-dependent": {"203.0.113.10:3478", "203.0.113.10:40000"},
    "address-port-dependent": {"203.0.113.10:3478"},
}


@pytest.mark.lab
def test_after_each_filtering_behaviour_lets_in_what_was_computed(tmp_path: Path) -> None:
    """The client sends one datagram out; then every outside host probes from the port it was
    sent to and from another. Measured = computed per sender, and the three differ as RFC 4787
    says."""
    files = [f"rules/nat/{b}.fw" for b in REACHED]
    chart = tmp_path / "nat.png"
    result = subprocess.run(
        [sys.executable, "-m", "fw", "exposure", *files, "--after", OPENER, "--live",
         "--ports", "4990-5010", "--json", "--plot", str(chart)],
        cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["differences"] == []
    for behaviour, ruleset in zip(REACHED, data["rulesets"], strict=True):
        live = ruleset["live"]
        udp = live["senders"]["udp"]
        assert {who for who, got in udp.items() if got} == REACHED[behaviour], behaviour
        assert all(got == ["5000"] for got in udp.values() if got)
        assert len(udp) == 8  # two hosts, both families, two source ports
        assert live["udp"] == {"count": 1, "ranges": ["5000"]}
        assert live["tcp_any"]["count"] == 0 and live["icmp"]["count"] == 0
    assert chart.stat().st_size > 1000
    table = subprocess.run(
        [sys.executable, "-m", "fw", "exposure", files[1], "--after", OPENER, "--live",
         "--ports", "5000"], cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert table.returncode == 0, table.stdout + table.stderr
    (line,) = [x for x in table.stdout.splitlines() if "measured = computed" in x]
    assert line.startswith("rules/nat/address-dependent.fw: measured = computed through")
    assert not [n for n in labns.list_labs() if n.startswith("exp")]


TCP_OPENER = "tcp 192.0.2.2:5000 -> 203.0.113.10:3478 flags S"


@pytest.mark.lab
def test_after_a_tcp_syn_each_filtering_behaviour_lets_in_what_was_computed() -> None:
    """The client sends a bare SYN out: the same senders as for UDP reach it with a SYN, the
    server from 3478 as a reply (a simultaneous open is `established`), the others through the
    mapping as new connections; measured = computed for every sender."""
    files = [f"rules/nat/{b}.fw" for b in REACHED]
    result = subprocess.run(
        [sys.executable, "-m", "fw", "exposure", *files, "--after", TCP_OPENER, "--live",
         "--ports", "5000", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["differences"] == []
    for behaviour, ruleset in zip(REACHED, data["rulesets"], strict=True):
        syn = ruleset["live"]["senders"]["tcp_syn"]
        assert {who for who, got in syn.items() if got} == REACHED[behaviour], behaviour
        assert ruleset["live"]["udp"]["count"] == 0


@pytest.mark.lab
def test_icmp_is_probed_live() -> None:
    """An echo request and every type the rules let in, to each inside address."""
    result = subprocess.run(
        [sys.executable, "-m", "fw", "exposure", "tests/lab/rules/icmp-in.fw",
         "rules/stateful-web.fw", "--live", "--ports", "80", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["differences"] == []
    icmp_in, stateful = (r["live"]["icmp"] for r in data["rulesets"])
    assert icmp_in == {"count": 3, "types": ["icmp destination-unreachable",
                                             "icmp echo-request", "icmpv6 echo-request"]}
    assert stateful == {"count": 0, "types": []}
    assert data["rulesets"][0]["live"]["probe"]["icmp_types"] == {"4": [3, 8], "6": [128]}


@pytest.mark.lab
def test_inside_prefix_live() -> None:
    """`--inside 192.0.2.2/32`: only the client is the inside, probed and listened to."""
    result = subprocess.run(
        [sys.executable, "-m", "fw", "exposure", "rules/stateless-web.fw", "--inside",
         "192.0.2.2/32", "--live", "--ports", "32760-32780", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["differences"] == []
    (ruleset,) = data["rulesets"]
    assert ruleset["static"]["tcp_syn"]["addresses"] == ["192.0.2.2"]
    assert ruleset["live"]["probe"]["targets"] == ["client 192.0.2.2"]
    assert ruleset["live"]["tcp_syn"] == {"count": 13, "ranges": ["32768-32780"]}
