"""The packet engine: bytes, where they came from and `now` in; a Decision out.

Sans-IO like h11 and aioquic: no clock, socket or file. Adapters (NFQUEUE in the lab, pcap
replay, tests) feed packets and pull timers with `next_expiry()` / `expire(now)`, so the same
rule set gives the same verdicts everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from fw.engine.conntrack import ConnTable, CtVerdict
from fw.engine.decision import Decision, LogEvent
from fw.engine.evaluate import CompiledRuleSet, packet_values
from fw.engine.fragments import FragmentTable, fragment_key
from fw.engine.nat import Nat
from fw.engine.packet import ICMPV6, Packet, decode
from fw.engine.reject import build_reject
from fw.engine.routing import Routing, default_routing
from fw.model import Rule, RuleSet

HOOKS = ("prerouting", "input", "forward", "output")
# IPv6's ARP: neighbour discovery and MLD. ARP never reaches the queue, so neither do these
# get judged; without them no IPv6 host could even find the firewall.
LINK_CONTROL_ICMPV6 = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})


@dataclass(slots=True)
class EngineStats:
    packets: int = 0
    malformed: int = 0
    accepted: int = 0
    dropped: int = 0
    rejected: int = 0
    link_control: int = 0
    fragments_followed: int = 0


class Engine:
    def __init__(
        self,
        ruleset: RuleSet,
        routing: Routing | None = None,
        *,
        conntrack_limit: int = 262_144,
        liberal: bool = False,
        seed: int | None = None,
    ) -> None:
        """`seed` fixes NAT's random port choices (replays are then reproducible)."""
        self.routing = routing or default_routing()
        self.compiled = CompiledRuleSet(ruleset, self.routing.interfaces)
        self.stateful = ruleset.stateful
        self.conntrack = ConnTable(conntrack_limit, liberal=liberal)
        self.fragments = FragmentTable()
        self.stats = EngineStats()
        self.known: dict[tuple, tuple[Decision, list[Rule]]] = {}
        self.nat = Nat(ruleset.nat, self.routing, self.compiled.ifaces, self.conntrack, seed)

    @property
    def ruleset(self) -> RuleSet:
        return self.compiled.ruleset

    def reload(self, ruleset: RuleSet) -> None:
        """Swap rule sets atomically; connections in the table survive."""
        self.compiled = CompiledRuleSet(ruleset, self.routing.interfaces)
        self.stateful = ruleset.stateful
        self.known.clear()
        self.nat.load_rules(ruleset.nat, self.compiled.ifaces)

    # -- per packet ------------------------------------------------------------------------

    def process(
        self,
        data: bytes | bytearray,
        *,
        hook: str = "prerouting",
        iif: str | None = None,
        oif: str | None = None,
        now: float = 0.0,
        trace: bool = False,
    ) -> Decision:
        pkt = decode(data)
        stats = self.stats
        stats.packets += 1
        if pkt.invalid is not None:
            stats.malformed += 1
        elif pkt.proto == ICMPV6 and pkt.icmp_type in LINK_CONTROL_ICMPV6:
            return self.link_control(pkt, hook, iif, oif)
        if pkt.frag_offset:
            decision = self.fragments.follow(pkt, now)
            if decision is not None:
                stats.fragments_followed += 1
                return self.tally(decision, pkt)
        first_fragment = fragment_key(pkt) if pkt.more_fragments and not pkt.frag_offset else None
        ct = self.conntrack.lookup(pkt, now) if self.stateful else None
        known = None
        if ct is not None and ct.state == "established" and not ct.pending and not trace:
            # Packets of one established connection, one direction and one set of TCP flags
            # differ in nothing a rule can test: their verdict is computed once, and most
            # packets skip the rule walk (design.md).
            known = (ct.conn.id, ct.direction, pkt.tcp_flags, hook, iif, oif)
            remembered = self.known.get(known)
            if remembered is not None:
                return self.repeat(remembered, pkt, ct, now)
        nat = self.nat if ct is not None and ct.conn is not None and pkt.family == 4 else None
        changes = nat.before(pkt, ct, self.input_iface(pkt, hook, iif) if ct.pending else iif,
                             now) if nat else []
        chain, iif, oif = self.place(pkt, hook, iif, oif)
        decision, statement_rules = self.judge(pkt, chain, iif, oif, ct, trace)
        if known is not None and decision.verdict != "reject":
            self.remember(known, decision, statement_rules)
        if nat is not None and decision.accepted:
            self.source_nat(nat, pkt, ct, decision, changes, now)
        decision = with_nat(self.finish(pkt, decision, ct, now), pkt, changes)
        if first_fragment is not None:
            self.fragments.remember(first_fragment, decision, now)
        return self.tally(decision, pkt)

    def link_control(self, pkt: Packet, hook: str, iif, oif) -> Decision:
        self.stats.link_control += 1
        chain, iif, oif = self.place(pkt, hook, iif, oif)
        return self.tally(Decision("accept", chain, None, None, LINK_CONTROL, iif, oif), pkt)

    def input_iface(self, pkt: Packet, hook: str, iif: str | None) -> str | None:
        if hook == "output" or iif is not None or not pkt.family:
            return iif
        return self.routing.route(pkt.family, pkt.src)

    def source_nat(self, nat: Nat, pkt: Packet, ct: CtVerdict, decision: Decision,
                   changes: list, now: float) -> None:
        """Source translation after the filter accepted; no outside port left: drop."""
        after = nat.after(pkt, ct, decision.iif, decision.oif, now)
        if after is None:
            decision.verdict = "drop"
            decision.reason = "NAT: no outside port left in the range (exhaustion)"
        else:
            changes.extend(after)

    def repeat(self, remembered: tuple, pkt: Packet, ct: CtVerdict, now: float) -> Decision:
        """A packet of an established connection judged like the last one of its kind, and
        translated like it (the filter saw nothing of it, so NAT's two steps are one). Most
        packets end here, so the counting is done in place rather than through tally()."""
        decision, statement_rules, counters, index = remembered
        length = pkt.length
        for rule in statement_rules:
            counters.count(rule, length)
        if index is None:
            counters.policy_hits += 1
            counters.policy_bytes += length
        else:
            counters.hits[index] += 1
            counters.bytes[index] += length
        if decision.verdict == "accept":
            self.stats.accepted += 1
        else:
            self.stats.dropped += 1
        conn = ct.conn
        if conn.nat is not None and pkt.family == 4:
            change = self.nat.translate_known(pkt, conn, ct.direction, now)
            if change is not None:
                return decision.translated(bytes(pkt.raw), (change,))
        return decision

    def remember(self, known: tuple, decision: Decision, statement_rules: list[Rule]) -> None:
        if len(self.known) >= KNOWN_LIMIT:
            self.known.clear()
        index = decision.rule.index if decision.rule is not None else None
        counters = self.compiled.counters[decision.chain]
        self.known[known] = (decision, statement_rules, counters, index)

    def place(self, pkt: Packet, hook: str, iif: str | None, oif: str | None) -> tuple:
        """The chain a packet takes and its interfaces, by route lookup where not given."""
        if hook not in HOOKS:
            raise ValueError(f"unknown hook {hook!r}; hooks are {', '.join(HOOKS)}")
        routing, family = self.routing, pkt.family
        if hook == "output":
            return "output", None, oif or routing.route(family, pkt.dst)
        iif = self.input_iface(pkt, hook, iif)
        chain = hook if hook != "prerouting" else self.chain_for(pkt)
        if chain == "forward" and oif is None and family:
            oif = routing.route(family, pkt.dst)
        return chain, iif, oif if chain == "forward" else None

    def chain_for(self, pkt: Packet) -> str:
        """Packets to one of the firewall's addresses, or to multicast, are its own input."""
        if not pkt.family:
            return "forward"
        if self.routing.is_local(pkt.family, pkt.dst) or is_multicast(pkt):
            return "input"
        return "forward"

    def judge(self, pkt: Packet, chain: str, iif, oif, ct: CtVerdict | None, trace: bool):
        compiled = self.compiled
        ct_state = ct.state if ct is not None else None
        values = packet_values(pkt, compiled.iface_id(iif), compiled.iface_id(oif), ct_state)
        table = compiled.chains[chain]
        mask = table.matching(values)
        rule = table.first_decider(mask)
        statement_rules = table.statement_rules(mask, rule)
        for matched in statement_rules:
            compiled.counters[chain].count(matched, pkt.length)
        logs = log_events(chain, statement_rules, rule)
        verdict, reason = self.verdict_of(chain, rule, pkt, ct)
        steps = tuple(compiled.trace(chain, values, rule)) if trace else ()
        decision = Decision(verdict, chain, rule, ct_state, reason, iif, oif, logs=logs,
                            trace=steps)
        return decision, statement_rules

    def verdict_of(self, chain: str, rule: Rule | None, pkt: Packet, ct: CtVerdict | None):
        if rule is not None:
            return rule.verdict, f"rule {rule.index + 1} of {chain} matched"
        if pkt.invalid is not None and self.ruleset.stateful:
            return "drop", f"malformed packet ({pkt.invalid}) and no rule accepts it"
        policy = self.compiled.policy(chain)
        why = f": {ct.reason}" if ct is not None and ct.state == "invalid" and ct.reason else ""
        return policy, f"no rule matched: policy {chain} {policy}{why}"

    def finish(self, pkt: Packet, decision: Decision, ct: CtVerdict | None, now: float):
        """Confirm a new connection, build a reject's reply."""
        confirming = decision.accepted and ct is not None and ct.pending
        if confirming and not self.conntrack.confirm(ct, now):
            decision.verdict = "drop"
            decision.reason = "connection table full (no unreplied entry to evict)"
        if decision.verdict == "reject":
            decision.reply = build_reject(pkt)
        return decision

    def tally(self, decision: Decision, pkt: Packet) -> Decision:
        stats = self.stats
        if decision.verdict == "accept":
            stats.accepted += 1
        elif decision.verdict == "drop":
            stats.dropped += 1
        else:
            stats.rejected += 1
        if decision.reason is not LINK_CONTROL:
            self.compiled.counters[decision.chain].count(decision.rule, pkt.length)
        return decision

    # -- timers ----------------------------------------------------------------------------

    def next_expiry(self) -> float | None:
        timers = (self.conntrack, self.fragments, self.nat)
        times = [t for t in (timer.next_expiry() for timer in timers) if t is not None]
        return min(times) if times else None

    def expire(self, now: float) -> int:
        self.fragments.expire(now)
        gone = len(self.conntrack.expire(now))
        self.nat.expire(now)
        return gone

    # -- views -----------------------------------------------------------------------------

    def status(self) -> dict:
        from fw.engine.views import engine_status

        return engine_status(self)

    def conntrack_entries(self, now: float) -> list[dict]:
        from fw.engine.views import conntrack_rows

        return conntrack_rows(self.conntrack, now)

    def nat_entries(self, now: float) -> list[dict]:
        from fw.engine.views import nat_rows

        return nat_rows(self.nat, now)


KNOWN_LIMIT = 65_536


def with_nat(decision: Decision, pkt: Packet, changes: list) -> Decision:
    """The decision with this packet's translation; a shared (remembered) decision is copied."""
    if not changes:
        return decision
    return decision.translated(bytes(pkt.raw), tuple(changes))


def log_events(chain: str, statement_rules: list[Rule], decider: Rule | None):
    rules = [*statement_rules, *([decider] if decider is not None else [])]
    return tuple(LogEvent(r.log_prefix, chain, r, r.verdict) for r in rules if r.logs)


LINK_CONTROL = "IPv6 neighbour discovery / MLD: link-layer control is not filtered (as ARP)"


def is_multicast(pkt: Packet) -> bool:
    if pkt.family == 4:
        return pkt.dst >> 28 == 0xE or pkt.dst == 0xFFFFFFFF
    return pkt.dst >> 120 == 0xFF or pkt.dst >> 118 == 0x3FA  # ff00::/8, fe80::/10


__all__ = ["Engine"]
