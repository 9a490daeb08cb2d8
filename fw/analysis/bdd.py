"""Sets of packets as binary decision diagrams over the header fields' bits (CUDD, via `dd`).

Why not only boxes (space.py): a rule set that interleaves rules narrow on different fields
leaves an undecided region that takes Θ(n²) boxes to write down, so a box walk is quadratic
whatever it indexes (docs/exposure.md has the figures). A BDD shares what the boxes repeat: the
undecided region after n rules stays a graph about the size of the rules, first match is
`decided = rest & rule; rest = rest & ~rule`, and CUDD does each step in C.

A field's values are numbered by class (see `Packets`); each field is a block of bits, most
significant first, in the order ORDER gives. Regions come back as boxes (`boxes`) in one
canonical decomposition: by the values of the first field that lead to the same rest, then the
next, so two equal sets always read the same whatever rules built them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dd import cudd

from fw.analysis.space import TAG, Box, RuleBox
from fw.core.fields import FIELDS, MISSING, F
from fw.core.ranges import Ranges, covers, norm, overlaps

# the order of the bit blocks (and of a box decomposition): small fields first, then the
# destination, the ports, the source, the flags. Measured on the shape that interleaves rules
# narrow on different fields (docs/exposure.md): ports above addresses copy the address
# structure of the other rules below every port value some rule names, and the source below
# the destination ports keeps the per-prefix port rules apart from the per-host ones
ORDER = [F[n] for n in ("iif", "oif", "proto", "ct_state", "ct_status", "icmp_type",
                        "daddr", "dport", "sport", "saddr", "tcp_flags")]
assert sorted(ORDER) == list(range(len(FIELDS)))

Function = cudd.Function


class Packets:
    """One BDD manager for one question, with a block of variables per field, and the
    conversions to and from space.py's sets, boxes and rule boxes.

    A field is not encoded bit for bit: its values are cut into the classes no rule or region
    of the question tells apart (the atoms: between consecutive range ends), and a value is its
    class's number. An IPv6 address then takes a dozen bits instead of 131, so a rule wide on
    addresses (a port rule) crosses a dozen levels per address some other rule names, not 131:
    that is most of the time of the shapes that interleave rules narrow on different fields."""

    def __init__(self, sets: Iterable[tuple[int, Ranges]]) -> None:
        ends: dict[int, set[int]] = {i: {MISSING} for i in range(TAG)}
        for i, values in sets:
            for lo, hi in values:
                ends[i].add(lo)
                ends[i].add(hi + 1)
        self.cuts = {i: sorted(e) for i, e in ends.items()}
        # CUDD sizes its tables for a gigabyte by default, 80 ms a manager, and an analysis
        # makes one per piece: start small (the tables still grow as needed)
        self.bdd = cudd.BDD(memory_estimate=1 << 26, initial_cache_size=1 << 14)
        # the blocks' order is what `boxes` reads; a small manager still lets its unique table
        # grow freely up to 4M nodes (the worst shape at 10,000 rules: 119 s -> 68 s)
        self.bdd.configure(reordering=False, loose_up_to=1 << 22)
        self.vars: dict[int, list[Function]] = {}
        self.first: dict[int, int] = {}  # field -> level of its most significant bit
        level = 0
        for i in ORDER:
            names = [f"f{i}b{b}" for b in range(max(1, len(self.cuts[i]).bit_length()))]
            self.bdd.declare(*names)
            self.vars[i] = [self.bdd.var(n) for n in names]
            self.first[i] = level
            level += len(names)
        self.true, self.false = self.bdd.true, self.bdd.false
        self._sets: dict[tuple[int, Ranges], Function] = {}

    @classmethod
    def of(cls, rules: Iterable[RuleBox], boxes: Iterable[Sequence[Ranges]]) -> Packets:
        """The manager for questions about these rules and regions (and nothing else)."""
        sets = [pair for rule in rules for pair in rule]
        sets += [(i, box[i]) for box in boxes for i in range(TAG)]
        return cls(sets)

    # -- into BDDs ---------------------------------------------------------------------------

    def values(self, i: int, values: Ranges) -> Function:
        """The packets whose field i is in `values` (every range end must be one the manager
        was made with)."""
        key = (i, values)
        got = self._sets.get(key)
        if got is None:
            cuts = self.cuts[i]
            got = self.false
            for lo, hi in values:
                first = bisect_left(cuts, lo)
                last = bisect_left(cuts, hi + 1) - 1
                got = got | self._interval_of(self.vars[i], 0, first, last)
            self._sets[key] = got
        return got

    def _interval_of(self, bits: list[Function], d: int, lo: int, hi: int) -> Function:
        """Numbers lo..hi on bits d.. of a block, relative to that subtree."""
        size = 1 << (len(bits) - d)
        if lo <= 0 and hi >= size - 1:
            return self.true
        half = size >> 1
        bit = bits[d]
        if hi < half:
            return self.bdd.ite(bit, self.false, self._interval_of(bits, d + 1, lo, hi))
        if lo >= half:
            return self.bdd.ite(bit, self._interval_of(bits, d + 1, lo - half, hi - half),
                                self.false)
        return self.bdd.ite(bit, self._interval_of(bits, d + 1, 0, hi - half),
                            self._interval_of(bits, d + 1, lo, half - 1))

    def rule(self, rule: RuleBox) -> Function:
        out = self.true
        for i, values in rule:
            out = out & self.values(i, values)
        return out

    def box(self, box: Sequence[Ranges]) -> Function:
        return self.rule(tuple((i, box[i]) for i in range(TAG)))

    def region(self, boxes: Iterable[Sequence[Ranges]]) -> Function:
        out = self.false
        for box in boxes:
            out = out | self.box(box)
        return out

    def union(self, parts: Iterable[Function]) -> Function:
        """The union of many sets, two by two: the operands stay small (or-ing thousands of
        disjoint parts one after the other rebuilds an ever larger union each time)."""
        fs = [f for f in parts if f != self.false]
        while len(fs) > 1:
            fs = [fs[i] | fs[i + 1] if i + 1 < len(fs) else fs[i] for i in range(0, len(fs), 2)]
        return fs[0] if fs else self.false

    def project(self, u: Function, i: int) -> Ranges:
        """The values field i takes in the set u."""
        others = [v.var for j in ORDER if j != i for v in self.vars[j]]
        only = self.bdd.exist(others, u)
        return norm(pair for _, values in self.partition(only, i) for pair in values)

    # -- back to boxes -----------------------------------------------------------------------

    def boxes(self, u: Function, tag: object = None) -> list[Box]:
        """The set as disjoint boxes, canonically: grouped by the first field's values that
        lead to the same rest of the set, then the next field's, and so on."""
        memo: dict = {}
        out = []
        for parts in self._walk(u, 0, memo):
            box: list = [()] * TAG
            for k, values in zip(ORDER, parts, strict=True):
                box[k] = values
            out.append((*box, tag))
        return out

    def _walk(self, u: Function, n: int, memo: dict) -> list[tuple[Ranges, ...]]:
        if u == self.false:
            return []
        if n == len(ORDER):
            return [()]
        key = (u, n)
        if key not in memo:
            out = []
            for rest, values in self.partition(u, ORDER[n]):
                out += [(values, *tail) for tail in self._walk(rest, n + 1, memo)]
            memo[key] = out
        return memo[key]

    def partition(self, u: Function, i: int) -> list[tuple[Function, Ranges]]:
        """Field i's values, grouped by the set of the later fields each leads to (in order of
        the smallest value; values leading to the empty set left out)."""
        width = len(self.vars[i])
        end = self.first[i] + width
        cuts = self.cuts[i]
        found: dict[Function, list[tuple[int, int]]] = {}
        stack = [(u, 0, 0)]
        while stack:
            v, d, prefix = stack.pop()
            if v == self.false:
                continue
            if v == self.true or v.level >= end:
                free = width - d
                lo = prefix << free
                hi = min(lo + (1 << free), len(cuts) - 1)  # classes lo..hi-1
                if lo < hi:
                    found.setdefault(v, []).append((cuts[lo], cuts[hi] - 1))
                continue
            if v.level == self.first[i] + d:
                low, high = v.low, v.high
                if v.negated:
                    low, high = ~low, ~high
            else:
                low = high = v
            stack.append((high, d + 1, prefix << 1 | 1))
            stack.append((low, d + 1, prefix << 1))
        parts = [(v, norm(pairs)) for v, pairs in found.items()]
        return sorted(parts, key=lambda p: p[1][0][0])

    # -- first match -------------------------------------------------------------------------

    def first_match(self, rules: Sequence[Function], region: Function,
                    wanted: Sequence[bool] | None = None, single: Sequence[bool] = ()
                    ) -> tuple[list[Function], Function]:
        """What each rule decides of the region (first match wins; false for the rules
        `wanted` does not mark), and what none decides.

        A rule `single` marks tests one field only (a blocklist entry): it narrows a bound,
        a product of per-field sets kept apart from the rest, instead of being cut out of
        the rest, which would cross every node above that field (saddr is low in ORDER)."""
        decided = []
        rest, bound = region, self.true
        for k, rule in enumerate(rules):
            if rest == self.false:
                decided += [self.false] * (len(rules) - k)
                break
            if k < len(single) and single[k]:
                want = wanted is None or wanted[k]
                decided.append(rest & (rule & bound) if want else self.false)
                bound = bound & ~rule
                continue
            part = rest & (rule & bound)
            if part == self.false:
                decided.append(part)
                continue
            decided.append(part if wanted is None or wanted[k] else self.false)
            rest = rest & ~rule
        rest = rest & bound
        return decided, rest


