"""Diff: the exact set of packets two rule sets treat differently, as boxes (space.py).

For each filter chain and, when either file is stateful, each connection state, the packets a
chain can meet in that state are a few boxes (the *domain*); A's first-match walk splits them by
A's deciding rule, B's walk splits each piece again, and a piece whose verdicts differ is a
difference. Nothing is enumerated, so the answer is exact for everything the language says:

- **new** and **invalid** are the packets of no connection, with the state the engine gives
  them (exposure.py's test: a TCP SYN without ACK/RST/FIN, UDP, ICMP echo-request and other
  protocols are `new`; any other TCP segment or ICMP type is `invalid`);
- **established** are replies: the packet whose reversal (the *opener*) both files let open the
  connection (a `new` packet both accept, in `forward` for `forward`, in `output` for `input`,
  in `input` for `output`). A difference that needs state carries its opener as `after`;
- **related** are ICMP errors sent back to the opener's source;
- a stateless file sees the same packets with no state (across modes this compares what each
  lets through for unsolicited packets and for replies of connections the inside opened).

NAT44 is compared as two more chains: `dnat` (the translation a new IPv4 packet gets before
the filter, NAT loopback included) and `snat` (after it, per outgoing interface). A stateless
file translates nothing.

The domain follows the topology: a forwarded packet's `oif` is the route to its destination,
`input` holds the firewall's own addresses and multicast. `iif` is left free (spoofed sources are
exactly what anti-spoofing rules are about); examples prefer a source routed through `iif`, so
that `fwlab explain` places them as the region says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from fw.analysis import diff_bdd, diff_replies, space
from fw.analysis.diff_example import (
    ANSWERS,
    SWAPS,
    Points,
    first_of,
    packet_text,
    reply_sequence,
    reversed_point,
    reversed_rule,
    value,
)
from fw.analysis.exposure import NEW_TCP_FLAGS, addr_domain, not_forwarded, routed_sets, rule_box
from fw.analysis.space import TAG, Box, RuleBox
from fw.core import ranges
from fw.core.fields import CT_STATE_ID, MISSING, F, interface_ids
from fw.core.protocols import (
    ACK,
    ICMP,
    ICMP_OF_FAMILY,
    ICMPV6,
    LINK_CONTROL_ICMPV6,
    QUERY_REPLY,
    SYN,
    TCP,
    UDP,
)
from fw.core.ranges import Ranges
from fw.core.vocab import CtState
from fw.engine.routing import Routing
from fw.model import NatRule, Rule, RuleSet

NONE = ranges.point(MISSING)
ECHO_REPLY = {4: 0, 6: 129}
ICMP_ERRORS = {4: (3, 4, 5, 11, 12), 6: (1, 2, 3, 4)}
V6_HEADERS = (0, 43, 44, 50, 51, 59, 60)  # extension headers: never an upper protocol
# the segments a reply can be in `established`: the SYN/ACK answering the opener, and any
# segment with ACK set and SYN clear once the handshake is done
ESTABLISHED_FLAGS = ranges.norm([(SYN | ACK,) * 2,
                                 *((f, f) for f in range(256) if f & ACK and not f & SYN)])
ALL_FLAGS = ((0, 255),)
STATES = (CtState.NEW, CtState.INVALID, CtState.ESTABLISHED, CtState.RELATED)
OPENER_CHAIN = {"forward": "forward", "input": "output", "output": "input"}


# -- the two sides ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """What one file does to a region: a verdict (or a translation) and the rule deciding it."""

    verdict: str
    rule: Rule | NatRule | None

    def ref(self) -> str:
        span = self.rule.span if self.rule is not None else None
        if span is None:
            return "policy" if self.rule is None else f"rule {self.rule.index + 1}"
        return f"{span.file}:{span.line}"


@dataclass(frozen=True)
class Difference:
    """One box of packets that the two files treat differently."""

    chain: str
    ct_state: str | None
    box: Box
    a: Outcome
    b: Outcome
    example: str
    after: tuple[str, ...] = ()


@dataclass
class Diff:
    a: RuleSet
    b: RuleSet
    ifaces: dict[str, int]
    differences: list[Difference] = field(default_factory=list)

    @property
    def equivalent(self) -> bool:
        return not self.differences

    def ports(self, proto: int) -> Ranges:
        """The destination ports of `proto` some difference holds (decoded)."""
        whole = ((proto << 16, proto << 16 | 0xFFFF),)
        held = [(lo & 0xFFFF, hi & 0xFFFF) for d in self.differences
                if ranges.contains(d.box[F["proto"]], proto)
                for lo, hi in ranges.inter(d.box[F["dport"]], whole)]
        return ranges.norm(held)


# -- domains ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Where:
    """The topology as the domains need it: interface ids, routed sets, own addresses."""

    routing: Routing
    ifaces: dict[str, int]
    routed: dict[str, Ranges]
    local: Ranges  # own addresses and multicast: what `input` gets

    @classmethod
    def of(cls, routing: Routing, rulesets: Sequence[RuleSet]) -> Where:
        rules = [r for rs in rulesets for r in (*rs.rules(), *rs.nat)]
        ifaces = interface_ids(rules, routing.interfaces)  # type: ignore[arg-type]
        return cls(routing, ifaces, routed_sets(routing), not_forwarded(routing))

    def ids(self, names: Sequence[str]) -> Ranges:
        return ranges.norm((self.ifaces[n], self.ifaces[n]) for n in names)


def places(chain: str, where: Where, family: int) -> list[dict[str, Ranges]]:
    """(iif, oif, daddr) a packet of the family can have in the chain, as the engine places it."""
    every = where.ids(where.routing.interfaces)
    whole = addr_domain(family)
    if chain == "input":
        local = ranges.inter(where.local, whole)
        return [dict(iif=every, oif=NONE, daddr=local)] if local else []
    out = []
    for name, addrs in where.routed.items():
        daddr = ranges.inter(addrs, whole)
        if chain == "forward":
            daddr = ranges.sub(daddr, where.local)
        if daddr:
            iif = every if chain == "forward" else NONE
            out.append(dict(iif=iif, oif=where.ids([name]), daddr=daddr))
    return out


def l4_parts(state: str | None, family: int) -> list[dict[str, Ranges]]:
    """Protocol-dependent fields of the packets a state holds (None: stateless, every packet)."""
    icmp = ICMP_OF_FAMILY[family]
    types: Ranges = ((icmp << 8, icmp << 8 | 255),)
    if family == 6:
        types = ranges.sub(types, ranges.norm((icmp << 8 | t,) * 2 for t in LINK_CONTROL_ICMPV6))
    echo = ranges.norm((icmp << 8 | t,) * 2 for t in QUERY_REPLY[family])  # queries that open
    flags = {None: ALL_FLAGS, CtState.NEW: NEW_TCP_FLAGS,
             CtState.INVALID: ranges.sub(ALL_FLAGS, NEW_TCP_FLAGS),
             CtState.ESTABLISHED: ESTABLISHED_FLAGS}
    icmp_types = {None: types, CtState.NEW: echo, CtState.INVALID: ranges.sub(types, echo),
                  CtState.ESTABLISHED: ranges.norm((icmp << 8 | t,) * 2
                                                   for t in QUERY_REPLY[family].values()),
                  CtState.RELATED: ranges.norm((icmp << 8 | t,) * 2 for t in ICMP_ERRORS[family])}
    out = []
    for proto in (TCP, UDP):
        if state == CtState.RELATED or (proto == UDP and state == CtState.INVALID):
            continue
        ports = ((proto << 16, proto << 16 | 0xFFFF),)
        out.append(dict(proto=ranges.point(proto), sport=ports, dport=ports,
                        tcp_flags=flags[state] if proto == TCP else NONE, icmp_type=NONE))
    out.append(dict(proto=ranges.point(icmp), sport=NONE, dport=NONE, tcp_flags=NONE,
                    icmp_type=icmp_types[state]))
    if state not in (CtState.INVALID, CtState.RELATED):
        skip = [TCP, UDP, ICMP, ICMPV6, *(V6_HEADERS if family == 6 else ())]
        other = ranges.sub(((0, 255),), ranges.norm((p, p) for p in skip))
        out.append(dict(proto=other, sport=NONE, dport=NONE, tcp_flags=NONE, icmp_type=NONE))
    return out


def domain(chain: str, state: str | None, where: Where) -> list[Box]:
    """Every packet the chain can meet in this state, as boxes (ct_state left MISSING: each
    side sets its own)."""
    boxes = []
    for family in (4, 6):
        for place in places(chain, where, family):
            for l4 in l4_parts(state, family):
                boxes.append(space.make_box(saddr=addr_domain(family), ct_state=NONE,
                                            **place, **l4))
    return boxes


def with_state(boxes: list[Box], value: int, tag: Callable[[Box], object] | None = None
               ) -> list[Box]:
    i = F["ct_state"]
    return [(*b[:i], ranges.point(value), *b[i + 1:TAG], tag(b) if tag else b[TAG])
            for b in boxes]


def state_value(ruleset: RuleSet, state: str | None) -> int:
    return CT_STATE_ID[state] if ruleset.stateful and state else MISSING


def reversed_box(box: Box) -> Box:
    """The box of the packets going the other way (addresses, ports, interfaces swapped)."""
    out = list(box)
    for x, y in SWAPS:
        out[F[x]], out[F[y]] = box[F[y]], box[F[x]]
    out[F["tcp_flags"]] = ALL_FLAGS if box[F["proto"]] == ranges.point(TCP) else NONE
    icmp = box[F["icmp_type"]]
    out[F["icmp_type"]] = NONE if icmp == NONE else answers(icmp)
    return tuple(out)


def answers(queries: Ranges) -> Ranges:
    """The ICMP types that answer these: an echo is answered by an echo reply only, a
    timestamp request by a timestamp reply (conntrack keys queries on their type, as Linux).
    Types that open nothing leave the whole family (loose: no state comes of them)."""
    proto = queries[0][0] >> 8
    found = [(r, r) for q, r in ANSWERS if ranges.contains(queries, q)]
    return ranges.norm(found) if found else ((proto << 8, proto << 8 | 0xFF),)


def asked(reply: int, queries: Ranges) -> int:
    """The opener's ICMP type for an example reply: the query it answers, when the opener
    may be that query."""
    if reply != MISSING:
        for q, r in ANSWERS:
            if r == reply and ranges.contains(queries, q):
                return q
    return value(queries)


# -- walking a chain -------------------------------------------------------------------------

@dataclass(frozen=True)
class Chain:
    """One file's chain as rule boxes, with what each rule's match means (its outcome)."""

    boxes: list[RuleBox]
    outcomes: list[Outcome]
    default: Outcome

    def split(self, region: list[Box]) -> list[tuple[Box, Outcome]]:
        """The region's boxes, each with the outcome this chain gives it (first match)."""
        decided, rest = space.first_match(self.boxes, region)
        out = [(b, o) for part, o in zip(decided, self.outcomes, strict=True) for b in part]
        return out + [(b, self.default) for b in rest]

    def at(self, values: list[int]) -> Outcome:
        """The outcome of one packet (encoded field values)."""
        for box, outcome in zip(self.boxes, self.outcomes, strict=True):
            if all(ranges.contains(held, values[i]) for i, held in box):
                return outcome
        return self.default


