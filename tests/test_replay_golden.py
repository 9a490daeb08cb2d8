"""Replays of small captures built here with scapy, checked against verdict files.

Each scenario is the traffic of a few conversations as it reaches the firewall; the golden file
(tests/golden/replay/<scenario>-<rules>.jsonl) is `fwlab replay --json`'s output. A changed
verdict is then a reviewable diff (a mismatch writes `.actual` beside the golden file).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

from fw.commands.replay import run_replay
from tests.golden import compare

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests/golden/replay"
CLIENT, SERVER, ATTACKER, FW_WAN, WEB = (
    "192.0.2.2", "203.0.113.10", "203.0.113.66", "203.0.113.1", "192.0.2.10")


def browse(server_sees: str) -> list:
    """The client fetches a page: handshake, request, response, close; DNS and a ping first."""
    c, s = IP(src=CLIENT, dst=SERVER), IP(src=SERVER, dst=server_sees)
    return [
        c / UDP(sport=5353, dport=53) / b"query", s / UDP(sport=53, dport=5353) / b"answer",
        c / ICMP(type=8, id=7, seq=1), s / ICMP(type=0, id=7, seq=1),
        c / TCP(sport=40000, dport=80, flags="S", seq=100),
        s / TCP(sport=80, dport=40000, flags="SA", seq=500, ack=101),
        c / TCP(sport=40000, dport=80, flags="A", seq=101, ack=501),
        c / TCP(sport=40000, dport=80, flags="PA", seq=101, ack=501) / (b"G" * 40),
        s / TCP(sport=80, dport=40000, flags="PA", seq=501, ack=141) / (b"H" * 400),
        c / TCP(sport=40000, dport=80, flags="FA", seq=141, ack=901),
        s / TCP(sport=80, dport=40000, flags="FA", seq=901, ack=142),
        c / TCP(sport=40000, dport=80, flags="A", seq=142, ack=902),
    ]


def probes() -> list:
    """What an attacker sends unasked: SYN and ACK from port 80, UDP from 53, a port forward."""
    return [
        IP(src=ATTACKER, dst=CLIENT) / TCP(sport=80, dport=40001, flags="S"),
        IP(src=ATTACKER, dst=CLIENT) / TCP(sport=80, dport=40001, flags="A", ack=1),
        IP(src=ATTACKER, dst=CLIENT) / UDP(sport=53, dport=40001) / b"x",
        IP(src=ATTACKER, dst=CLIENT) / TCP(sport=4444, dport=22, flags="S"),
        IP(src=ATTACKER, dst=FW_WAN) / TCP(sport=5555, dport=8080, flags="S", seq=9),
        IP(src=WEB, dst=ATTACKER) / TCP(sport=80, dport=5555, flags="SA", seq=70, ack=10),
        IP(src=ATTACKER, dst=FW_WAN) / TCP(sport=5556, dport=22, flags="S"),
    ]


def balanced() -> list:
    """Four connections to the load balancer's address from two clients, interleaved: each
    handshake's reply comes from the member it was given, and must leave from the VIP."""
    conns = [(ATTACKER, 41000 + i) for i in range(3)] + [("203.0.113.67", 42000)]
    backends = ["192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.10"]  # round-robin
    syns = [IP(src=c, dst=FW_WAN) / TCP(sport=p, dport=80, flags="S", seq=100)
            for c, p in conns]
    synacks = [IP(src=b, dst=c) / TCP(sport=80, dport=p, flags="SA", seq=500, ack=101)
               for b, (c, p) in zip(backends, conns, strict=True)]
    acks = [IP(src=c, dst=FW_WAN) / TCP(sport=p, dport=80, flags="A", seq=101, ack=501)
            for c, p in conns]
    return [syns[0], syns[1], synacks[1], synacks[0], acks[0], syns[2], acks[1], synacks[2],
            syns[3], acks[2], synacks[3], acks[3]]


SCENARIOS = {
    "browse-masqueraded": (browse(FW_WAN), ["stateful-web"]),
    "browse-plain": (browse(CLIENT), ["stateless-web"]),
    "probes": (probes(), ["stateful-web", "stateless-web", "stateless-ack"]),
    "balanced": (balanced(), ["load-balancer"]),
}
CASES = [(scenario, rules) for scenario, (_, sets) in SCENARIOS.items() for rules in sets]


def capture(tmp_path: Path, scenario: str) -> Path:
    frames = [Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / p
              for p in SCENARIOS[scenario][0]]
    for i, frame in enumerate(frames):
        frame.time = 1_700_000_000 + i * 0.25
    path = tmp_path / f"{scenario}.pcap"
    wrpcap(str(path), frames)
    return path


@pytest.mark.parametrize(("scenario", "rules"), CASES, ids=[f"{s}-{r}" for s, r in CASES])
def test_replay_verdicts(scenario: str, rules: str, tmp_path: Path, in_repo: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    run_replay(f"rules/{rules}.fw", str(capture(tmp_path, scenario)), out=None, topology=None,
               as_json=True, rows=0)
    compare(GOLDEN / f"{scenario}-{rules}.jsonl", capsys.readouterr().out)


def test_out_writes_the_translated_packets(tmp_path: Path, in_repo: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.pcap"
    run_replay("rules/stateful-web.fw", str(capture(tmp_path, "browse-masqueraded")),
               out=str(out), topology=None, as_json=True, rows=0)
    verdicts = [json.loads(line)["verdict"] for line in capsys.readouterr().out.splitlines()]
    left = rdpcap(str(out))
    assert len(left) == verdicts.count("accept") == len(SCENARIOS["browse-masqueraded"][0])
    for packet in left:
        ip = IP(bytes(packet))
        fresh = IP(bytes(ip))
        del fresh.chksum
        assert IP(bytes(fresh)).chksum == ip.chksum
    packets = [IP(bytes(p)) for p in left]
    assert {p.src for p in packets if p.dst == SERVER} == {FW_WAN}  # the server sees the firewall
    assert {p.dst for p in packets if p.src == SERVER} == {CLIENT}  # replies reach the client


@pytest.mark.parametrize("problem", ["missing", "cut-short"])
def test_a_failed_replay_leaves_no_out_file(problem: str, tmp_path: Path, in_repo: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """--out appears only once the whole capture was read: no empty or partial file."""
    from fw.errors import CaptureError

    source = tmp_path / "missing.pcap"
    if problem == "cut-short":
        whole = capture(tmp_path, "browse-masqueraded").read_bytes()
        source.write_bytes(whole[:-10])
    out = tmp_path / "out.pcap"
    with pytest.raises(CaptureError):
        run_replay("rules/stateful-web.fw", str(source), out=str(out), topology=None,
                   as_json=True, rows=0)
    assert not [p.name for p in tmp_path.iterdir() if "out.pcap" in p.name]
