"""Sets of integers as merged, sorted tuples of inclusive `(lo, hi)` pairs: the one interval
algebra of fwlab. The classifier, the shadow check and the exposure walk all use it; the walk
does millions of operations, so the functions work on bare tuples, and `IntervalSet` is the
object face of the same functions for code that reads better with operators."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

Ranges = tuple[tuple[int, int], ...]


# -- functions ------------------------------------------------------------------------------------

def norm(ranges: Iterable[tuple[int, int]]) -> Ranges:
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1][1] = hi
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def point(value: int) -> Ranges:
    return ((value, value),)


def _hi(pair: tuple[int, int]) -> int:
    return pair[1]


def _lo(pair: tuple[int, int]) -> int:
    return pair[0]


def _window(a: Ranges, lo: int, hi: int) -> tuple[int, int]:
    """Indexes [i, j) of the pairs of a that overlap [lo, hi]."""
    return bisect_left(a, lo, key=_hi), bisect_right(a, hi, key=_lo)


def clip(a: Ranges, lo: int, hi: int) -> Ranges:
    """a ∩ [lo, hi]."""
    i, j = _window(a, lo, hi)
    if i >= j:
        return ()
    if i + 1 == j:
        return ((max(a[i][0], lo), min(a[i][1], hi)),)
    first, last = a[i], a[j - 1]
    return ((max(first[0], lo), first[1]), *a[i + 1:j - 1], (last[0], min(last[1], hi)))


def inter(a: Ranges, b: Ranges) -> Ranges:
    if not a or not b:
        return ()
    if len(b) == 1:
        return clip(a, *b[0])
    if len(a) == 1:
        return clip(b, *a[0])
    if len(a) > 8 * len(b) or len(b) > 8 * len(a):
        small, big = (a, b) if len(a) < len(b) else (b, a)
        return tuple(p for lo, hi in small for p in clip(big, lo, hi))
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def cut(a: Ranges, lo: int, hi: int) -> Ranges:
    """a − [lo, hi]."""
    i, j = _window(a, lo, hi)
    if i >= j:
        return a
    keep = []
    if a[i][0] < lo:
        keep.append((a[i][0], lo - 1))
    if a[j - 1][1] > hi:
        keep.append((hi + 1, a[j - 1][1]))
    return (*a[:i], *keep, *a[j:])


def sub(a: Ranges, b: Ranges) -> Ranges:
    """a − b."""
    if not a or not b:
        return a
    if len(b) <= 4 or len(b) * 8 < len(a):
        for lo, hi in b:
            a = cut(a, lo, hi)
            if not a:
                break
        return a
    return inter(a, complement(b, a[0][0], a[-1][1]))


def complement(a: Ranges, lo: int, hi: int) -> Ranges:
    out, start = [], lo
    for rlo, rhi in a:
        if rlo > start:
            out.append((start, min(rlo - 1, hi)))
        start = max(start, rhi + 1)
        if start > hi:
            break
    if start <= hi:
        out.append((start, hi))
    return tuple(out)


def union(a: Ranges, b: Ranges) -> Ranges:
    if not a:
        return b
    if not b:
        return a
    return norm((*a, *b))


def overlaps(a: Ranges, b: Ranges) -> bool:
    if not a or not b:
        return False
    if len(a) == 1 and len(b) == 1:  # the common case (a rule's value against a span): no bisect
        return a[0][0] <= b[0][1] and b[0][0] <= a[0][1]
    if len(a) < len(b):
        a, b = b, a
    for lo, hi in b:
        i, j = _window(a, lo, hi)
        if i < j:
            return True
    return False


def covers(a: Ranges, b: Ranges) -> bool:
    """b ⊆ a."""
    for lo, hi in b:
        i = bisect_left(a, lo, key=_hi)
        if i >= len(a) or a[i][0] > lo or a[i][1] < hi:
            return False
    return True


def contains(a: Ranges, value: int) -> bool:
    i = bisect_left(a, value, key=_hi)
    return i < len(a) and a[i][0] <= value


def count(a: Ranges) -> int:
    return sum(hi - lo + 1 for lo, hi in a)


class IntervalSet:
    __slots__ = ("_ranges",)

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._ranges: Ranges = norm(ranges)

    @classmethod
    def span(cls, lo: int, hi: int) -> IntervalSet:
        return cls(((lo, hi),))

    @classmethod
    def of(cls, ranges: Ranges) -> IntervalSet:
        """Wrap ranges that are already merged (no second normalisation)."""
        made = cls.__new__(cls)
        made._ranges = ranges
        return made

    def ranges(self) -> list[tuple[int, int]]:
        return list(self._ranges)

    def __contains__(self, value: int) -> bool:
        return contains(self._ranges, value)

    def count(self) -> int:
        """How many integers the set holds (not how many ranges); IPv6 sets may be huge."""
        return count(self._ranges)

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
        return covers(self._ranges, other._ranges)

    def __and__(self, other: IntervalSet) -> IntervalSet:
        return IntervalSet.of(inter(self._ranges, other._ranges))

    def __or__(self, other: IntervalSet) -> IntervalSet:
        return IntervalSet.of(union(self._ranges, other._ranges))

    def __sub__(self, other: IntervalSet) -> IntervalSet:
        return IntervalSet.of(sub(self._ranges, other._ranges))

    def complement(self, lo: int, hi: int) -> IntervalSet:
        """Everything in [lo, hi] not in this set."""
        return IntervalSet.of(complement(self._ranges, lo, hi))