def filter_chain(ruleset: RuleSet, chain: str, ifaces: dict[str, int]) -> Chain:
    rules = [r for r in ruleset.chains[chain] if r.verdict is not None]
    pairs = [(r, rule_box(r.matches, ifaces)) for r in rules]
    pairs = [(r, b) for r, b in pairs if b is not None]
    return Chain([b for _, b in pairs], [Outcome(r.verdict, r) for r, _ in pairs],
                 Outcome(ruleset.policies[chain].verdict, None))


def both(a: Chain, b: Chain, region: list[Box], b_state: int | None = None
         ) -> list[tuple[Box, Outcome, Outcome]]:
    """The region split by both chains: A splits it, B splits each of A's pieces (the piece's
    A outcome rides in the box's tag, with whatever tag it had)."""
    tagged = [(*box[:TAG], (o, box[TAG])) for box, o in a.split(region)]
    if b_state is not None:
        tagged = with_state(tagged, b_state)
    out = []
    for box, ob in b.split(tagged):
        oa, tag = box[TAG]
        out.append(((*box[:TAG], tag), oa, ob))
    return out


def compare(a: Chain, b: Chain, region: list[Box], b_state: int | None = None
            ) -> list[tuple[Box, Outcome, Outcome]]:
    """Where the two chains disagree (filter chains on BDDs: diff_bdd.py)."""
    if type(a) is Chain and type(b) is Chain:
        return diff_bdd.pairs(a, b, region, b_state, lambda x, y: x.verdict != y.verdict, True)
    return [t for t in both(a, b, region, b_state) if t[1].verdict != t[2].verdict]


