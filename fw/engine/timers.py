"""Deadlines of many entries, pulled: a calendar queue that costs one list slot per entry.

The connection table keeps a deadline (``expires``) on every entry and moves it on nearly every
packet. A heap of ``(time, entry)`` tuples costs a tuple and a float per entry (about 90 bytes);
here entries due later than the current second wait in per-second buckets (one list slot each)
and only the entries of the bucket that has come due are moved into a heap, so that
``next_expiry`` and ``pop_due`` stay exact.

An entry has a float ``expires`` and a ``sched`` slot that belongs to the queue: None when it is
not queued, else what it is filed under: its time in the near heap, or its far bucket. A bucket
is a float (the time its second starts) carrying its entries, so either way ``expires < sched``
says the deadline moved earlier than where the entry waits (``moved``). A later deadline needs
nothing: the entry is filed again, at its new deadline, when its old one comes round.
"""

from __future__ import annotations

import heapq
import math
from typing import Any, Protocol

GRAIN = 1.0  # seconds per far bucket; a power of two, so floor(t / GRAIN) * GRAIN <= t exactly


class Timed(Protocol):
    """An entry: ``__lt__`` only breaks ties between entries due at the same time."""

    expires: float
    sched: Any

    def __lt__(self, other: Any) -> bool: ...


class _Bucket(float):
    """A far bucket: the time its span starts, with the entries filed in it."""

    __slots__ = ("entries",)
    entries: list


class Timers:
    def __init__(self) -> None:
        self._near: list[tuple[float, Any]] = []  # heap of entries due before _horizon
        self._horizon = -math.inf
        self._far: dict[int, _Bucket] = {}  # tick -> bucket, every tick >= _horizon
        self._ticks: list[int] = []  # heap of the ticks in _far
        self._filed = 0  # near tuples and far list slots, stale ones included
        self._stale = 0

    def moved(self, entry: Timed) -> None:
        """Its ``expires`` is now earlier than its ``sched``: file it again, earlier."""
        self._stale += 1
        self.add(entry)
        self._compact()

    def discard(self, entry: Timed) -> None:
        """Forget a queued entry (its filing goes stale)."""
        entry.sched = None
        self._stale += 1
        self._compact()

    def next_expiry(self) -> float | None:
        """The earliest ``expires`` of the queued entries, None when there are none."""
        near = self._near
        while True:
            while near:
                sched, entry = near[0]
                if entry.sched is not sched:
                    self._pop_stale()
                elif entry.expires > sched:  # moved later since it was filed
                    heapq.heappop(near)
                    self._filed -= 1
                    self.add(entry)
                else:
                    return sched
            if not self._ticks:
                return None
            self._advance()

    def pop_due(self, now: float) -> list[Any]:
        """Take out and return the entries whose ``expires`` is ``now`` or earlier."""
        due = []
        near = self._near
        while True:
            while near and near[0][0] <= now:
                sched, entry = heapq.heappop(near)
                self._filed -= 1
                if entry.sched is not sched:
                    self._stale -= 1
                elif entry.expires <= now:
                    entry.sched = None
                    due.append(entry)
                else:
                    self.add(entry)
            if self._ticks and self._ticks[0] * GRAIN <= now:
                self._advance()
            else:
                return due

    def add(self, entry: Timed) -> None:
        """Queue an entry (its ``sched`` is None) at its ``expires``; also how every entry
        is filed again."""
        at = entry.expires
        self._filed += 1
        if at < self._horizon:
            entry.sched = at
            heapq.heappush(self._near, (at, entry))
            return
        tick = math.floor(at / GRAIN)
        bucket = self._far.get(tick)
        if bucket is None:
            bucket = self._far[tick] = _Bucket(tick * GRAIN)
            bucket.entries = []
            heapq.heappush(self._ticks, tick)
        bucket.entries.append(entry)
        entry.sched = bucket

    def _advance(self) -> None:
        """Bring the earliest far bucket near: its live entries go to the heap (or, moved
        later since, to the bucket of their new deadline)."""
        tick = heapq.heappop(self._ticks)
        bucket = self._far.pop(tick)
        self._horizon = (tick + 1) * GRAIN
        self._filed -= len(bucket.entries)
        for entry in bucket.entries:
            if entry.sched is bucket:
                self.add(entry)
            else:
                self._stale -= 1

    def _pop_stale(self) -> None:
        heapq.heappop(self._near)
        self._filed -= 1
        self._stale -= 1

    def _compact(self) -> None:
        """Drop stale filings once they are a quarter of all: each pins a slot, a near tuple
        or a dead entry, and an O(n) rebuild every n/4 stale filings is cheap."""
        if self._stale <= 1024 or self._stale * 4 <= self._filed:
            return
        self._near = [item for item in self._near if item[1].sched is item[0]]
        heapq.heapify(self._near)
        for tick, bucket in list(self._far.items()):
            bucket.entries = [entry for entry in bucket.entries if entry.sched is bucket]
            if not bucket.entries:
                del self._far[tick]
        self._ticks = list(self._far)
        heapq.heapify(self._ticks)
        self._filed = len(self._near) + sum(len(b.entries) for b in self._far.values())
        self._stale = 0
