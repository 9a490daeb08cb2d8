"""A malformed packet never crashes the engine: it is counted, judged, and the next one goes on."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fw import craft
from fw.dsl import load_ruleset
from fw.engine.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [
    craft.tcp("192.0.2.2", "203.0.113.10", 40000, 80, "S"),
    craft.tcp("203.0.113.10", "203.0.113.1", 80, 40000, "SA", ack=1),
    craft.udp("192.0.2.2", "203.0.113.10", 5353, 53, payload=b"q"),
    craft.icmp("203.0.113.10", "203.0.113.1", 3, 3, payload=craft.udp(
        "203.0.113.1", "203.0.113.10", 5353, 53)),
    craft.icmp_echo("2001:db8:1::2", "2001:db8:2::10", 8, 1, 1),
    craft.tcp("203.0.113.66", "203.0.113.1", 5555, 8080, "S"),
]


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


RULESETS = [load_ruleset(str(ROOT / "rules" / name))
            for name in ("stateful-web.fw", "stateless-web.fw", "home-router.fw")]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(damaged(), st.binary(max_size=80)), min_size=1, max_size=8))
def test_damaged_packets_are_judged_not_raised(packets: list[bytes]) -> None:
    """A fresh engine per example (a failure replays alone), and a clock that only goes on."""
    for ruleset in RULESETS:
        engine = Engine(ruleset, seed=0)
        for i, data in enumerate(packets):
            decision = engine.process(data, now=float(i))
            assert decision.verdict in ("accept", "drop", "reject")
        assert engine.stats.packets == len(packets)
        later = engine.process(SEEDS[0], now=float(len(packets)))
        assert later.verdict in ("accept", "drop")