@dataclass(frozen=True)
class Region:
    """A set of packets of one tag, as a BDD of its manager."""

    tag: object
    packets: Packets
    function: Function

    def boxes(self) -> list[Box]:
        return self.packets.boxes(self.function, self.tag)

    def within(self, rule: RuleBox) -> Function:
        """The part of the region a rule box matches (its range ends must be among those the
        manager was made with: see `walk`'s `extra`)."""
        return self.function & self.packets.rule(rule)

    def union(self, parts: Iterable[Function]) -> Function:
        return self.packets.union(parts)

    def project(self, u: Function, i: int) -> Ranges:
        """The values field i takes in u (a part of this region)."""
        return self.packets.project(u, i)


def walk(rules: Sequence[RuleBox], region: list[Box], wanted: Sequence[bool] | None = None,
         extra: Sequence[RuleBox] = ()) -> tuple[list[list[Region]], list[Region]]:
    """First match on BDDs: what each rule decides of the region, and what none decides. The
    region is cut into pieces of one tag, protocol and family, each walked on its own with only
    the rules that can meet it (a port rule then crosses only the addresses the rules of its
    own protocol and family name). `extra`: rule boxes the caller will ask the regions about
    (`Region.within`)."""
    decided: list[list[Region]] = [[] for _ in rules]
    remaining: list[Region] = []
    for tag, boxes in pieces(region):
        spans = [norm(p for box in boxes for p in box[i]) for i in range(TAG)]
        live = [k for k, rule in enumerate(rules) if meets(rule, spans)]
        p = Packets.of([*(rules[k] for k in live), *extra], boxes)
        want = None if wanted is None else [wanted[k] for k in live]
        parts, rest = p.first_match([p.rule(rules[k]) for k in live], p.region(boxes), want,
                                    [alone(rules[k], spans) for k in live])
        for k, part in zip(live, parts, strict=True):
            if part != p.false:
                decided[k].append(Region(tag, p, part))
        if rest != p.false:
            remaining.append(Region(tag, p, rest))
    return decided, remaining


