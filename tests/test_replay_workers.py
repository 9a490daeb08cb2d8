"""`fwlab replay --workers N` prints exactly what one worker prints, byte for byte.

The captures are generated conversations (tests/packet_mix.py: TCP that opens and closes, UDP,
ICMP echo, ICMP errors quoting a flow, IPv4 and IPv6) answered where the firewall let them out,
so masqueraded flows are answered at the firewall's outside address and port forwards from the
inside server; some IPv4 packets are cut in two fragments, now and then the later one first.
Every output is compared: the table with every row, --json with the NAT mappings, the --out
capture.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fw import craft
from fw.commands.common import engine_for
from fw.engine.packet import decode
from tests.captures import pcap
from tests.cli import fwlab
from tests.packet_mix import Mix

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = ["rules/stateful-web.fw", "rules/home-router.fw"]  # masquerade + port forwards
SNAT_RULES = """\
mode stateful
policy forward drop
forward {
    ct state established,related accept
    iif lan accept
    iif wan tcp dport 8080 accept
    iif wan udp dport 3074 accept
}
nat {
    oif wan ip saddr 192.0.2.0/25 snat to 203.0.113.200
    oif wan masquerade
    iif wan tcp dport 8080 dnat to 192.0.2.10:80
    iif wan udp dport 3074 dnat to 192.0.2.50
}
"""


def conversation(rules: str, seed: int, count: int) -> list[tuple[float, bytes]]:
    """Packets as they reach the firewall, timestamped; replies answer what it let out."""
    mix = Mix(seed)
    engine = engine_for(rules)
    packets = []
    for _ in range(count):
        raw, _hook, _iif, flow, side = mix.next_packet()
        mix.now += mix.rng.choice([0.01] * 6 + [0.5, 2.0, 45.0, 200.0])
        decision = engine.process(raw, now=mix.now)
        mix.learn(flow, side, decision, raw)
        packets.append((mix.now, raw))
    return fragmented(packets, random.Random(seed))


def fragmented(packets: list[tuple[float, bytes]], rng: random.Random):
    out = []
    for when, raw in packets:
        parts = split(raw) if rng.random() < 0.15 else None
        if parts is None:
            out.append((when, raw))
            continue
        if rng.random() < 0.2:
            parts.reverse()
        out += [(when, parts[0]), (when + 0.001, parts[1])]
    return out


def split(raw: bytes) -> list[bytes] | None:
    """An IPv4 packet as two fragments, the first carrying the transport header."""
    pkt = decode(raw)
    if pkt.family != 4 or pkt.l4_offset != 20 or pkt.length - 20 <= 24:
        return None
    src, dst, body = raw[12:16], raw[16:20], raw[20:pkt.length]
    ident = int.from_bytes(raw[4:6]) or 7
    return [craft.ipv4(src, dst, pkt.proto, body[:24], ident=ident, flags_frag=0x2000),
            craft.ipv4(src, dst, pkt.proto, body[24:], ident=ident, flags_frag=3)]


def outputs(rules: str, capture: Path, workers: int, tmp: Path) -> tuple:
    out = tmp / f"out{workers}.pcap"
    table = fwlab("replay", rules, str(capture), "--rows", "0", "--nat",
                  "--workers", str(workers), deadline=120)
    lines = fwlab("replay", "--json", "--nat", rules, str(capture), "--out", str(out),
                  "--workers", str(workers), deadline=120)
    assert table.code == 0 and lines.code == 0, table.err + lines.err
    return table.out, lines.out, out.read_bytes()


def rule_file(name: str, tmp: Path) -> str:
    if name == "snat":
        path = tmp / "snat.fw"
        path.write_text(SNAT_RULES)
        return str(path)
    return str(ROOT / name)


def same_for_any_workers(name: str, seed: int, tmp: Path, counts=(2, 3)) -> None:
    rules = rule_file(name, tmp)
    capture = tmp / "capture.pcap"
    capture.write_bytes(pcap(conversation(rules, seed, 400), linktype=101))
    one = outputs(rules, capture, 1, tmp)
    for workers in counts:
        assert outputs(rules, capture, workers, tmp) == one, f"--workers {workers} differs"


@pytest.mark.parametrize("name", [*RULE_FILES, "snat"])
@pytest.mark.parametrize("seed", [1, 2])
def test_several_workers_print_what_one_prints(name: str, seed: int, tmp_path: Path) -> None:
    same_for_any_workers(name, seed, tmp_path)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10**6), name=st.sampled_from([*RULE_FILES, "snat"]))
def test_any_capture_any_workers(seed: int, name: str, tmp_path_factory) -> None:
    same_for_any_workers(name, seed, tmp_path_factory.mktemp("w"), counts=(2,))


def test_a_replay_of_the_mix_translates_flows(tmp_path: Path) -> None:
    """The generated captures exercise what sharding must get right: NAT in both directions
    and fragments (otherwise the comparisons above would prove little)."""
    rules = rule_file("rules/stateful-web.fw", tmp_path)
    capture = tmp_path / "capture.pcap"
    capture.write_bytes(pcap(conversation(rules, 1, 400), linktype=101))
    text = fwlab("replay", "--json", rules, str(capture), "--workers", "2").out
    assert '"kind":"snat"' in text and '"kind":"reply"' in text
    assert '"kind":"dnat"' in text and "later fragment" in text


def test_rules_with_pools_keep_one_engine(tmp_path: Path) -> None:
    capture = tmp_path / "capture.pcap"
    capture.write_bytes(pcap(conversation(str(ROOT / "rules/load-balancer.fw"), 3, 100),
                             linktype=101))
    result = fwlab("replay", str(ROOT / "rules/load-balancer.fw"), str(capture),
                   "--workers", "2")
    assert result.code == 0
    assert "one worker, not 2" in result.err and "pools" in result.err
