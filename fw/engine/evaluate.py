"""The rule set compiled once: chains as classifiers, counters, and the slow path for `explain`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fw.dsl.format import match_text
from fw.engine.classify import (
    MISSING,
    CompiledChain,
    accepted_values,
    addr_value,
    compile_chain,
    interface_ids,
)
from fw.engine.decision import TraceStep
from fw.engine.packet import ICMP, ICMPV6, TCP, Packet
from fw.model import CHAINS, CT_STATES, Rule, RuleSet


@dataclass(slots=True)
class Counters:
    """Hits and bytes per rule (by index) and for the policy, per chain."""

    hits: list[int]
    bytes: list[int]
    policy_hits: int = 0
    policy_bytes: int = 0

    @classmethod
    def sized(cls, n: int) -> Counters:
        return cls([0] * n, [0] * n)

    def count(self, rule: Rule | None, size: int) -> None:
        if rule is None:
            self.policy_hits += 1
            self.policy_bytes += size
        else:
            self.hits[rule.index] += 1
            self.bytes[rule.index] += size


def packet_values(pkt: Packet, iif: int, oif: int, ct_state: str | None) -> dict[str, int]:
    """The packet as the classifier's encoded field values (see classify.py)."""
    proto = pkt.proto
    values = {
        "iif": iif,
        "oif": oif,
        "proto": proto,
        "ct_state": CT_STATES.index(ct_state) if ct_state else MISSING,
    }
    if pkt.family:
        values["saddr"] = addr_value(pkt.family, pkt.src)
        values["daddr"] = addr_value(pkt.family, pkt.dst)
    if pkt.sport >= 0:
        values["sport"] = proto << 16 | pkt.sport
        values["dport"] = proto << 16 | pkt.dport
    if proto == TCP and pkt.l4_offset >= 0 and pkt.sport >= 0:
        values["tcp_flags"] = pkt.tcp_flags
    if proto in (ICMP, ICMPV6) and pkt.icmp_type >= 0:
        values["icmp_type"] = proto << 8 | pkt.icmp_type
    return values


@dataclass
class CompiledRuleSet:
    ruleset: RuleSet
    interfaces: Sequence[str]
    ifaces: dict[str, int] = field(init=False)
    chains: dict[str, CompiledChain] = field(init=False)
    counters: dict[str, Counters] = field(init=False)

    def __post_init__(self) -> None:
        self.ifaces = interface_ids([*self.ruleset.rules(), *self.ruleset.nat], self.interfaces)
        self.chains = {c: compile_chain(self.ruleset.chains[c], self.ifaces) for c in CHAINS}
        self.counters = {c: Counters.sized(len(self.ruleset.chains[c])) for c in CHAINS}

    def iface_id(self, name: str | None) -> int:
        return self.ifaces.get(name, MISSING) if name else MISSING

    def policy(self, chain: str) -> str:
        return self.ruleset.policies[chain].verdict

    def trace(self, chain: str, values: dict[str, int], decider: Rule | None) -> list[TraceStep]:
        """Every rule up to the decider, with the first match that failed (slow; explain only)."""
        steps = []
        for rule in self.ruleset.chains[chain]:
            failed = self.first_failure(rule, values)
            steps.append(TraceStep(rule, failed is None, failed))
            if rule is decider:
                break
        return steps

    def first_failure(self, rule: Rule, values: dict[str, int]) -> str | None:
        for match in rule.matches:
            name, accepted = accepted_values(match, self.ifaces)
            if values.get(name, MISSING) not in accepted:
                return match_text(match)
        return None
