"""`check`'s warning for IPv6 files that drop neighbour discovery by policy.

The engine judges neighbour discovery by the chains, untracked, as Linux does; a file that
drops by policy on input or output and lets no neighbour solicitation or advertisement through
leaves IPv6 hosts unable to find the firewall (or the firewall them). Asked exactly, by handing
the engine the packets Linux would send on each interface.
"""

from __future__ import annotations

from collections.abc import Sequence

from fw import craft
from fw.core.protocols import ICMPV6, ND_TYPES
from fw.dsl.diagnostics import Diagnostic, Sources
from fw.engine.engine import Engine
from fw.model import AddrMatch, IcmpTypeMatch, ProtoMatch, RuleSet

ND_RULE = f"icmpv6 type {{ {', '.join(ND_TYPES)} }} accept"
# (hook, source, destination) of a solicitation and an advertisement, per chain
PROBES = {
    "input": [("prerouting", "fe80::2", "ff02::1:ff00:1", 135),
              ("prerouting", "fe80::2", "fe80::1", 136)],
    "output": [("output", "fe80::1", "ff02::1:ff00:2", 135),
               ("output", "fe80::1", "fe80::2", 136)],
}


def uses_ipv6(ruleset: RuleSet) -> bool:
    for rule in ruleset.rules():
        for match in rule.matches:
            if isinstance(match, AddrMatch | IcmpTypeMatch) and match.family == 6:
                return True
            if isinstance(match, ProtoMatch) and ICMPV6 in match.protos:
                return True
    return False


def neighbour_warnings(ruleset: RuleSet, interfaces: Sequence[str],
                       sources: Sources) -> list[Diagnostic]:
    if not uses_ipv6(ruleset):
        return []
    out = []
    for chain, probes in PROBES.items():
        policy = ruleset.policies[chain]
        if policy.verdict != "drop":
            continue
        refused = [name for name in interfaces if not passes(ruleset, chain, probes, name)]
        if refused:
            message = (f"'policy {chain} drop' drops IPv6 neighbour discovery (on "
                       f"{', '.join(refused)}): IPv6 hosts cannot find the firewall or be "
                       f"found by it; add to {chain}: {ND_RULE}")
            out.append(Diagnostic("warning", message, policy.span, sources.line(policy.span)))
    return out


def passes(ruleset: RuleSet, chain: str, probes: list, iface: str) -> bool:
    engine = Engine(ruleset)
    for hook, src, dst, icmp_type in probes:
        raw = craft.icmpv6(src, dst, icmp_type, payload=bytes(16), ttl=255)
        where = {"oif": iface} if hook == "output" else {"iif": iface}
        if engine.process(raw, hook=hook, **where).verdict != "accept":
            return False
    return True
