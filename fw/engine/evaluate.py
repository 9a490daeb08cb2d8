"""The rule set compiled once: chains as classifiers, counters, and the slow path for `explain`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fw.core.fields import MISSING, accepted_values, interface_ids
from fw.engine.classify import CompiledChain, compile_chain
from fw.engine.decision import TraceStep
from fw.engine.limits import ChainLimits
from fw.model import CHAINS, Limit, Match, Rule, RuleSet


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


@dataclass
class CompiledRuleSet:
    ruleset: RuleSet
    interfaces: Sequence[str]
    ifaces: dict[str, int] = field(init=False)
    chains: dict[str, CompiledChain] = field(init=False)
    counters: dict[str, Counters] = field(init=False)
    limits: dict[str, ChainLimits] = field(init=False)

    def __post_init__(self) -> None:
        self.ifaces = interface_ids([*self.ruleset.rules(), *self.ruleset.nat], self.interfaces)
        self.chains = {c: compile_chain(self.ruleset.chains[c], self.ifaces) for c in CHAINS}
        self.counters = {c: Counters.sized(len(self.ruleset.chains[c])) for c in CHAINS}
        self.limits = {c: ChainLimits(self.ruleset.chains[c]) for c in CHAINS}

    def matching(self, chain: str, values: dict[str, int], now: float) -> int:
        """Bitmap of the chain's rules that match, their limits asked (spending tokens)."""
        table = self.chains[chain]
        mask = table.matching(values)
        limits = self.limits[chain]
        if mask & limits.mask:
            mask = limits.apply(mask, table.verdict_mask, now)
        return mask

    def iface_id(self, name: str | None) -> int:
        return self.ifaces.get(name, MISSING) if name else MISSING

    def policy(self, chain: str) -> str:
        return self.ruleset.policies[chain].verdict

    def trace(self, chain: str, values: dict[str, int], decider: Rule | None,
              mask: int = -1) -> list[TraceStep]:
        """Every rule up to the decider, with the first match that failed (slow; explain only);
        `mask` says which rules matched, so a limit that refused the packet is named."""
        steps = []
        for rule in self.ruleset.chains[chain]:
            failed: Match | Limit | None = self.first_failure(rule, values)
            if failed is None and rule.limit is not None and not mask >> rule.index & 1:
                failed = rule.limit
            steps.append(TraceStep(rule, failed is None, failed))
            if rule is decider:
                break
        return steps

    def first_failure(self, rule: Rule, values: dict[str, int]) -> Match | None:
        for match in rule.matches:
            name, accepted = accepted_values(match, self.ifaces)
            if values.get(name, MISSING) not in accepted:
                return match
        return None
