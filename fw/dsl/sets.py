"""Warnings about set literals: an element given twice, or elements that overlap.

`{ 80, 80 }` and `{ 192.0.2.0/24, 192.0.2.7 }` mean what they say, but the repeat is usually a
slip (a host meant to be elsewhere, a copy and paste), and nft refuses overlapping elements in
an interval set. Elements are compared as the integer intervals they stand for, so `ssh` and
`22`, or a range and a prefix, are found too.
"""

from __future__ import annotations

from collections.abc import Sequence

from fw.dsl.values import Atom, Value
from fw.errors import Span


def set_overlaps(value: Value, intervals: Sequence[tuple[int, int]]) -> list[tuple[str, Span]]:
    """(message, span) per element that repeats or overlaps an earlier-sorted one."""
    if len(value.atoms) < 2:
        return []
    order = sorted(range(len(intervals)), key=lambda i: intervals[i])
    out, widest, previous = [], order[0], order[0]
    for i in order[1:]:
        if intervals[i] == intervals[previous]:
            out.append(message(value, value.atoms[previous], value.atoms[i], True))
        elif intervals[i][0] <= intervals[widest][1]:
            out.append(message(value, value.atoms[widest], value.atoms[i], False))
        if intervals[i][1] > intervals[widest][1]:
            widest = i
        previous = i
    return out


def message(value: Value, first: Atom, later: Atom, same: bool) -> tuple[str, Span]:
    where = f" (in ${value.define})" if value.define else ""
    if first.text == later.text:
        words = "is given twice in the set"
    elif same:
        words = f"is the same as '{first.text}' in the set"
    else:
        words = f"overlaps '{first.text}' in the set"
    return f"'{later.text}' {words}{where}", later.span
