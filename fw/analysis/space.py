"""Sets of packets as unions of boxes, and a chain's first-match walk over them.

A *box* is a product of per-field integer sets, in the encoding of fw/core/fields.py (a port
is `proto << 16 | port`, an address `family << 128 | addr`, a missing field is -1), so a rule's
matches become a box by the very function the engine uses (`accepted_values`) and the two can
never disagree on what a match means. A rule is a conjunction of per-field tests, so one rule is
one box; first-match semantics is a walk that keeps the region not yet decided as disjoint boxes
and subtracts each rule's box from it (a box difference splits into at most one box per field).

Field sets here are the bare tuples of fw/core/ranges.py rather than IntervalSets: the walk does
millions of intersections, most of them a small set against a set with thousands of holes, which
a bisect answers without touching the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fw.core.fields import CT_STATUS_MAX, FIELDS, MISSING
from fw.core.ranges import Ranges, count, covers, inter, norm, overlaps, sub
from fw.errors import FwlabError

TAG = len(FIELDS)  # a box is FIELDS' sets followed by one opaque tag, carried along unchanged

Box = tuple  # (Ranges * len(FIELDS)) + (tag,)
RuleBox = tuple[tuple[int, Ranges], ...]  # ((field index, accepted values), ...): tested fields


# -- boxes -----------------------------------------------------------------------------------

def make_box(tag: object = None, **fields: Ranges) -> Box:
    """A box of every field; `ct_status` (the NAT bits, which most analyses do not split on)
    spans every value when not given."""
    fields.setdefault("ct_status", ((MISSING, CT_STATUS_MAX),))
    missing = [name for name in FIELDS if name not in fields]
    if missing:
        raise ValueError(f"a box needs every field; missing {missing}")
    return (*(fields[name] for name in FIELDS), tag)


def intersect(box: Box, rule: RuleBox) -> Box | None:
    """box ∩ rule, or None when they do not meet."""
    out = None
    for i, values in rule:
        x = inter(box[i], values)
        if not x:
            return None
        if x != box[i]:
            if out is None:
                out = list(box)
            out[i] = x
    return box if out is None else tuple(out)


def difference(box: Box, rule: RuleBox) -> list[Box]:
    """box − rule as disjoint boxes: for each tested field in turn, the part of the box outside
    the rule on that field and inside it on every field before."""
    pieces: list[Box] = []
    current = list(box)
    for i, values in rule:
        outside = sub(current[i], values)
        if outside:
            piece = current.copy()
            piece[i] = outside
            pieces.append(tuple(piece))
        current[i] = inter(current[i], values)
        if not current[i]:
            break
    return pieces


# -- first match -----------------------------------------------------------------------------

MAX_BOXES = 2_000_000  # beyond this many undecided boxes the walk gives up (see docs/exposure.md)


class TooFragmented(FwlabError):
    """The undecided region split into more boxes than the analysis keeps in memory."""


BUCKET_SHIFT = 8  # the key field's values are bucketed by value >> 8 (256 ports, a /24)
NARROW_BUCKETS = 4  # a box in at most this many buckets is indexed; wider ones are always tried
RULE_BUCKETS = 64  # a rule spanning more buckets than this tries every box


def first_match(rules: Sequence[RuleBox], region: list[Box],
                wanted: Sequence[bool] | None = None) -> tuple[list[list[Box]], list[Box]]:
    """Which part of the region each rule decides (first match wins), and what none decides.

    Returns (decided, remaining): decided[k] holds the boxes rule k decides, collected only for
    the rules `wanted` marks (all by default: a drop rule's share is rarely asked for, and not
    collecting it is what keeps a blocklist cheap).

    The undecided region is a set of boxes intersected with one global constraint per field:
    a rule that, once the tests every box passes are dropped, tests a single field (a blocklist
    entry, `ct state invalid drop`) narrows that constraint instead of cutting every box. The
    boxes are indexed on the field rules most often test narrowly (bucketed by value), so a rule
    about one host or port only meets the boxes near it.
    """
    wanted = [True] * len(rules) if wanted is None else list(wanted)
    decided: list[list[Box]] = [[] for _ in rules]
    if not region:
        return decided, []
    spans = [norm(p for box in region for p in box[i]) for i in range(TAG)]
    stripped = [_strip(rule, spans) for rule in rules]
    key = _key_field(stripped)
    stripped = [None if r is None else _order(r, key, spans) for r in stripped]
    store = _Store(region, key)
    bound: dict[int, Ranges] = {}  # the global constraint: field -> values still undecided
    for k, rule in enumerate(stripped):
        if rule is None:
            continue
        if not rule:  # it matches everything left
            if wanted[k]:
                decided[k] = _bounded(store.boxes(), bound)
            store.clear()
            break
        if len(rule) == 1:
            if wanted[k]:
                decided[k] = _bounded(
                    (x for _, b in store.candidates(rule) if (x := intersect(b, rule)) is not None),
                    bound)
            i, values = rule[0]
            bound[i] = sub(bound.get(i, spans[i]), values)
            if not bound[i]:
                store.clear()
                break
            continue
        for n, box in store.candidates(rule):
            x = intersect(box, rule)
            if x is None:
                continue
            if wanted[k]:
                decided[k].extend(_bounded((x,), bound))
            store.remove(n)
            if x is not box:
                store.add_all(difference(box, rule))
        if len(store.all) > MAX_BOXES:
            raise TooFragmented(
                f"rule {k + 1} leaves the undecided packets in {len(store.all):,} pieces: this "
                "rule set mixes rules narrow on different fields too much for the exact analysis")
    return decided, _bounded(store.boxes(), bound)


def _strip(rule: RuleBox, spans: list[Ranges]) -> RuleBox | None:
    """The rule without the tests every box of the region passes; None if it meets none."""
    out = []
    for i, values in rule:
        if covers(values, spans[i]):
            continue
        if not overlaps(values, spans[i]):
            return None
        out.append((i, values))
    return tuple(out)


def _order(rule: RuleBox, key: int | None, spans: list[Ranges]) -> RuleBox:
    """The order a box difference splits in: the index's field first when the rule tests it
    narrowly, then the most selective tests. The piece outside the first test is the big one
    and stays a single box; the pieces after it are narrow in that field, so they stay few
    (a `!=` test cut first would leave a narrow piece every later rule meets)."""
    def rank(item: tuple[int, Ranges]) -> tuple[int, float]:
        i, values = item
        if i == key and _buckets(values) < NARROW_BUCKETS:
            return (0, 0.0)
        return (1, count(values) / count(spans[i]))
    return tuple(sorted(rule, key=rank))


def _buckets(values: Ranges) -> int:
    return (values[-1][1] >> BUCKET_SHIFT) - (values[0][0] >> BUCKET_SHIFT)


def _bounded(boxes: Iterable[Box], bound: dict[int, Ranges]) -> list[Box]:
    limit = tuple(bound.items())
    if not limit:
        return list(boxes)
    return [x for b in boxes if (x := intersect(b, limit)) is not None]


def _key_field(rules: list[RuleBox | None]) -> int | None:
    """The field most rules test with a narrow set (few buckets): the one to index on."""
    counts: dict[int, int] = {}
    for rule in rules:
        if not rule or len(rule) < 2:
            continue
        for i, values in rule:
            if (values[-1][1] >> BUCKET_SHIFT) - (values[0][0] >> BUCKET_SHIFT) < RULE_BUCKETS:
                counts[i] = counts.get(i, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else None


class _Store:
    """The undecided boxes, indexed on one field by buckets of values."""

    def __init__(self, region: list[Box], key: int | None) -> None:
        self.key = key
        self.all: dict[int, Box] = {}
        self.buckets: dict[int, set[int]] = {}
        self.wide: set[int] = set()
        self.where: dict[int, tuple[int, ...]] = {}
        self.next_id = 0
        self.add_all(region)

    def boxes(self) -> list[Box]:
        return list(self.all.values())

    def clear(self) -> None:
        self.all.clear()
        self.buckets.clear()
        self.wide.clear()
        self.where.clear()

    def add_all(self, boxes: Iterable[Box]) -> None:
        for box in boxes:
            n = self.next_id
            self.next_id += 1
            self.all[n] = box
            if self.key is None:
                continue
            values = box[self.key]
            first, last = values[0][0] >> BUCKET_SHIFT, values[-1][1] >> BUCKET_SHIFT
            if last - first >= NARROW_BUCKETS:
                self.wide.add(n)
                continue
            keys = tuple(range(first, last + 1))
            self.where[n] = keys
            for b in keys:
                self.buckets.setdefault(b, set()).add(n)

    def remove(self, n: int) -> None:
        del self.all[n]
        keys = self.where.pop(n, None)
        if keys is None:
            self.wide.discard(n)
        else:
            for b in keys:
                self.buckets[b].discard(n)

    def candidates(self, rule: RuleBox) -> list[tuple[int, Box]]:
        """(id, box) of the boxes that may meet the rule (a snapshot: safe to modify after)."""
        values = next((v for i, v in rule if i == self.key), None)
        if values is None or self.key is None:
            ids = list(self.all)
        else:
            first, last = values[0][0] >> BUCKET_SHIFT, values[-1][1] >> BUCKET_SHIFT
            if last - first >= RULE_BUCKETS:
                ids = list(self.all)
            else:
                found = set(self.wide)
                for lo, hi in values:
                    for b in range(lo >> BUCKET_SHIFT, (hi >> BUCKET_SHIFT) + 1):
                        found.update(self.buckets.get(b, ()))
                ids = list(found)
        return [(n, self.all[n]) for n in ids]
