"""Connection tracking events, as `conntrack -E` reports them: NEW, UPDATE, DESTROY.

ConnTable appends one CtEvent to its `events` list when that list exists (None, the default, costs
nothing: replay, explain and the benchmarks never collect). The lab daemon sets it to [] and
drains it after each packet and each expiry run (`fwlab conntrack --follow`).

- NEW: a connection entered the table (its first packet was accepted);
- UPDATE: its state changed (a TCP state, the first reply, ASSURED);
- DESTROY: it left the table, `reason` says why: "timeout", "RST" (reset before any reply, or
  its CLOSE timer after a reset ran out), "early drop" (the table was full), "reopened" (a new SYN
  reused a closed connection's tuple) or "removed".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fw.engine.conntrack import Conn

NEW, UPDATE, DESTROY = "new", "update", "destroy"


@dataclass(frozen=True, slots=True)
class CtEvent:
    """What happened to which connection; the state as it was then (the entry moves on)."""

    kind: str  # NEW / UPDATE / DESTROY
    conn: Conn
    state: int
    seen_reply: bool
    assured: bool
    expires: float
    reason: str = ""

    @classmethod
    def of(cls, kind: str, conn: Conn, reason: str = "") -> CtEvent:
        return cls(kind, conn, conn.state, conn.seen_reply, conn.assured, conn.expires, reason)
