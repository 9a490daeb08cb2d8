"""The exact unreachable-rule check: rules no packet reaches, because earlier rules together
take every packet they match (fw/dsl/shadow.py only finds one earlier rule covering another).

Each chain's packets (every interface a rule or the topology names, address, protocol, flag
and ICMP type, every ct state of a stateful file), walk the chain by first match
(space.py); a rule with a verdict that decides nothing can never match. A rule whose own tests
contradict each other (`tcp dport 80 tcp dport 81`) is one of them."""

from __future__ import annotations

from fw.analysis import space
from fw.analysis.diff import NONE, STATES, Where, l4_parts, state_value
from fw.analysis.exposure import addr_domain, rule_box
from fw.core import ranges
from fw.core.protocols import ICMPV6, UNTRACKED_ICMPV6
from fw.core.vocab import CtState
from fw.engine.routing import Routing, default_routing
from fw.model import CHAINS, Rule, RuleSet


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
    where = Where.of(routing or default_routing(), (ruleset,))
    out = []
    for chain in CHAINS:
        rules = [r for r in ruleset.chains[chain] if r.verdict is not None]
        boxes = [rule_box(r.matches, where.ifaces) for r in rules]
        out += [r for r, b in zip(rules, boxes, strict=True) if b is None]
        live = [(r, b) for r, b in zip(rules, boxes, strict=True) if b is not None]
        decided, _ = space.first_match([b for _, b in live], universe(chain, ruleset, where))
        out += [r for (r, _), part in zip(live, decided, strict=True) if not part]
    return sorted(out, key=lambda r: (r.span.file, r.span.line) if r.span else ("", r.index))