def translated_alike(boxes: list[Box], a: Chain, b: Chain, dnat: bool) -> list[Box]:
    """The part of these new connections both files translate alike: neither with `dnat`
    (a port-forwarded connection's packets are not where the box says), the same `snat`. The
    NAT rules are asked as the engine asks them: no ct state, and no `oif` yet for `dnat`."""
    if not a.boxes and not b.boxes:  # neither file translates: alike everywhere
        return boxes
    blank = [F["ct_state"], *([F["oif"]] if dnat else [])]
    moved = []
    for n, box in enumerate(boxes):
        out = list(box)
        for i in blank:
            out[i] = NONE
        out[TAG] = n
        moved.append(tuple(out))
    kept = []
    for box, oa, ob in both(a, b, moved):
        if oa.verdict == ob.verdict and (not dnat or oa.verdict == NO_NAT.verdict):
            source = boxes[box[TAG]]
            out = list(box)
            for i in blank:
                out[i] = source[i]
            out[TAG] = source[TAG]
            kept.append(tuple(out))
    return kept


def merged(found: list[tuple[Box, Outcome, Outcome]]) -> list[tuple[Box, Outcome, Outcome]]:
    """Fewer, larger regions: boxes with the same two outcomes (and opener) that differ in one
    field only become one box, field after field until nothing changes. Each box is then a
    region a reviewer reads at once rather than the walk's fragments."""
    boxes = [(*box, oa, ob) for box, oa, ob in found]  # outcomes ride along as the last two
    changed = True
    while changed and len(boxes) > 1:
        changed = False
        for i in range(TAG):
            groups: dict[tuple, list[tuple]] = {}
            for box in boxes:
                groups.setdefault((*box[:i], *box[i + 1:]), []).append(box)
            if len(groups) < len(boxes):
                changed = True
                boxes = [(*key[:i], ranges.norm(p for b in group for p in b[i]), *key[i:])
                         for key, group in groups.items()]
    return [(box[:TAG + 1], box[-2], box[-1]) for box in boxes]


