"""Sets of integers as sorted, merged, closed intervals.

Ports, addresses (as ints), protocol numbers and ICMP types are all integers, so one small set
type answers every "does this match cover that one" question without enumerating values.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable


class IntervalSet:
    __slots__ = ("_his", "_los")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        merged: list[list[int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._los = tuple(r[0] for r in merged)
        self._his = tuple(r[1] for r in merged)

    @classmethod
    def span(cls, lo: int, hi: int) -> IntervalSet:
        return cls([(lo, hi)])

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._los, self._his, strict=True))

    def __contains__(self, value: int) -> bool:
        i = bisect_right(self._los, value) - 1
        return i >= 0 and value <= self._his[i]

    def count(self) -> int:
        """How many integers the set holds (not how many ranges); IPv6 sets may be huge."""
        return sum(hi - lo + 1 for lo, hi in self.ranges())

    def is_point(self) -> bool:
        return len(self._los) == 1 and self._los[0] == self._his[0]

    def __bool__(self) -> bool:
        return bool(self._los)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IntervalSet) and self.ranges() == other.ranges()

    def __hash__(self) -> int:
        return hash((self._los, self._his))

    def __repr__(self) -> str:
        return f"IntervalSet({self.ranges()})"

    def covers_range(self, lo: int, hi: int) -> bool:
        i = bisect_right(self._los, lo) - 1
        return i >= 0 and hi <= self._his[i]

    def issuperset(self, other: IntervalSet) -> bool:
        return all(self.covers_range(lo, hi) for lo, hi in other.ranges())

    def __and__(self, other: IntervalSet) -> IntervalSet:
        out = []
        for lo, hi in self.ranges():
            for olo, ohi in other.ranges():
                if olo <= hi and lo <= ohi:
                    out.append((max(lo, olo), min(hi, ohi)))
        return IntervalSet(out)

    def __or__(self, other: IntervalSet) -> IntervalSet:
        return IntervalSet(self.ranges() + other.ranges())

    def isdisjoint(self, other: IntervalSet) -> bool:
        return not (self & other)

    def complement(self, lo: int, hi: int) -> IntervalSet:
        """Everything in [lo, hi] not in this set."""
        out, start = [], lo
        for rlo, rhi in self.ranges():
            if rlo > start:
                out.append((start, min(rlo - 1, hi)))
            start = max(start, rhi + 1)
        if start <= hi:
            out.append((start, hi))
        return IntervalSet(out)

    def __sub__(self, other: IntervalSet) -> IntervalSet:
        if not self:
            return self
        return self & other.complement(self._los[0], self._his[-1])
