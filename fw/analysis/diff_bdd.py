"""Two filter chains over one region on BDDs (bdd.py): where their outcomes differ, or agree.

diff.py's box walk splits the region by A's rules, then every piece again by B's: on rule sets
that interleave rules narrow on different fields that is quadratic in pieces. Here both files'
first-match walks run once per piece of one protocol and family over one manager, the set where
the verdicts differ is computed first (`OR_v A_v & ~B_v`), and (A rule, B rule) pairs are only
looked for inside it. Tags (the opener a reply answers) are put back at the end: each box found
is cut by the part of the region each tag holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from fw.analysis.bdd import Function, Packets, alone
from fw.analysis.space import TAG, Box
from fw.core import ranges
from fw.core.fields import F

if TYPE_CHECKING:
    from fw.analysis.diff import Chain, Outcome

Found = list[tuple[Box, "Outcome", "Outcome"]]


def pairs(a: Chain, b: Chain, region: list[Box], b_state: int | None,
          keep: Callable[[Outcome, Outcome], bool], differing: bool) -> Found:
    """The region's boxes with A's and B's outcome, for the outcome pairs `keep` picks (in B's
    ct state when `b_state` is given, as diff.both). `differing`: only where the verdicts
    differ (a shortcut: the set is computed before any pair)."""
    out: Found = []
    for boxes in families(region):
        out += Side(a, b, boxes, b_state).pairs(keep, differing)
    return out


def agreed(a: Chain, b: Chain, region: list[Box], verdict: str, b_state: int | None
           ) -> list[Box]:
    """The part of the region both chains give `verdict` (in B's ct state, as diff.agreed)."""
    out: list[Box] = []
    for boxes in families(region):
        side = Side(a, b, boxes, b_state)
        both = side.united(side.a, verdict) & side.united(side.b, verdict)
        if both != side.p.false:
            out += side.tagged(both)
    return out


def families(region: list[Box]) -> list[list[Box]]:
    groups: dict[tuple, list[Box]] = {}
    for box in region:
        key = (box[F["proto"]], box[F["daddr"]][0][0] >> 128, box[F["saddr"]][0][0] >> 128)
        groups.setdefault(key, []).append(box)
    return list(groups.values())


class Side:
    """One piece walked by both chains."""

    def __init__(self, a: Chain, b: Chain, boxes: list[Box], b_state: int | None,
                 built: tuple[Packets, Function] | None = None) -> None:
        """`built`: a manager and the region within `boxes` to walk, when the caller made them
        (diff_replies.py: the replies of the openers, in a manager made for both)."""
        spans = spans_of(boxes)
        b_spans = list(spans)
        state = []
        if b_state is not None:
            state = [((F["ct_state"], ranges.point(b_state)),)]
            b_spans[F["ct_state"]] = ranges.point(b_state)
        live_a, live_b = live(a, spans), live(b, b_spans)
        self.boxes = boxes
        if built is None:
            # only the rules that can meet the piece cut its values into classes: fewer
            # classes, smaller sets (an IPv6 rule's hosts are no cut of an IPv4 piece)
            rules = [*(a.boxes[k] for k in live_a), *(b.boxes[k] for k in live_b)]
            p = Packets.of([*rules, *state], boxes)
            region = p.region(boxes)
        else:
            p, region = built
        self.p = p
        # a common first part of the chains (a file against an edited copy of itself) is
        # walked once: it decides alike in both (same tests, same verdicts, same ct state)
        same_state = b_state is None or spans[F["ct_state"]] == ranges.point(b_state)
        k = common_prefix(a, b) if same_state else 0
        shared = [i for i in live_a if i < k]
        self.a, self.b = [], []
        if shared:
            parts, region = p.first_match([p.rule(a.boxes[i]) for i in shared], region, None,
                                          [alone(a.boxes[i], spans) for i in shared])
            for i, f in zip(shared, parts, strict=True):
                if f != p.false:
                    self.a.append((a.outcomes[i], f))
                    self.b.append((b.outcomes[i], f))
        # the parts after the common ones: only there can the verdicts differ
        self.own_a = walk(p, a, region, spans, [i for i in live_a if i >= k])
        if b_state is not None and not same_state:
            ct = [v.var for v in p.vars[F["ct_state"]]]
            to = p.values(F["ct_state"], ranges.point(b_state))
            self.own_a = [(o, p.bdd.exist(ct, f) & to) for o, f in self.own_a]
            region = p.bdd.exist(ct, region) & to
        self.own_b = walk(p, b, region, b_spans, [i for i in live_b if i >= k])
        self.a += self.own_a
        self.b += self.own_b
        self.b_state = b_state

    def pairs(self, keep: Callable[[Outcome, Outcome], bool], differing: bool) -> Found:
        p, false = self.p, self.p.false
        where = self.differ() if differing else p.true
        a, b = (self.own_a, self.own_b) if differing else (self.a, self.b)
        out: Found = []
        for oa, fa in a:
            x = fa & where
            if x == false:
                continue
            for ob, fb in b:
                if keep(oa, ob):
                    y = x & fb
                    if y != false:
                        out += [(box, oa, ob) for box in self.tagged(y)]
        return out

    def united(self, parts: list[tuple[Outcome, Function]], verdict: str) -> Function:
        return self.p.union(f for o, f in parts if o.verdict == verdict)

    def differ(self) -> Function:
        """Where the verdicts differ (only after the common first rules)."""
        verdicts = {o.verdict for o, _ in self.own_a}
        out = []
        for verdict in verdicts:
            out.append(self.united(self.own_a, verdict) & ~self.united(self.own_b, verdict))
        return self.p.union(out)

    def tagged(self, u: Function) -> list[Box]:
        """The set as boxes, each cut by the part of the region each tag holds."""
        tags: dict[int, tuple[object, list[Box]]] = {}
        for box in self.boxes:
            tags.setdefault(id(box[TAG]), (box[TAG], []))[1].append(box)
        if len(tags) == 1:
            return self.p.boxes(u, self.boxes[0][TAG])
        out = []
        for tag, boxes in tags.values():
            own = self.p.region(self.moved(boxes))
            part = u & own
            if part != self.p.false:
                out += self.p.boxes(part, tag)
        return out

    def moved(self, boxes: list[Box]) -> list[Box]:
        if self.b_state is None:
            return boxes
        i = F["ct_state"]
        return [(*b[:i], ranges.point(self.b_state), *b[i + 1:]) for b in boxes]


def common_prefix(a: Chain, b: Chain) -> int:
    """How many first rules the chains share (the same tests and verdicts)."""
    k = 0
    for ra, rb, oa, ob in zip(a.boxes, b.boxes, a.outcomes, b.outcomes, strict=False):
        if ra != rb or oa.verdict != ob.verdict:
            break
        k += 1
    return k


def spans_of(boxes: Sequence[Box]) -> list[ranges.Ranges]:
    return [ranges.norm(p for box in boxes for p in box[i]) for i in range(TAG)]


def live(chain: Chain, spans: Sequence[ranges.Ranges]) -> list[int]:
    """The chain's rules that can meet packets within spans (bdd.meets, each distinct test
    asked once: rules repeat their protocols and interfaces, and a diff asks this of every
    rule of four chains for every piece)."""
    asked: dict[tuple[int, ranges.Ranges], bool] = {}
    out = []
    for k, rule in enumerate(chain.boxes):
        for test in rule:
            hit = asked.get(test)
            if hit is None:
                hit = asked[test] = ranges.overlaps(test[1], spans[test[0]])
            if not hit:
                break
        else:
            out.append(k)
    return out


def walk(p: Packets, chain: Chain, region: Function, spans: Sequence[ranges.Ranges],
         rules: list[int]) -> list[tuple[Outcome, Function]]:
    """(outcome, the packets it gets) for each rule that decides some, then the default
    (`rules`: the live ones)."""
    parts, rest = p.first_match([p.rule(chain.boxes[k]) for k in rules], region, None,
                                [alone(chain.boxes[k], spans) for k in rules])
    out = [(chain.outcomes[k], f) for k, f in zip(rules, parts, strict=True) if f != p.false]
    if rest != p.false:
        out.append((chain.default, rest))
    return out