def canonical(found: list[tuple[Box, Outcome, Outcome]]) -> list[tuple[Box, Outcome, Outcome]]:
    """The regions in an order that depends on them only, not on how a walk came to them
    (the box walk and the BDD walk split alike sets differently): by their ranges, then the
    deciding rules, then the opener a reply answers."""
    def key(item: tuple[Box, Outcome, Outcome]) -> tuple:
        box, oa, ob = item
        opener = box[TAG][:TAG] if isinstance(box[TAG], tuple) else ()
        return (box[:TAG], oa.ref(), oa.verdict, ob.ref(), ob.verdict, opener)
    return sorted(found, key=key)


def agreed(a: Chain, b: Chain, region: list[Box], verdict: str, b_state: int | None = None
           ) -> list[Box]:
    """The part of the region both chains give `verdict` (B's ct state on the boxes)."""
    if type(a) is Chain and type(b) is Chain:
        return diff_bdd.agreed(a, b, region, verdict, b_state)
    tagged = [(*box[:TAG], box[TAG]) for box, o in a.split(region) if o.verdict == verdict]
    if b_state is not None:
        tagged = with_state(tagged, b_state)
    return [box for box, o in b.split(tagged) if o.verdict == verdict]


# -- NAT as chains ---------------------------------------------------------------------------

