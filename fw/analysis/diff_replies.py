"""Replies (`established`, `related`) compared on BDDs without one region per opener box.

diff.py's reply region is built from the openers (the new packets both files let through) as
one tagged region per opener box: on rule sets that interleave rules narrow on different fields
the openers are tens of thousands of boxes (the worst shape of scripts/bench_exposure.py at
1,000 rules: 22,174), and the region as many times the domain's boxes. Here the openers stay
one BDD per piece of one protocol and family, and the replies are compared in the openers'
own variables: the reply domain and the reply chain's rules are mirrored (saddr/daddr,
sport/dport, iif/oif swapped), so a reply is the opener it answers, with the flags, ICMP type
and ct state of its own. A `related` error goes to an opener's (saddr, iif): their projection.

The chains are compared on that untagged region. Opener boxes are needed only where the
verdicts differ (the opener each difference answers gives its `after` packets): the openers
whose replies can meet the difference are picked by its spans, and the piece is compared again
over their replies only, exactly as diff.py did over all of them, so the answer is the same to
the byte (each opener's part of a difference is the same set whichever others are there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from fw.analysis import diff_bdd, space
from fw.analysis.bdd import ORDER, Function, Packets
from fw.analysis.diff_example import ANSWERS, SWAPPED, reversed_point
from fw.analysis.space import TAG, Box, RuleBox
from fw.core import ranges
from fw.core.fields import F
from fw.core.protocols import ICMP, ICMPV6

if TYPE_CHECKING:
    from fw.analysis.diff import Chain, Outcome

Found = list[tuple[Box, "Outcome", "Outcome"]]
Key = tuple  # a piece: (protocols, daddr family, saddr family), as diff_bdd.families groups
# fields an opener's replies do not take from it (their own domain says them)
NOT_SWAPPED = (F["ct_state"], F["tcp_flags"], F["icmp_type"])


def key(box: Box) -> Key:
    return (box[F["proto"]], box[F["daddr"]][0][0] >> 128, box[F["saddr"]][0][0] >> 128)


def grouped(boxes: list[Box]) -> dict[Key, list[Box]]:
    out: dict[Key, list[Box]] = {}
    for box in boxes:
        out.setdefault(key(box), []).append(box)
    return out


def mirrored(rule: RuleBox) -> RuleBox:
    """A rule box over the other direction's fields (flags, ICMP type and state stay: they
    are the reply's own)."""
    return tuple((SWAPPED.get(i, i), v) for i, v in rule)


def mirrored_box(box: Box) -> Box:
    return tuple(reversed_point(box))


def mirrored_chain(chain: Chain) -> Chain:
    return replace(chain, boxes=[mirrored(r) for r in chain.boxes])


@dataclass
class Piece:
    """One protocol and family, in a manager made for the openers and their replies. The
    replies are written mirrored (each swapped field in its partner's variables): renaming the
    openers into the replies' own order instead costs far more (the worst shape's IPv4 TCP
    openers, 9,171 nodes, become 406,927 with the addresses swapped, 28 s)."""

    p: Packets
    opened: Function  # the openers, ct state left out
    replies: list[Box]  # the established replies' domain, mirrored
    side: diff_bdd.Side | None = None  # the openers' chains walked over their domain

    def without(self, u: Function, fields: Sequence[int]) -> Function:
        return self.p.bdd.exist([v.var for i in fields for v in self.p.vars[i]], u)

    def answers(self) -> Function:
        """The replies the openers may get, mirrored (flags and ICMP types as their own
        domain has them; an ICMP query's reply has the reply type)."""
        p = self.p
        region = p.region(self.replies)
        if self.replies and self.replies[0][F["proto"]][0][0] in (ICMP, ICMPV6):
            out = p.false
            for q, r in ANSWERS:
                asked = self.opened & p.values(F["icmp_type"], ranges.point(q))
                if asked != p.false:
                    out = out | (self.without(asked, NOT_SWAPPED)
                                 & p.values(F["icmp_type"], ranges.point(r)))
            return region & out
        return region & self.without(self.opened, NOT_SWAPPED)