def united(regions: Iterable[Region]) -> list[Region]:
    """The regions of one piece (manager and tag) as one: fewer, larger sets to project
    (united two by two: `Packets.union`)."""
    groups: dict[tuple[int, int], list[Region]] = {}
    for r in regions:
        groups.setdefault((id(r.packets), id(r.tag)), []).append(r)
    return [Region(rs[0].tag, rs[0].packets, rs[0].packets.union(r.function for r in rs))
            for rs in groups.values()]


def first_match(rules: Sequence[RuleBox], region: list[Box],
                wanted: Sequence[bool] | None = None) -> tuple[list[list[Box]], list[Box]]:
    """space.first_match's answer, computed on BDDs (`walk`), written back as canonical boxes
    with each piece's tag."""
    decided, remaining = walk(rules, region, wanted)
    return ([[b for r in regions for b in r.boxes()] for regions in decided],
            [b for r in remaining for b in r.boxes()])


def meets(rule: RuleBox, spans: Sequence[Ranges]) -> bool:
    return all(overlaps(values, spans[i]) for i, values in rule)


def alone(rule: RuleBox, spans: Sequence[Ranges]) -> bool:
    """Does the rule test one field only, of the packets within spans?"""
    return sum(not covers(values, spans[i]) for i, values in rule) == 1


def pieces(region: list[Box]) -> list[tuple[object, list[Box]]]:
    """The boxes by tag (the same object, or an equal one when tags can be compared), protocol
    and address family, in the order each piece first appears."""
    groups: dict[object, tuple[object, list[Box]]] = {}
    for box in region:
        tag = box[TAG]
        try:
            key: object = ("eq", tag)
            hash(key)
        except TypeError:
            key = ("id", id(tag))
        key = (key, box[F["proto"]], box[F["daddr"]][0][0] >> 128, box[F["saddr"]][0][0] >> 128)
        groups.setdefault(key, (tag, []))[1].append(box)
    return list(groups.values())