def nat_text(rule: NatRule) -> str:
    """A translation as compared: two rules that translate alike read alike."""
    to = ""
    if rule.to_addr is not None:
        to = f" to {rule.to_addr}" + (f":{rule.to_ports}" if rule.to_ports is not None else "")
    elif rule.to_ports is not None:
        to = f" to :{rule.to_ports}"
    if rule.pool is not None:
        pool = rule.pool
        members = ", ".join(map(str, pool.members))
        port = f":{pool.port}" if pool.port is not None else ""
        sticky = f" sticky {pool.sticky} seconds" if pool.sticky is not None else ""
        to = f" to {{ {members} }}{port} {pool.method}{sticky}"
    if rule.action == "dnat":
        return f"dnat{to}"
    return (f"{rule.action}{to} (mapping {rule.mapping}, filtering {rule.filtering})")


NO_NAT = Outcome("none", None)


def nat_chain(ruleset: RuleSet, dnat: bool, ifaces: dict[str, int]) -> Chain:
    if not ruleset.stateful:
        return Chain([], [], NO_NAT)
    rules = [n for n in ruleset.nat if (n.action == "dnat") == dnat]
    pairs = [(n, rule_box(n.matches, ifaces)) for n in rules]
    pairs = [(n, b) for n, b in pairs if b is not None]
    return Chain([b for _, b in pairs], [Outcome(nat_text(n), n) for n, _ in pairs], NO_NAT)


@dataclass(frozen=True)
class DnatChain(Chain):
    """The dnat rules with NAT loopback: a packet to one of the firewall's own addresses on
    another interface that no rule takes with its real `iif` meets them as if it had arrived
    on that interface (fw/engine/nat.py)."""

    owners: tuple[tuple[int, Ranges], ...] = ()  # (interface id, its own IPv4 addresses)

    def split(self, region: list[Box]) -> list[tuple[Box, Outcome]]:
        out = []
        for box, outcome in Chain.split(self, region):
            if outcome is not self.default:
                out.append((box, outcome))
                continue
            out += self.loopback(box)
        return out

    def loopback(self, box: Box) -> list[tuple[Box, Outcome]]:
        out, rest = [], [box]
        for iface, own in self.owners:
            test: RuleBox = ((F["daddr"], own),
                             (F["iif"], ranges.sub(box[F["iif"]], ranges.point(iface))))
            left = []
            for b in rest:
                there = space.intersect(b, test)
                if there is None:
                    left.append(b)
                    continue
                left += space.difference(b, test)
                moved = list(there)
                moved[F["iif"]] = ranges.point(iface)
                for got, outcome in Chain.split(self, [tuple(moved)]):
                    back = list(got)
                    back[F["iif"]] = there[F["iif"]]
                    out.append((tuple(back), outcome))
            rest = left
        return out + [(b, self.default) for b in rest]


def dnat_chain(ruleset: RuleSet, where: Where) -> Chain:
    base = nat_chain(ruleset, True, where.ifaces)
    owners = tuple((where.ifaces[name], own) for name, addrs in where.routing.addresses.items()
                   if (own := ranges.norm((4 << 128 | a,) * 2 for f, a in addrs if f == 4)))
    return DnatChain(base.boxes, base.outcomes, base.default, owners)


def nat_domain(dnat: bool, where: Where) -> list[Box]:
    """New IPv4 packets: as they arrive (dnat, before routing: no oif) or as they leave
    (snat: forwarded or the firewall's own, per outgoing interface)."""
    if dnat:
        places_ = [dict(iif=where.ids(where.routing.interfaces), oif=NONE, daddr=addr_domain(4))]
    else:
        places_ = [*places("forward", where, 4), *places("output", where, 4)]
    return [space.make_box(saddr=addr_domain(4), ct_state=NONE, **p, **l4)
            for p in places_ for l4 in l4_parts(CtState.NEW, 4)]


# -- the whole comparison --------------------------------------------------------------------

FILTER_CHAINS = ("input", "forward", "output")