@dataclass
class Openers:
    """The connections both files let open whose replies come back through one chain."""

    opener: tuple[Chain, Chain]          # the chains the openers cross (A, B)
    reply: tuple[Chain, Chain]           # the chain the replies cross
    new: tuple[int, int]                 # each file's ct state value of the openers
    established: tuple[int, int]         # ... and of the replies
    domain: list[Box]                    # the openers' domain, in A's state
    replies: list[Box]                   # the established replies' domain, in A's state
    boxes: Callable[[], list[Box]]       # the openers as diff.py makes them (on demand)
    from_boxes: bool                     # NAT rules: the set is read from those boxes
    _pieces: dict[Key, Piece] | None = field(default=None, repr=False)
    _boxes: list[Box] | None = field(default=None, repr=False)
    _mirrored: tuple[Chain, Chain] | None = field(default=None, repr=False)

    def mirrored(self) -> tuple[Chain, Chain]:
        """The reply chains with their rules mirrored (see Piece)."""
        if self._mirrored is None:
            a, b = self.reply
            self._mirrored = (mirrored_chain(a), mirrored_chain(b))
        return self._mirrored

    def opener_boxes(self) -> list[Box]:
        if self._boxes is None:
            self._boxes = self.boxes()
        return self._boxes

    def pieces(self) -> dict[Key, Piece]:
        if self._pieces is None:
            opened = grouped(self.domain)
            replied = grouped([mirrored_box(b) for b in self.replies])
            found = grouped(self.opener_boxes()) if self.from_boxes else {}
            self._pieces = {k: self.piece(opened.get(k, []), replied.get(k, []),
                                          [b for f, bs in found.items() if within(f, k)
                                           for b in bs])
                            for k in {*opened, *replied}}
        return self._pieces

    def piece(self, opened: list[Box], replied: list[Box], given: list[Box]) -> Piece:
        rules = [*self.live(self.opener, opened, self.new),
                 *self.live(self.mirrored(), replied, self.established)]
        sets = [pair for rule in rules for pair in rule]
        sets += [(F["ct_state"], ranges.point(v)) for v in (*self.new, *self.established)]
        sets += [(F["icmp_type"], ranges.point(t)) for pair in ANSWERS for t in pair]
        sets += [(i, box[i]) for box in (*opened, *replied, *given) for i in range(TAG)]
        p = Packets(sets)
        piece = Piece(p, p.false, replied)
        if not opened:
            return piece
        if self.from_boxes:
            piece.opened = piece.without(p.region(given), [F["ct_state"]])
            return piece
        side = diff_bdd.Side(*self.opener, opened, self.new[1], (p, p.region(opened)))
        both = side.united(side.a, "accept") & side.united(side.b, "accept")
        piece.opened = piece.without(both, [F["ct_state"]])
        piece.side = side
        return piece

    def new_pairs(self) -> Found | None:
        """Where the openers' chains disagree on their new packets, from the walks that found
        the openers (`forward` is its replies' opener chain: its `new` packets need not be
        walked twice); None when the openers were read from boxes (no walk kept)."""
        if self.from_boxes:
            return None
        out: Found = []
        for piece in self.pieces().values():
            if piece.side is not None:
                out += piece.side.pairs(lambda x, y: x.verdict != y.verdict, True)
        return out

    @staticmethod
    def live(chains: tuple[Chain, Chain], boxes: list[Box], states: tuple[int, int]
             ) -> list[RuleBox]:
        """The rules of either chain that can meet the boxes, in either file's state."""
        spans = diff_bdd.spans_of(boxes)
        spans[F["ct_state"]] = ranges.norm((v, v) for v in states)
        return [c.boxes[k] for c in chains for k in diff_bdd.live(c, spans)]

    def sources(self, family: int) -> list[RuleBox]:
        """Where `related` errors of the family go: (daddr, oif) of each opener's
        (saddr, iif), as rule boxes."""
        out: set[RuleBox] = set()
        for k, piece in self.pieces().items():
            if k[1] != family or piece.opened == piece.p.false:
                continue
            keep = (F["saddr"], F["iif"])
            alone = piece.without(piece.opened, [i for i in ORDER if i not in keep])
            for box in piece.p.boxes(alone):
                out.add(((F["daddr"], box[F["saddr"]]), (F["oif"], box[F["iif"]])))
        return sorted(out)


def within(found: Key, piece: Key) -> bool:
    return found[1:] == piece[1:] and ranges.covers(piece[0], found[0])


def established(openers: Openers, test: Callable[[Box], RuleBox]) -> Found:
    """Where the two chains disagree on the replies (`test`: an opener's replies). The chains
    walk the mirrored replies with their rules mirrored too."""
    out: Found = []
    ra, rb = openers.mirrored()
    domain = grouped(openers.replies)
    for piece in openers.pieces().values():
        if not piece.replies or piece.opened == piece.p.false:
            continue
        p = piece.p
        side = diff_bdd.Side(ra, rb, piece.replies, openers.established[1],
                             (p, piece.answers()))
        differ = side.differ()
        if differ == p.false:
            continue
        back = piece.without(differ, NOT_SWAPPED)  # the openers' own fields already
        spans = {i: p.project(back, i) for i in ORDER if i not in NOT_SWAPPED}
        chosen = [o for o in openers.opener_boxes()
                  if all(ranges.overlaps(o[i], s) for i, s in spans.items())]
        replies = domain[key(piece.replies[0])]  # mirroring keeps protocol and family
        out += again(openers.reply, replies, chosen, test, openers.established[1])
    return out


def related(openers: Openers, domain: list[Box], b_state: int, test: Callable[[Box], RuleBox]
            ) -> Found:
    """Where the two chains disagree on ICMP errors sent back to the openers' sources (`domain`:
    the errors the chain may see, in A's state; `b_state`: B's)."""
    out: Found = []
    ra, rb = openers.reply
    for boxes in grouped(domain).values():
        towards = openers.sources(key(boxes[0])[1])
        if not towards:
            continue
        p = Packets.of([*ra.boxes, *rb.boxes, ((F["ct_state"], ranges.point(b_state)),),
                        *towards], boxes)
        sent = p.union(p.rule(rule) for rule in towards)
        side = diff_bdd.Side(ra, rb, boxes, b_state, (p, p.region(boxes) & sent))
        differ = side.differ()
        if differ == p.false:
            continue
        daddr, oif = p.project(differ, F["daddr"]), p.project(differ, F["oif"])
        chosen = [o for o in openers.opener_boxes()
                  if ranges.overlaps(o[F["saddr"]], daddr) and ranges.overlaps(o[F["iif"]], oif)]
        out += again(openers.reply, boxes, chosen, test, b_state)
    return out


def again(reply: tuple[Chain, Chain], domain: list[Box], chosen: list[Box],
          test: Callable[[Box], RuleBox], b_state: int) -> Found:
    """The piece compared as diff.py compares it, over the replies of the chosen openers."""
    region = []
    for o in chosen:
        rule = test(o)
        for d in domain:
            x = space.intersect(d, rule)
            if x is not None:
                region.append((*x[:TAG], o))
    return diff_bdd.pairs(*reply, region, b_state, lambda x, y: x.verdict != y.verdict, True)
