"""The exact unreachable-rule check: rules no packet reaches, because earlier rules together
take every packet they match (fw/dsl/shadow.py only finds one earlier rule covering another),
with the earlier rules that do it.

Each chain's packets (every interface a rule or the topology names, address, protocol, flag
and ICMP type, every ct state of a stateful file) walk the chain by first match on BDDs
(bdd.py), a piece of one protocol and family at a time; a rule with a verdict that decides
nothing can never match. Its covering rules are the earlier rules that decide some packet it
would match, thinned while the others still cover it. A rule whose own tests contradict each
other (`tcp dport 80 tcp dport 81`) covers itself: it is named with no covering rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fw.analysis import space
from fw.analysis.bdd import Function, Packets, alone, meets, pieces
from fw.analysis.diff import NONE, STATES, Where, l4_parts, state_value
from fw.analysis.exposure import addr_domain, rule_box
from fw.analysis.space import TAG, RuleBox
from fw.core import ranges
from fw.core.protocols import ICMPV6, UNTRACKED_ICMPV6
from fw.core.vocab import CtState
from fw.engine.routing import Routing, default_routing
from fw.model import CHAINS, Rule, RuleSet

THIN_AT_MOST = 16  # covering sets larger than this are named as the walk found them


@dataclass(frozen=True)
class Unreachable:
    """A rule no packet reaches, and earlier rules that take every packet it would."""

    rule: Rule
    covering: tuple[Rule, ...]


def universe(chain: str, ruleset: RuleSet, where: Where) -> list[space.Box]:
    """Every packet the chain can meet, whatever the topology: any interface a rule names,
    any address, protocol and state."""
    every = ranges.norm((i, i) for i in where.ifaces.values())
    iif = NONE if chain == "output" else every
    oif = NONE if chain == "input" else every
    states = STATES if ruleset.stateful else (None,)
    boxes = [space.make_box(iif=iif, oif=oif, saddr=addr_domain(family),
                            daddr=addr_domain(family),
                            ct_state=ranges.point(state_value(ruleset, state)), **l4)
             for state in states for family in (4, 6) for l4 in l4_parts(None, family)]
    # neighbour discovery and MLD: judged by the chains too, untracked (l4_parts leaves them out)
    nd = ranges.norm((ICMPV6 << 8 | t,) * 2 for t in UNTRACKED_ICMPV6)
    boxes.append(space.make_box(iif=iif, oif=oif, saddr=addr_domain(6), daddr=addr_domain(6),
                                ct_state=ranges.point(state_value(ruleset, CtState.UNTRACKED)),
                                proto=ranges.point(ICMPV6), sport=NONE, dport=NONE,
                                tcp_flags=NONE, icmp_type=nd))
    return boxes


def unreachable(ruleset: RuleSet, routing: Routing | None = None) -> list[Rule]:
    """The rules with a verdict that no packet reaches, in file order."""
    return [u.rule for u in find(ruleset, routing, named=lambda rule: False)]


def find(ruleset: RuleSet, routing: Routing | None = None,
         named: Callable[[Rule], bool] = lambda rule: True) -> list[Unreachable]:
    """The rules with a verdict that no packet reaches, in file order, with their covering
    rules for those `named` picks (the others get none: finding them costs a scan of the
    earlier rules, and `check` names only the rules the shadow check did not)."""
    where = Where.of(routing or default_routing(), (ruleset,))
    out = []
    for chain in CHAINS:
        rules = [r for r in ruleset.chains[chain] if r.verdict is not None]
        boxes = [rule_box(r.matches, where.ifaces) for r in rules]
        out += [Unreachable(r, ()) for r, b in zip(rules, boxes, strict=True) if b is None]
        live = [(r, b) for r, b in zip(rules, boxes, strict=True) if b is not None]
        out += in_chain(live, universe(chain, ruleset, where), named)
    return sorted(out, key=lambda u: order(u.rule))


def order(rule: Rule) -> tuple[str, int]:
    return (rule.span.file, rule.span.line) if rule.span else ("", rule.index)


def in_chain(live: list[tuple[Rule, RuleBox]], region: list[space.Box],
             named: Callable[[Rule], bool]) -> list[Unreachable]:
    """The rules of one chain (with their boxes) no packet of the region reaches."""
    walks = [Walk.of([b for _, b in live], boxes) for _, boxes in pieces(region)]
    out = []
    for k, (rule, _) in enumerate(live):
        if any(k in w.decided for w in walks):
            continue
        if not named(rule):
            out.append(Unreachable(rule, ()))
            continue
        found = sorted({j for w in walks for j in w.covering(k)})
        thin = thinned(found, k, walks) if len(found) <= THIN_AT_MOST else found
        out.append(Unreachable(rule, tuple(live[j][0] for j in thin)))
    return out


@dataclass
class Walk:
    """One piece of the region walked through the rules that can meet it."""

    packets: Packets
    region: Function
    rules: dict[int, Function]  # rule number in the chain -> its packets (rules meeting it)
    decided: dict[int, Function]  # rule number -> what it decides, when that is something

    @classmethod
    def of(cls, rules: list[RuleBox], boxes: list[space.Box]) -> Walk:
        spans = [ranges.norm(p for box in boxes for p in box[i]) for i in range(TAG)]
        live = [k for k, rule in enumerate(rules) if meets(rule, spans)]
        p = Packets.of([rules[k] for k in live], boxes)
        region = p.region(boxes)
        functions = {k: p.rule(rules[k]) for k in live}
        parts, _ = p.first_match(list(functions.values()), region, None,
                                 [alone(rules[k], spans) for k in live])
        decided = {k: part for k, part in zip(live, parts, strict=True) if part != p.false}
        return cls(p, region, functions, decided)

    def wanted(self, k: int) -> Function:
        """The packets of this piece rule k matches."""
        return self.region & self.rules[k] if k in self.rules else self.packets.false

    def covering(self, k: int) -> list[int]:
        """The earlier rules that take the packets of this piece rule k matches."""
        false = self.packets.false
        left = self.wanted(k)
        out = []
        for j, part in self.decided.items():
            if left == false or j > k:
                break
            if part & left != false:
                out.append(j)
                left = left & ~part
        return out


def thinned(found: list[int], k: int, walks: list[Walk]) -> list[int]:
    """A smaller covering set: each rule dropped (the later first) while the others still
    cover every packet rule k matches."""
    keep = list(found)
    for j in reversed(found):
        rest = [i for i in keep if i != j]
        if rest and all(covered(w, k, rest) for w in walks):
            keep = rest
    return keep


def covered(walk: Walk, k: int, by: list[int]) -> bool:
    p = walk.packets
    left = walk.wanted(k)
    for j in by:
        if left == p.false:
            break
        left = left & ~walk.rules.get(j, p.false)
    return left == p.false