@dataclass(frozen=True)
class Pair:
    """The two files' chains over one numbering of interfaces."""

    a: RuleSet
    b: RuleSet
    where: Where
    filters: dict[str, tuple[Chain, Chain]]
    dnat: tuple[Chain, Chain]
    snat: tuple[Chain, Chain]

    @classmethod
    def of(cls, a: RuleSet, b: RuleSet, routing: Routing) -> Pair:
        where = Where.of(routing, (a, b))
        filters = {c: (filter_chain(a, c, where.ifaces), filter_chain(b, c, where.ifaces))
                   for c in FILTER_CHAINS}
        return cls(a, b, where, filters, (dnat_chain(a, where), dnat_chain(b, where)),
                   (nat_chain(a, False, where.ifaces), nat_chain(b, False, where.ifaces)))

    @property
    def stateful(self) -> bool:
        return self.a.stateful or self.b.stateful


def diff(a: RuleSet, b: RuleSet, routing: Routing) -> Diff:
    pair = Pair.of(a, b, routing)
    result = Diff(a, b, pair.where.ifaces)
    pick = Picker(pair.where, pair.dnat, pair.snat)
    states: Sequence[str | None] = STATES if pair.stateful else (None,)
    replies: dict[str, diff_replies.Openers] = {}
    for name in pair.filters:
        for state in states:
            found = canonical(merged(compared(name, state, pair, replies)))
            shown = state if pair.stateful else None
            for box, oa, ob in found:
                result.differences.append(pick.difference(name, shown, box, oa, ob))
    for dnat, (na, nb) in ((True, pair.dnat), (False, pair.snat)):
        for box, oa, ob in canonical(merged(compare(na, nb, nat_domain(dnat, pair.where)))):
            result.differences.append(pick.difference("dnat" if dnat else "snat", CtState.NEW,
                                                      box, oa, ob))
    return result


def compared(chain: str, state: str | None, pair: Pair,
             replies: dict[str, diff_replies.Openers]) -> list[tuple[Box, Outcome, Outcome]]:
    """Where the chain's verdicts differ in this state. Replies and errors are only those of
    connections both files let open (each box tagged with the opener box it answers), compared
    without a region per opener (diff_replies.py); `replies` keeps each chain's openers for
    both states."""
    sa, sb = state_value(pair.a, state), state_value(pair.b, state)
    if state == CtState.NEW and OPENER_CHAIN[chain] == chain:
        # the openers of forward's replies are forward's own new packets: one walk for both
        if chain not in replies:
            replies[chain] = replies_of(chain, pair)
        found = replies[chain].new_pairs()
        if found is not None:
            return found
    if state not in (CtState.ESTABLISHED, CtState.RELATED):
        ca, cb = pair.filters[chain]
        return compare(ca, cb, with_state(domain(chain, state, pair.where), sa), sb)
    if chain not in replies:
        replies[chain] = replies_of(chain, pair)
    test = partial(reply_test, state)
    if state == CtState.ESTABLISHED:
        return diff_replies.established(replies[chain], test)
    return diff_replies.related(replies[chain], with_state(domain(chain, state, pair.where), sa),
                                sb, test)


def replies_of(chain: str, pair: Pair) -> diff_replies.Openers:
    """The openers of the connections whose replies come back through `chain`: a set read from
    their boxes when NAT rules may narrow them (translated_alike), a BDD otherwise."""
    where, a, b = pair.where, pair.a, pair.b
    opener = OPENER_CHAIN[chain]
    nat = ((opener != "output" and any(c.boxes for c in pair.dnat))
           or (opener != "input" and any(c.boxes for c in pair.snat)))
    new = (state_value(a, CtState.NEW), state_value(b, CtState.NEW))
    established = (state_value(a, CtState.ESTABLISHED), state_value(b, CtState.ESTABLISHED))
    return diff_replies.Openers(
        pair.filters[opener], pair.filters[chain], new, established,
        with_state(domain(opener, CtState.NEW, where), new[0]),
        with_state(domain(chain, CtState.ESTABLISHED, where), established[0]),
        lambda: openers(chain, pair), nat)


