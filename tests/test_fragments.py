"""Fragmented datagrams on an established flow: every fragment of every datagram gets through.

The regression this pins (issue 9): a first fragment of an answered flow took the remembered-
verdict path, which returned before the fragment was recorded, so the later fragments of every
datagram after the first were dropped as `invalid`. Large DNS answers and any UDP bigger than
the MTU were lost. Checked both directions, with and without NAT.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import IP

from fw import craft
from fw.dsl import load_ruleset
from fw.engine.engine import Engine
from tests.flows import Clock

ROOT = Path(__file__).resolve().parent.parent
CLIENT, SERVER, FW_WAN = "192.0.2.2", "203.0.113.10", "203.0.113.1"


def web_rules(tmp_path: Path, nat: bool) -> Engine:
    text = (ROOT / "rules/stateful-web.fw").read_text()
    if not nat:
        text = text[: text.index("nat {")]
    path = tmp_path / "web.fw"
    path.write_text(text)
    return Engine(load_ruleset(str(path)), seed=1)


def fragments(src: str, dst: str, sport: int, dport: int, ident: int) -> list[bytes]:
    """One UDP datagram of 64 bytes of payload in two IPv4 fragments (24 + 48 bytes)."""
    whole = craft.udp(src, dst, sport, dport, payload=b"x" * 64)
    return [craft.ipv4(src, dst, 17, whole[20:44], ident=ident, flags_frag=0x2000),
            craft.ipv4(src, dst, 17, whole[44:], ident=ident, flags_frag=3)]


class Flow:
    """A DNS-like UDP flow through the engine; the server answers to where the client seems."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.clock, self.ident = engine, Clock(), 100
        self.outside = (CLIENT, 5353)

    def send(self, raw: bytes):
        return self.engine.process(raw, now=self.clock.advance(0.01))

    def ask(self) -> None:
        decision = self.send(craft.udp(CLIENT, SERVER, 5353, 53, payload=b"q"))
        assert decision.verdict == "accept"
        seen = IP(decision.packet) if decision.packet else None
        self.outside = (seen.src, seen.sport) if seen else self.outside

    def datagram(self, from_server: bool) -> list[str]:
        self.ident += 1
        if from_server:
            parts = fragments(SERVER, self.outside[0], 53, self.outside[1], self.ident)
        else:
            parts = fragments(CLIENT, SERVER, 5353, 53, self.ident)
        return [f"{d.verdict} {d.ct_state}" for d in map(self.send, parts)]


@pytest.mark.parametrize("nat", [False, True], ids=["plain", "masquerade"])
@pytest.mark.parametrize("from_server", [True, False], ids=["answers", "requests"])
def test_every_fragment_of_every_datagram_passes(tmp_path: Path, nat: bool,
                                                 from_server: bool) -> None:
    flow = Flow(web_rules(tmp_path, nat))
    flow.ask()
    assert flow.send(craft.udp(SERVER, *flow.outside[:1], 53, flow.outside[1],
                               payload=b"a")).verdict == "accept"
    for _ in range(4):
        first, later = flow.datagram(from_server)
        assert first == "accept established"
        assert later.startswith("accept"), later


def test_translated_later_fragments_carry_the_new_addresses(tmp_path: Path) -> None:
    flow = Flow(web_rules(tmp_path, nat=True))
    flow.ask()
    assert flow.outside[0] == FW_WAN
    for _ in range(3):
        flow.ident += 1
        later = flow.send(fragments(CLIENT, SERVER, 5353, 53, flow.ident)[0]) and \
            flow.send(fragments(CLIENT, SERVER, 5353, 53, flow.ident)[1])
        assert later.verdict == "accept" and IP(later.packet).src == FW_WAN
