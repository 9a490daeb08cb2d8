"""Connection tracking events (`conntrack -E`): NEW when an entry is confirmed, UPDATE when its
state changes, DESTROY with the reason it left the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from fw import craft
from fw.dsl import load_ruleset
from fw.engine.engine import Engine
from fw.views import ct_event_row
from tests.flows import Clock, Tcp, Udp

ROOT = Path(__file__).resolve().parent.parent
OPEN = "mode stateful\npolicy forward accept\npolicy input accept\npolicy output accept\n"


def engine(rules: Path, limit: int = 262_144) -> Engine:
    """An engine that collects conntrack events."""
    eng = Engine(load_ruleset(str(rules)), conntrack_limit=limit)
    eng.conntrack.events = []
    return eng


@pytest.fixture
def open_rules(tmp_path: Path) -> Path:
    """A stateful rule set that accepts everything, without NAT."""
    path = tmp_path / "open.fw"
    path.write_text(OPEN)
    return path


def drain(eng: Engine, now: float = 0.0) -> list[str]:
    """Each event as `KIND STATE [reason]`."""
    events, eng.conntrack.events = eng.conntrack.events, []
    rows = [ct_event_row(ev, now) for ev in events or []]
    return [" ".join(filter(None, (r["event"], r["state"], r["reason"]))) for r in rows]


def test_a_tcp_connection_from_syn_to_reset(open_rules: Path) -> None:
    eng = engine(open_rules)
    talk = Tcp(eng, "192.0.2.2:40000", "203.0.113.10:80")
    talk.client("S")
    assert drain(eng) == ["NEW SYN_SENT"]
    talk.server("SA")
    talk.client("A")
    assert drain(eng) == ["UPDATE SYN_RECV", "UPDATE ESTABLISHED"]  # ASSURED on the last
    talk.client("PA", data=10)
    assert drain(eng) == []  # no state change, no event
    talk.server("R")
    assert drain(eng) == ["UPDATE CLOSE"]
    eng.expire(talk.clock.advance(11))
    assert drain(eng) == ["DESTROY CLOSE RST"]


def test_reset_before_any_reply_and_timeouts(open_rules: Path) -> None:
    eng = engine(open_rules)
    talk = Tcp(eng, "192.0.2.2:40001", "203.0.113.10:80")
    talk.client("S")
    talk.server("R", ack=talk.next_seq[0], seq=0)
    assert drain(eng) == ["NEW SYN_SENT", "DESTROY CLOSE RST"]
    flow = Udp(eng, "192.0.2.2:5000", "203.0.113.10:53")
    flow.client()
    flow.server()
    eng.expire(flow.clock.advance(31))
    assert drain(eng) == ["NEW UNREPLIED", "UPDATE REPLIED", "DESTROY REPLIED timeout"]


def test_a_full_table_drops_the_oldest_unreplied_entry_early(open_rules: Path) -> None:
    eng = engine(open_rules, limit=1)
    clock = Clock()
    for port in (5001, 5002):
        eng.process(craft.udp("192.0.2.2", "203.0.113.10", port, 53), now=clock.advance(1))
    assert drain(eng) == ["NEW UNREPLIED", "DESTROY UNREPLIED early drop", "NEW UNREPLIED"]


def test_rows_carry_the_tuples_as_conntrack_prints_them() -> None:
    eng = engine(ROOT / "rules/stateful-web.fw")
    eng.process(craft.icmp_echo("192.0.2.2", "203.0.113.10", id=7), now=1.0)
    row = ct_event_row(eng.conntrack.events[0], 1.0)
    assert row["proto"] == "icmp" and row["timeout"] == 30 and row["unreplied"]
    assert row["orig"] == {"src": "192.0.2.2", "dst": "203.0.113.10", "type": 8, "code": 0,
                           "id": 7}
    assert row["reply"]["type"] == 0 and row["reply"]["dst"] == "203.0.113.1"  # masqueraded
