"""Sets of integers as an object: the engine's classifier and the shadow check use this face of
the interval algebra in fw/analysis/space.py (one implementation; space.py works on the bare
tuples because the exposure walk does millions of operations)."""

from __future__ import annotations

from collections.abc import Iterable

from fw.analysis import space


class IntervalSet:
    __slots__ = ("_ranges",)

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._ranges: space.Ranges = space.norm(ranges)

    @classmethod
    def span(cls, lo: int, hi: int) -> IntervalSet:
        return cls(((lo, hi),))

    @classmethod
    def of(cls, ranges: space.Ranges) -> IntervalSet:
        """Wrap ranges that are already merged (no second normalisation)."""
        made = cls.__new__(cls)
        made._ranges = ranges
        return made

    def ranges(self) -> list[tuple[int, int]]:
        return list(self._ranges)

    def __contains__(self, value: int) -> bool:
        return space.contains(self._ranges, value)

    def count(self) -> int:
        """How many integers the set holds (not how many ranges); IPv6 sets may be huge."""
        return space.count(self._ranges)

    def is_point(self) -> bool:
        return len(self._ranges) == 1 and self._ranges[0][0] == self._ranges[0][1]

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IntervalSet) and self._ranges == other._ranges

    def __hash__(self) -> int:
        return hash(self._ranges)

    def __repr__(self) -> str:
        return f"IntervalSet({list(self._ranges)})"

    def issuperset(self, other: IntervalSet) -> bool:
        return space.covers(self._ranges, other._ranges)

    def __and__(self, other: IntervalSet) -> IntervalSet:
        return IntervalSet.of(space.inter(self._ranges, other._ranges))

    def __or__(self, other: IntervalSet) -> IntervalSet:
        return IntervalSet.of(space.union(self._ranges, other._ranges))

    def __sub__(self, other: IntervalSet) -> IntervalSet:
        return IntervalSet.of(space.sub(self._ranges, other._ranges))

    def complement(self, lo: int, hi: int) -> IntervalSet:
        """Everything in [lo, hi] not in this set."""
        return IntervalSet.of(space.complement(self._ranges, lo, hi))