def openers(chain: str, pair: Pair) -> list[Box]:
    """The first packets of connections both files let open, and translate alike, whose
    replies come back through `chain`."""
    where, a, b = pair.where, pair.a, pair.b
    ca, cb = pair.filters[OPENER_CHAIN[chain]]
    found = agreed(ca, cb, with_state(domain(OPENER_CHAIN[chain], CtState.NEW, where),
                                      state_value(a, CtState.NEW)),
                   "accept", state_value(b, CtState.NEW))
    if OPENER_CHAIN[chain] != "output":
        found = translated_alike(found, *pair.dnat, dnat=True)
    if OPENER_CHAIN[chain] != "input":
        found = translated_alike(found, *pair.snat, dnat=False)
    return found


def reply_test(state: str | None, opener: Box) -> RuleBox:
    """The replies (`established`) or errors (`related`) of an opener box, as a rule box."""
    if state == CtState.ESTABLISHED:
        rev = reversed_box(opener)
        return tuple((i, rev[i]) for i in range(TAG) if i != F["ct_state"])
    return ((F["daddr"], opener[F["saddr"]]), (F["oif"], opener[F["iif"]]))


# -- examples --------------------------------------------------------------------------------

class Picker:
    """Makes each difference's example packet (and `after` packets where state is needed)."""

    def __init__(self, where: Where, dnat: Sequence[Chain], snat: Sequence[Chain]) -> None:
        self.names = {v: k for k, v in where.ifaces.items()}
        self.points = Points(self.names, where.routed, where.local)
        self.nat = [b for c in (*dnat, *snat) for b in c.boxes]
        self.snat = snat
        self.routing = where.routing

    def difference(self, chain: str, state: str | None, box: Box, a: Outcome, b: Outcome
                   ) -> Difference:
        example, after = self.example(chain, state, box)
        return Difference(chain, state, (*box[:TAG], None), a, b, example, after)

    def example(self, chain: str, state: str | None, box: Box) -> tuple[str, tuple[str, ...]]:
        opener = box[TAG]
        if state == CtState.ESTABLISHED and opener is not None:
            v = self.points.point(box, [reversed_rule(r) for r in self.nat])
            o = reversed_point(v)
            o[F["tcp_flags"]] = first_of(opener[F["tcp_flags"]], (SYN,))
            o[F["icmp_type"]] = asked(v[F["icmp_type"]], opener[F["icmp_type"]])
            return reply_sequence(self.addressed(v, o, chain), o)
        if state == CtState.RELATED and opener is not None:
            v = self.points.point(box)
            test: RuleBox = ((F["saddr"], ranges.point(v[F["daddr"]])),
                             (F["iif"], ranges.point(v[F["oif"]])))
            o = self.points.point(space.intersect(opener, test) or opener, self.nat)
            seen = self.addressed(reversed_point(o), o, chain)
            v[F["daddr"]] = seen[F["daddr"]]
            quoted = packet_text(o)
            return packet_text(v, f"quoting {packet_text(reversed_point(seen))}"), (quoted,)
        avoid = self.nat if chain in ("forward", "input") and state != CtState.INVALID else ()
        return packet_text(self.points.point(box, avoid)), ()

    def addressed(self, reply: list[int], opener: list[int], chain: str) -> list[int]:
        """The reply as it arrives: to the address and port the opener was translated to when
        both files translate it alike (masquerade keeps a free port, as the engine does)."""
        if chain == "output" or opener[F["daddr"]] >> 128 != 4:
            return reply
        outcomes = [c.at(opener) for c in self.snat]
        if len({o.verdict for o in outcomes}) != 1:
            return reply
        rule = outcomes[0].rule
        if not isinstance(rule, NatRule):
            return reply
        oif = self.names.get(opener[F["oif"]])
        addr = int(rule.to_addr) if rule.to_addr is not None else self.routing.address_of(oif, 4)
        if addr is None:
            return reply
        out = list(reply)
        out[F["daddr"]] = 4 << 128 | addr
        sport = opener[F["sport"]]
        if sport != MISSING and rule.to_ports is not None and (sport & 0xFFFF) not in rule.to_ports:
            out[F["dport"]] = (sport & ~0xFFFF) | rule.to_ports.lo
        return out
