"""Load balancing as NAT: which member of a `dnat to POOL` a new connection goes to.

The choice is made once, on a connection's first packet (nat.py keeps it on the connection's
Binding, so every later packet both ways follows the conntrack entry, as Linux's numgen/jhash
maps do). Methods:

- round-robin: the members in a fixed weighted order (smooth weighted round-robin, so a member
  of weight 2 among two of weight 1 comes as a, b, a, c rather than a, a, b, c);
- random: drawn by weight from the engine's seeded generator, so replays repeat exactly;
- hash: a hash of the client's address and port (what nft's jhash over `ip saddr . th sport`
  does), source-hash: of the address only, so one client keeps one member.

Stickiness (`sticky N seconds`) remembers a client's member while it has a connection through
the pool and for N seconds after the last one ended, where a connection ends when its conntrack
entry leaves the table (timed out, closed or flushed), as pf's source tracking counts it. Timers
are pulled like the rest of the engine's: `next_expiry()` / `expire(now)`.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate

from fw.core.text import address_text
from fw.model import Pool, PoolMember

Alive = Callable[[object], bool]
MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Choice:
    """The member a connection was given, and why (what `explain` says)."""

    state: PoolState
    member: int  # index into the pool's members
    why: str

    @property
    def address(self) -> int:
        return int(self.state.pool.members[self.member].addr)


@dataclass(slots=True, eq=False)
class StickyEntry:
    member: int
    conns: list = field(default_factory=list)  # its connections (some may have ended)
    last_end: float = float("-inf")  # when the last of them ended, once all have


@dataclass(slots=True)
class MemberCount:
    total: int = 0  # connections ever given to the member
    conns: list = field(default_factory=list)  # those that may still be in the table
    prune_at: int = 64  # the list is pruned when it grows this long (amortised: O(1) each)


class PoolState:
    """One pool's position, counters and sticky table; lives as long as the engine."""

    def __init__(self, pool: Pool, rule: object, rng: random.Random) -> None:
        self.pool = pool
        self.rule = rule
        self.rng = rng
        self.weights = [m.weight for m in pool.members]
        self.bounds = list(accumulate(self.weights))  # cumulative weights for draws
        self.order = smooth_order(self.weights)
        self.position = 0
        self.counts = [MemberCount() for _ in pool.members]
        self.sticky: dict[int, StickyEntry] = {}
        size = len(pool.members)
        self.names = [f"member {i + 1} of {size} ({m.addr})" for i, m in enumerate(pool.members)]

    def choose(self, src: int, sport: int, now: float, alive: Alive) -> Choice:
        entry = self.sticky.get(src) if self.pool.sticky else None
        if entry is not None and self.holds(entry, now, alive):
            member, why = entry.member, self.sticky_why(src, entry, now)
        else:
            member, why = self.pick(src, sport)
        return Choice(self, member, f"{why}: {self.names[member]}")

    def pick(self, src: int, sport: int) -> tuple[int, str]:
        method = self.pool.method
        if method == "round-robin":
            step = self.position % len(self.order)
            self.position += 1
            return self.order[step], f"round-robin, step {step + 1} of {len(self.order)}"
        if method == "random":
            return self.slot(self.rng.randrange(self.bounds[-1])), "random (seeded)"
        if method == "hash":
            member = self.slot(mix(src << 16 | sport) % self.bounds[-1])
            return member, f"hash of {address_text(4, src)} port {sport}"
        member = self.slot(mix(src) % self.bounds[-1])
        return member, f"source-hash of {address_text(4, src)}"

    def slot(self, draw: int) -> int:
        """The member whose share of the total weight `draw` falls in."""
        return bisect_right(self.bounds, draw)

    # -- connections -------------------------------------------------------------------------

    def bound(self, choice: Choice, conn: object, src: int, now: float, alive: Alive) -> None:
        """A connection given `choice` entered the table: count it, remember the client."""
        count = self.counts[choice.member]
        count.total += 1
        count.conns.append(conn)
        if len(count.conns) >= count.prune_at:
            count.conns = [c for c in count.conns if c.expires > now and alive(c)]
            count.prune_at = 2 * len(count.conns) + 64
        if self.pool.sticky:
            entry = self.sticky.get(src)
            if entry is None or entry.member != choice.member:
                entry = self.sticky[src] = StickyEntry(choice.member)
            entry.conns.append(conn)

    def holds(self, entry: StickyEntry, now: float, alive: Alive) -> bool:
        """Is the entry still in force: a connection alive, or within N s of the last end?"""
        self.prune(entry, now, alive)
        return bool(entry.conns) or now < entry.last_end + self.pool.sticky

    @staticmethod
    def prune(entry: StickyEntry, now: float, alive: Alive) -> None:
        """Drop ended connections, noting when they ended: a timed-out entry at its expiry,
        one taken out early (closed, flushed) when it is first seen gone."""
        live = []
        for conn in entry.conns:
            if conn.expires > now and alive(conn):  # expired but not yet expire()d: ended
                live.append(conn)
            else:
                entry.last_end = max(entry.last_end, min(conn.expires, now))
        entry.conns = live

    def sticky_why(self, src: int, entry: StickyEntry, now: float) -> str:
        client = address_text(4, src)
        if entry.conns:
            return f"sticky, {client} has a connection open to it"
        return f"sticky, {client}'s last connection to it ended {now - entry.last_end:.1f} s ago"

    def active(self, now: float, alive: Alive) -> list[int]:
        """Connections per member still in the table."""
        for count in self.counts:
            count.conns = [c for c in count.conns if c.expires > now and alive(c)]
        return [len(c.conns) for c in self.counts]

    # -- timers ------------------------------------------------------------------------------

    def next_expiry(self) -> float | None:
        """When a sticky entry may lapse: its connections' expiry while it has some (looked at
        again then), else N seconds after the last one ended."""
        times = [min((c.expires for c in e.conns), default=e.last_end + self.pool.sticky)
                 if e.conns else e.last_end + self.pool.sticky for e in self.sticky.values()]
        return min(times, default=None)

    def expire(self, now: float, alive: Alive) -> int:
        gone = [src for src, e in self.sticky.items() if not self.holds(e, now, alive)]
        for src in gone:
            del self.sticky[src]
        return len(gone)


def smooth_order(weights: list[int]) -> list[int]:
    """Smooth weighted round-robin (as nginx): one cycle of sum(weights) picks, each member
    as often as its weight, spread out."""
    current = [0] * len(weights)
    total, order = sum(weights), []
    for _ in range(total):
        current = [c + w for c, w in zip(current, weights, strict=True)]
        best = max(range(len(weights)), key=lambda i: (current[i], -i))
        current[best] -= total
        order.append(best)
    return order


def mix(value: int) -> int:
    """A 64-bit finaliser (splitmix64): neighbouring ports and addresses land far apart."""
    value = (value + 0x9E3779B97F4A7C15) & MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


def member_text(member: PoolMember, port: int | None) -> str:
    return f"{member.addr}:{port}" if port is not None and port >= 0 else str(member.addr)
