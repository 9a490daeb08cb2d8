"""What the daemon tells followers, live: conntrack events and packet traces.

`fwlab conntrack --follow` (as `conntrack -E`) and `fwlab trace MATCH` (as `nft monitor trace`)
poll the daemon's control socket (one request, one answer, as every control command): the
daemon keeps the recent conntrack events in a ring with sequence numbers, and each trace
session's records until its follower takes them. Everything is bounded: the ring, each session's
buffer, a session's life (its --seconds, and SESSION_IDLE without a poll) and its --count.

A trace picks packets as they reach the engine, with a match in the rules language judged on
the packet's own fields and interfaces (not `ct state`: that is what the engine is about to
work out); a picked packet is judged with `trace=True`, so its record says every rule tried,
as `fwlab explain` does.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fw.errors import LabError, RulesError

__all__ = ["COMMANDS", "Monitor", "compile_match"]

COMMANDS = ("ct-events", "trace-start", "trace-poll", "trace-stop")
EVENT_RING = 8192  # conntrack events kept for followers
FOLLOW_IDLE = 10.0  # seconds after a follower's last question that events are still kept
SESSION_BUFFER = 2048  # trace records kept per session until polled
SESSION_IDLE = 10.0  # seconds without a poll before a session is ended
MAX_SESSIONS = 8
MAX_TRACE_SECONDS = 3600.0


def compile_match(text: str, interfaces: list[str]) -> Any:
    """MATCH as a one-rule rule set, compiled like any (so it means what it means in a rule);
    a mistake is one line that points into MATCH."""
    from fw.dsl import load_ruleset
    from fw.engine.evaluate import CompiledRuleSet

    if "\n" in text or not text.strip():
        raise LabError(f"trace match {text!r}: give one line of matches, e.g. 'tcp dport 80'")
    with tempfile.TemporaryDirectory(prefix="fwlab-trace-") as tmp:
        path = Path(tmp) / "match.fw"
        path.write_text(f"mode stateless\nforward {{\n{text} accept\n}}\n")
        try:
            ruleset = load_ruleset(str(path))
        except RulesError as exc:
            column = f" (column {exc.span.column})" if exc.span and exc.span.line == 3 else ""
            why = exc.message if "ct state" not in exc.message else (
                "a trace picks packets before the engine tracks them: no 'ct state' here")
            raise LabError(f"trace match {text!r}{column}: {why}") from None
    return CompiledRuleSet(ruleset, interfaces)


@dataclass
class Session:
    """One `fwlab trace`: its match, its bounds, the records waiting for its follower."""

    match: Any
    text: str
    deadline: float
    remaining: int | None
    last_poll: float
    records: deque = field(default_factory=lambda: deque(maxlen=SESSION_BUFFER))
    seen: int = 0

    def picks(self, values: dict[str, int]) -> bool:
        chain = self.match.chains["forward"]
        return chain.first_decider(chain.matching(values)) is not None

    def done(self, now: float) -> bool:
        return now >= self.deadline or self.remaining == 0 or now - self.last_poll > SESSION_IDLE


class Monitor:
    """The daemon's followers. Every method runs under the daemon's engine lock."""

    def __init__(self) -> None:
        self.events: deque[tuple[int, float, float, Any]] = deque(maxlen=EVENT_RING)
        self.seq = 0
        self.sessions: dict[int, Session] = {}
        self.picked: list[Session] = []  # the sessions that want the packet being judged
        self.pending: list[Any] = []  # the engine's conntrack events, not yet numbered
        self.ids = itertools.count(1)
        self.followed_at = -FOLLOW_IDLE  # when a follower last asked for conntrack events

    def watch(self, engine: Any) -> None:
        """Start collecting the engine's conntrack events (ct_events.py)."""
        engine.conntrack.events = self.pending = []

    # -- the packet path -----------------------------------------------------------------------

    def wants(self, engine: Any, payload: bytes, hook: str, iif: str | None, oif: str | None,
              now: float, wire_len: int | None = None) -> bool:
        """Should the engine trace this packet? False at once when nobody traces."""
        if not self.sessions:
            return False
        from fw.core.fields import packet_values
        from fw.engine.packet import decode

        pkt = decode(payload, wire_len)
        if not pkt.family:
            return False
        _, iif, oif = engine.place(pkt, hook, iif, oif)
        self.picked = [
            s for s in self.sessions.values()
            if s.remaining != 0 and now < s.deadline
            and s.picks(packet_values(pkt, s.match.iface_id(iif), s.match.iface_id(oif), None))
        ]
        return bool(self.picked)

    def drain(self, now: float) -> None:
        """Number the engine's new events; keep them only while someone follows. An event
        holds its connection, so a ring kept for nobody would hold up to EVENT_RING dead
        connections, scattered over the heap, and with them the memory a flood took
        (docs/lab.md, "Floods")."""
        pending = self.pending
        if pending and now - self.followed_at > FOLLOW_IDLE:
            self.seq += len(pending)
            pending.clear()
            self.events.clear()
        elif pending:
            wall = time.time()
            for event in pending:
                self.seq += 1
                self.events.append((self.seq, wall, now, event))
            pending.clear()

    def record(self, engine: Any, decision: Any, payload: bytes, hook: str,
               wire_len: int | None = None) -> None:
        """The judged packet, as explain shows it, for each session that picked it."""
        from fw.engine.packet import decode
        from fw.views import decision_view, summary

        packet = summary(decode(payload, wire_len))
        view = {"time": round(time.time(), 6), "hook": hook, "packet": packet,
                **decision_view(engine, decision)}
        for session in self.picked:
            session.records.append(view)
            session.seen += 1
            if session.remaining is not None:
                session.remaining -= 1
        self.picked = []

    # -- the control socket --------------------------------------------------------------------

    def dispatch(self, request: dict[str, Any], engine: Any, now: float,
                 lock: Any) -> dict[str, Any]:
        """One control request; `lock` is the engine's (a match compiles outside it)."""
        cmd = request.get("cmd")
        match = None
        if cmd == "trace-start":
            try:
                match = compile_match(str(request.get("match") or ""),
                                      list(engine.routing.interfaces))
            except LabError as exc:
                return {"ok": False, "error": str(exc)}
        with lock:
            self.drain(now)
            self.end_idle(now)
            if cmd == "ct-events":
                self.followed_at = now
                return self.ct_events(request.get("after"))
            if cmd == "trace-start":
                return self.start(request, match, now)
            return self.poll(request, cmd, now)

    def poll(self, request: dict[str, Any], cmd: Any, now: float) -> dict[str, Any]:
        """A follower takes its session's records (trace-poll) or ends it (trace-stop)."""
        ident = request.get("id")
        session = self.sessions.get(ident)  # type: ignore[arg-type]
        if session is None:
            return {"ok": True, "records": [], "done": True}
        session.last_poll = now
        records = list(session.records)
        session.records.clear()
        done = cmd == "trace-stop" or session.done(now)
        if done:
            del self.sessions[ident]  # type: ignore[arg-type]
        return {"ok": True, "records": records, "done": done, "seen": session.seen}

    def ct_events(self, after: Any) -> dict[str, Any]:
        """Events after sequence number `after` (None: none yet, just where the stream is)."""
        from fw.views import ct_event_row

        if not isinstance(after, int):
            return {"ok": True, "events": [], "last": self.seq, "lost": 0}
        oldest = self.events[0][0] if self.events else self.seq + 1
        rows = [{"time": round(wall, 6), **ct_event_row(ev, mono)}
                for seq, wall, mono, ev in self.events if seq > after]
        lost = max(0, oldest - after - 1) if after < self.seq else 0
        return {"ok": True, "events": rows, "last": self.seq, "lost": lost}

    def start(self, request: dict[str, Any], match: Any, now: float) -> dict[str, Any]:
        if len(self.sessions) >= MAX_SESSIONS:
            return {"ok": False, "error": f"{MAX_SESSIONS} traces are running already"}
        seconds = min(float(request.get("seconds") or 10.0), MAX_TRACE_SECONDS)
        count = request.get("count")
        ident = next(self.ids)
        self.sessions[ident] = Session(match, str(request.get("match")), now + seconds,
                                       int(count) if count is not None else None, now)
        return {"ok": True, "id": ident, "seconds": seconds}

    def end_idle(self, now: float) -> None:
        for ident, session in list(self.sessions.items()):
            if now - session.last_poll > SESSION_IDLE:
                del self.sessions[ident]
