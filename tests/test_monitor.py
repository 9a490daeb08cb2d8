"""The daemon's followers without a kernel: a trace picks packets by a rules-language match and
records them as explain shows them; conntrack events are numbered, and a slow follower is told
how many it lost."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fw import craft
from fw.dsl import load_ruleset
from fw.engine.engine import Engine
from fw.errors import LabError
from fw.lab import monitor
from fw.lab.monitor import Monitor, compile_match

ROOT = Path(__file__).resolve().parent.parent
LOCK = threading.Lock()


def setup() -> tuple[Monitor, Engine]:
    engine = Engine(load_ruleset(str(ROOT / "rules/stateful-web.fw")))
    watcher = Monitor()
    watcher.watch(engine)
    return watcher, engine


def judge(watcher: Monitor, engine: Engine, raw: bytes, now: float) -> None:
    """What the daemon does with one packet from the queue (a batch of one: the events are
    numbered after each batch)."""
    traced = watcher.wants(engine, raw, "prerouting", None, None, now)
    decision = engine.process(raw, hook="prerouting", now=now, trace=traced)
    if traced:
        watcher.record(engine, decision, raw, "prerouting")
    watcher.drain(now)


def test_a_trace_records_only_what_it_matches_up_to_its_count() -> None:
    watcher, engine = setup()
    started = watcher.dispatch({"cmd": "trace-start", "match": "iif wan tcp dport 22",
                                "count": 1, "seconds": 5}, engine, 0.0, LOCK)
    attack = craft.tcp("203.0.113.66", "192.0.2.2", 4444, 22, "S")
    for now, raw in ((0.1, craft.tcp("192.0.2.2", "203.0.113.10", 40000, 80, "S")),
                     (0.2, attack), (0.3, attack)):
        judge(watcher, engine, raw, now)
    polled = watcher.dispatch({"cmd": "trace-poll", "id": started["id"]}, engine, 0.4, LOCK)
    (record,) = polled["records"]
    assert polled["done"] and record["packet"] == "tcp 203.0.113.66:4444 -> 192.0.2.2:22 flags S"
    assert (record["verdict"], record["chain"], record["iif"]) == ("drop", "forward", "wan")
    assert len(record["trace"]) == 7 and record["by"].endswith('log prefix "fwd-drop " drop')
    assert not watcher.sessions


def test_a_session_nobody_polls_ends() -> None:
    watcher, engine = setup()
    watcher.dispatch({"cmd": "trace-start", "match": "tcp", "seconds": 600}, engine, 0.0, LOCK)
    watcher.dispatch({"cmd": "ct-events"}, engine, monitor.SESSION_IDLE + 1, LOCK)
    assert not watcher.sessions


@pytest.mark.parametrize(("match", "says"), [
    ("tcp dprt 80", "(column 5): unexpected 'dprt'"),
    ("ct state new", "no 'ct state' here"),
    ("", "give one line of matches"),
])
def test_a_bad_match_is_one_line(match: str, says: str) -> None:
    with pytest.raises(LabError, match="trace match") as caught:
        compile_match(match, ["lan", "wan"])
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_conntrack_events_are_numbered_and_losses_counted(monkeypatch) -> None:
    monkeypatch.setattr(monitor, "EVENT_RING", 2)
    watcher, engine = setup()
    start = watcher.dispatch({"cmd": "ct-events", "after": None}, engine, 0.0, LOCK)["last"]
    for port in (5001, 5002, 5003):
        judge(watcher, engine, craft.udp("192.0.2.2", "203.0.113.10", port, 53), 0.1)
    got = watcher.dispatch({"cmd": "ct-events", "after": start}, engine, 0.2, LOCK)
    assert [e["orig"]["sport"] for e in got["events"]] == [5002, 5003]
    assert got["lost"] == 1 and got["last"] == start + 3
    assert got["events"][0]["event"] == "NEW" and got["events"][0]["timeout"] == 30


def test_events_are_numbered_but_not_kept_while_nobody_follows() -> None:
    """An event holds its connection: a ring kept for nobody would hold dead connections (and
    the memory a flood took). A follower that comes later starts from the right number."""
    watcher, engine = setup()
    for port in (5001, 5002):
        judge(watcher, engine, craft.udp("192.0.2.2", "203.0.113.10", port, 53), 100.0)
    assert not watcher.events and watcher.seq == 2
    start = watcher.dispatch({"cmd": "ct-events", "after": None}, engine, 100.5, LOCK)["last"]
    judge(watcher, engine, craft.udp("192.0.2.2", "203.0.113.10", 5003, 53), 101.0)
    got = watcher.dispatch({"cmd": "ct-events", "after": start}, engine, 101.5, LOCK)
    assert start == 2 and [e["orig"]["sport"] for e in got["events"]] == [5003]
    judge(watcher, engine, craft.udp("192.0.2.2", "203.0.113.10", 5004, 53),
          101.5 + monitor.FOLLOW_IDLE + 1)
    assert not watcher.events and watcher.seq == 4  # the follower went away: nothing kept
