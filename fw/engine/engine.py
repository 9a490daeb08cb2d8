"""The packet engine: bytes, where they came from and `now` in; a Decision out.

Sans-IO like h11 and aioquic: no clock, socket or file. Adapters (NFQUEUE in the lab, pcap
replay, tests) feed packets and pull timers with `next_expiry()` / `expire(now)`, so the same
rule set gives the same verdicts everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from fw.core.fields import MISSING, packet_values
from fw.core.protocols import ICMPV6, TCP, UDP, UNTRACKED_ICMPV6, is_multicast
from fw.core.vocab import CT_STATUS_BITS, CtState, CtStatus, Hook, Verdict
from fw.engine.checksum import transport_ok
from fw.engine.conntrack import ESTABLISHED, INVALID, Conn, ConnTable, CtVerdict
from fw.engine.decision import Decision, LogEvent, NatChange
from fw.engine.evaluate import CompiledRuleSet
from fw.engine.fragments import FragmentTable, as_nft_reads, fragment_key
from fw.engine.nat import Nat
from fw.engine.packet import Packet, decode
from fw.engine.reject import build_reject
from fw.engine.routing import Routing, default_routing
from fw.model import Rule, RuleSet

HOOKS = tuple(Hook)
HOOK_NAMES = frozenset(HOOKS)
# Enum members as plain module names: Python 3.11 looks a member up through
# EnumType.__getattr__'s slow path, about 1 us each, several times per packet.
ACCEPT, DROP, REJECT = Verdict.ACCEPT, Verdict.DROP, Verdict.REJECT
PREROUTING, OUTPUT, CT_UNTRACKED = Hook.PREROUTING, Hook.OUTPUT, CtState.UNTRACKED
SNAT_BIT, DNAT_BIT = CT_STATUS_BITS[CtStatus.SNAT], CT_STATUS_BITS[CtStatus.DNAT]
UNTRACKED = "IPv6 neighbour discovery / MLD: never tracked (as in Linux)"
NAT_EXHAUSTED = "NAT: no outside port left in the range (exhaustion)"
BAD_CHECKSUM = "bad checksum (nf_conntrack_checksum): not tracked"
TABLE_FULL = "connection table full (no unreplied entry to evict)"


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
        tcp_loose: bool = True,
        verify_checksums: bool = True,
        nat_mapping_hold: float = 0.0,
        seed: int | None = None,
    ) -> None:
        """`seed` fixes NAT's random port choices (replays are then reproducible).

        The options are Linux's conntrack sysctls (docs/fidelity.md): `liberal` is
        nf_conntrack_tcp_be_liberal, `tcp_loose` nf_conntrack_tcp_loose (pick up a TCP
        connection in the middle), `verify_checksums` nf_conntrack_checksum (a packet with a
        bad transport checksum is invalid in prerouting). An adapter whose packets may carry
        checksums not computed yet (a local sender's, on a veth) must turn the last one off.
        `nat_mapping_hold` keeps a NAT mapping that long after its last outbound packet even
        when its connections are gone (RFC 4787 REQ-5 asks for 120 s; Linux keeps none).
        """
        self.routing = routing or default_routing()
        self.compiled = CompiledRuleSet(ruleset, self.routing.interfaces)
        self.stateful = ruleset.stateful
        self.verify_checksums = verify_checksums
        self.conntrack = ConnTable(conntrack_limit, liberal=liberal, loose=tcp_loose)
        self.fragments = FragmentTable()
        self.stats = EngineStats()
        self.nat = Nat(ruleset.nat, self.routing, self.compiled.ifaces, self.conntrack, seed,
                       nat_mapping_hold)

    @property
    def ruleset(self) -> RuleSet:
        return self.compiled.ruleset

    def reload(self, ruleset: RuleSet) -> None:
        """Swap rule sets atomically; connections in the table survive, their remembered
        verdicts do not (they were the old rules' verdicts)."""
        self.compiled = CompiledRuleSet(ruleset, self.routing.interfaces)
        self.stateful = ruleset.stateful
        for conn in self.conntrack:
            conn.memo = None
        self.nat.load_rules(ruleset.nat, self.compiled.ifaces)

    def rewrites(self) -> bool:
        """Whether a packet may leave with new bytes: NAT rules are loaded, or a connection
        translated under earlier rules still runs. A queue that copies only the headers of
        packets that leave unchanged asks this (fw/lab/daemon.py)."""
        return self.nat.loaded or any(conn.nat is not None for conn in self.conntrack)

    # -- per packet ------------------------------------------------------------------------

    def process(
        self,
        data: bytes | bytearray,
        *,
        hook: str = PREROUTING,
        iif: str | None = None,
        oif: str | None = None,
        now: float = 0.0,
        trace: bool = False,
        wire_len: int | None = None,
    ) -> Decision:
        """The stages in order: decode, link control, fragments, conntrack (and a verdict
        remembered on the connection), DNAT, filter, SNAT, confirm. Every path leaves through
        `leave`, where counting and fragment bookkeeping happen once for all. `wire_len`: the
        packet's size when `data` holds only its first bytes (decode); a translated packet's
        bytes are then cut short too, and its adapter must not give them back as the packet."""
        if hook not in HOOK_NAMES:
            raise ValueError(f"unknown hook {hook!r}; hooks are {', '.join(HOOKS)}")
        pkt = decode(data, wire_len)
        first_fragment = fragment_key(pkt) if (pkt.more_fragments and not pkt.frag_offset
                                               and self.stateful) else None
        decision = self.decide(pkt, hook, iif, oif, now, trace)
        return self.leave(pkt, decision, first_fragment, now)

    def decide(self, pkt: Packet, hook: str, iif, oif, now: float, trace: bool) -> Decision:
        if pkt.invalid is None and pkt.proto == ICMPV6 and pkt.icmp_type in UNTRACKED_ICMPV6:
            return self.untracked(pkt, hook, iif, oif, now, trace)
        if pkt.frag_offset and self.stateful:  # stateless: no conntrack, so no defrag
            followed = self.fragments.follow(pkt, now)
            if followed is not None:
                self.stats.fragments_followed += 1
                return followed
        if not self.stateful:
            return self.judge(pkt, hook, iif, oif, None, trace, now)
        # Connection tracking; as Linux with nf_conntrack_checksum=1, a packet arriving with a
        # wrong transport checksum is invalid and changes no connection (prerouting only: the
        # firewall's own packets are not checked).
        if (self.verify_checksums and hook == PREROUTING and pkt.invalid is None
                and not transport_ok(pkt)):
            ct = CtVerdict(INVALID, reason=BAD_CHECKSUM)
        else:
            ct = self.conntrack.lookup(pkt, now)
        conn = ct.conn
        if conn is None or ct.state == INVALID:
            # Linux detaches an invalid packet from its connection: no NAT touches it
            decision = self.judge(pkt, hook, iif, oif, ct, trace, now)
            return self.reset_sent(decision, None, now) if decision.verdict == REJECT else decision
        # Packets of one established connection, one direction and one set of TCP flags
        # differ in nothing a rule can test: their verdict is computed once and kept on the
        # connection (so it expires with it), and most packets skip the rule walk.
        memo_key = None if trace or ct.pending or ct.state != ESTABLISHED else \
            (ct.direction, pkt.tcp_flags, hook, iif, oif)
        if memo_key is not None:
            memo = conn.memo
            remembered = memo.get(memo_key) if memo is not None else None
            if remembered is not None:
                if conn.nat is None or pkt.family != 4:
                    return remembered
                return self.repeat(remembered, pkt, ct, now)
        decision = self.tracked(pkt, hook, iif, oif, ct, now, trace)
        if memo_key is not None and decision.verdict != REJECT and not ct.pending \
                and not self.compiled.limits[decision.chain].mask:  # limits judge each packet
            self.remember(conn, memo_key, decision)
        return self.reset_sent(decision, conn, now) if decision.verdict == REJECT else decision

    def reset_sent(self, decision: Decision, conn: Conn | None, now: float) -> Decision:
        """What the RST a `reject` sends does to conntrack, as Linux's nf_send_reset: it
        closes the connection of the packet it answers (nf_ct_set_closing: CLOSE and its 10 s
        timer, confirmed connections only); answering a packet that had none (invalid), it
        leaves through conntrack's output hook like any local packet, and a connection it
        belongs to learns from it (one that never saw a reply is deleted)."""
        reply = decision.reply
        if reply is None or not self.stateful:
            return decision
        rst = decode(reply)
        if rst.proto != TCP:
            return decision
        if conn is not None:
            self.conntrack.set_closing(conn, now)
        else:
            self.conntrack.lookup(rst, now)
        return decision

    def tracked(self, pkt: Packet, hook: str, iif, oif, ct: CtVerdict, now: float,
                trace: bool) -> Decision:
        """A packet conntrack knows or may start: DNAT, the filter, SNAT, confirmation."""
        nat = self.nat if pkt.family == 4 else None
        changes: list[NatChange] = []
        if nat is not None:
            entry_iif = self.input_iface(pkt, hook, iif) if ct.pending else iif
            changes = nat.before(pkt, ct, entry_iif, now)
        decision = self.judge(pkt, hook, iif, oif, ct, trace, now)
        if nat is not None and decision.accepted:
            after = nat.after(pkt, ct, decision.iif, decision.oif, now)
            if after is None:
                decision = decision._replace(verdict=DROP, reason=NAT_EXHAUSTED)
            else:
                changes.extend(after)
        if decision.accepted and ct.pending and not self.conntrack.confirm(ct, now):
            decision = decision._replace(verdict=DROP, reason=TABLE_FULL)
        if changes:
            decision = decision.translated(bytes(pkt.raw), tuple(changes))
        return decision

    def repeat(self, remembered: Decision, pkt: Packet, ct: CtVerdict, now: float) -> Decision:
        """Judged like the last packet of its kind, and translated like it (the filter saw
        nothing of it, so NAT's two steps are one)."""
        conn = ct.conn
        if conn.nat is not None and pkt.family == 4:
            change = self.nat.translate_known(pkt, conn, ct.direction, now)
            if change is not None:
                return remembered.translated(bytes(pkt.raw), (change,))
        return remembered

    @staticmethod
    def remember(conn: Conn, key: tuple, decision: Decision) -> None:
        memo = conn.memo
        if memo is None:
            memo = conn.memo = {}
        elif len(memo) >= MEMO_LIMIT:
            memo.clear()
        memo[key] = decision.untranslated()

    def untracked(self, pkt: Packet, hook: str, iif, oif, now: float, trace: bool) -> Decision:
        """Neighbour discovery and MLD: judged by the chains like any packet, but never
        tracked, as Linux does (`ct state untracked` in a stateful rule set)."""
        self.stats.link_control += 1
        ct = CtVerdict(CT_UNTRACKED, reason=UNTRACKED) if self.stateful else None
        return self.judge(pkt, hook, iif, oif, ct, trace, now)

    def input_iface(self, pkt: Packet, hook: str, iif: str | None) -> str | None:
        if hook == OUTPUT or iif is not None or not pkt.family:
            return iif
        return self.routing.route(pkt.family, pkt.src)

    def place(self, pkt: Packet, hook: str, iif: str | None, oif: str | None) -> tuple:
        """The chain a packet takes and its interfaces, by route lookup where not given."""
        routing, family = self.routing, pkt.family
        if hook == OUTPUT:
            return "output", None, oif or routing.route(family, pkt.dst)
        iif = self.input_iface(pkt, hook, iif)
        chain = hook if hook != PREROUTING else self.chain_for(pkt)
        if chain == "forward" and oif is None and family:
            oif = routing.route(family, pkt.dst)
        return chain, iif, oif if chain == "forward" else None

    def chain_for(self, pkt: Packet) -> str:
        """Packets to one of the firewall's addresses, or to multicast, are its own input."""
        if not pkt.family:
            return "forward"
        if self.routing.is_local(pkt.family, pkt.dst) or is_multicast(pkt.family, pkt.dst):
            return "input"
        return "forward"

    def judge(self, pkt: Packet, hook: str, iif, oif, ct: CtVerdict | None,
              trace: bool, now: float) -> Decision:
        """The filter: the chain's first deciding rule, the statements that matched before it."""
        chain, iif, oif = self.place(pkt, hook, iif, oif)
        compiled = self.compiled
        ct_state = ct.state if ct is not None else None
        values = packet_values(pkt, compiled.iface_id(iif), compiled.iface_id(oif), ct_state,
                               ct_status(ct))
        if pkt.frag_offset and not self.stateful:  # judged alone, as nft reads it
            values.update(as_nft_reads(pkt))
        table = compiled.chains[chain]
        mask = compiled.matching(chain, values, now)
        rule = table.first_decider(mask)
        statements = tuple(table.statement_rules(mask, rule))
        verdict, reason = self.verdict_of(chain, rule, pkt, ct)
        steps = tuple(compiled.trace(chain, values, rule, mask)) if trace else ()
        reply = None
        if verdict == REJECT and self.may_answer(pkt, hook):
            reply = build_reject(pkt, reply=rule.reject_with if rule is not None else None)
        return Decision(verdict, chain, rule, ct_state, reason, iif, oif, reply=reply,
                        logs=log_events(chain, statements, rule), trace=steps,
                        statements=statements)

    def may_answer(self, pkt: Packet, hook: str) -> bool:
        """Linux's reject sends nothing for a TCP or UDP packet whose checksum is wrong
        (nf_reject_ip_tcphdr_get, nf_send_unreach check it, whatever nf_conntrack_checksum
        says); an adapter that cannot tell a bad checksum from a pending one (the lab) turns
        `verify_checksums` off and answers everything."""
        return (not self.verify_checksums or hook != Hook.PREROUTING or pkt.invalid is not None
                or pkt.proto not in (TCP, UDP) or transport_ok(pkt))

    def verdict_of(self, chain: str, rule: Rule | None, pkt: Packet, ct: CtVerdict | None):
        if rule is not None:
            return rule.verdict, f"rule {rule.index + 1} of {chain} matched"
        if pkt.invalid is not None and self.ruleset.stateful:
            return DROP, f"malformed packet ({pkt.invalid}) and no rule accepts it"
        policy = self.compiled.policy(chain)
        why = f": {ct.reason}" if ct is not None and ct.state == INVALID and ct.reason \
            else ""
        return policy, f"no rule matched: policy {chain} {policy}{why}"

    # -- the one exit ----------------------------------------------------------------------

    def leave(self, pkt: Packet, decision: Decision, first_fragment: tuple | None,
              now: float) -> Decision:
        """Count the packet (engine totals, rule and policy counters) and keep a first
        fragment's verdict for the fragments after it, whatever path decided it."""
        stats = self.stats
        stats.packets += 1
        if pkt.invalid is not None:
            stats.malformed += 1
        verdict = decision.verdict
        if verdict == ACCEPT:
            stats.accepted += 1
        elif verdict == DROP:
            stats.dropped += 1
        else:
            stats.rejected += 1
        counters, length = self.compiled.counters[decision.chain], pkt.length
        for rule in decision.statements:
            counters.count(rule, length)
        rule = decision.rule
        if rule is None:
            counters.policy_hits += 1
            counters.policy_bytes += length
        else:  # Counters.count inlined: every packet comes here
            counters.hits[rule.index] += 1
            counters.bytes[rule.index] += length
        if first_fragment is not None:
            self.fragments.remember(first_fragment, decision, now)
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


MEMO_LIMIT = 64  # remembered verdicts per connection: flag combinations are few


def log_events(chain: str, statement_rules: tuple[Rule, ...], decider: Rule | None):
    rules = [*statement_rules, *([decider] if decider is not None else [])]
    return tuple(LogEvent(r.log_prefix, chain, r, r.verdict, r.log_level)
                 for r in rules if r.logs)


def ct_status(ct: CtVerdict | None) -> int:
    """The connection's NAT bits as `ct status` tests them (fw/core/fields.py's encoding);
    MISSING without a connection. A new connection has its dnat bit in the filter chains and
    its snat bit only from its second packet on, as in Linux (SNAT is done after them)."""
    if ct is None or ct.conn is None:
        return MISSING
    binding = ct.conn.nat
    if binding is None:
        return 0
    bits = SNAT_BIT if "snat" in binding.kind else 0
    if "dnat" in binding.kind or binding.kind == "mapped":
        bits |= DNAT_BIT
    return bits


__all__ = ["Engine"]
