"""A rule set as the nftables script with the same meaning: `fwlab export`.

The script replaces fwlab's tables whole in one `nft -f` transaction: each table is declared
empty (so it exists), deleted, and written again, so it loads the same on a machine where it was
never loaded and on one running an older version. Where fwlab does something implicitly that
Linux does only when told, the script tells it:
- every rule counts (fwlab counts every rule's hits), so every rule carries `counter`;
- neighbour discovery and MLD are judged by the chains, untracked, as Linux does: the script
  says exactly what the file says about them (nothing added);
- `mode stateless` tracks nothing, so raw-priority chains mark every packet `notrack`;
- `reject` answers TCP with a RST and anything else with a port unreachable, as
  fw/engine/reject.py does, where nft's bare `reject` would send ICMP to TCP too;
- NAT is in fw/export/nft_nat.py (port ranges, hairpinning, what the kernel cannot do).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fw.core.icmp_types import code_name
from fw.dsl.diagnostics import Diagnostic
from fw.export.nft_match import comment_expr, exported_matches, implies_proto, match_expr, quoted
from fw.export.nft_nat import nat_table
from fw.model import (
    CHAINS,
    CtStateMatch,
    CtStatusMatch,
    Limit,
    RejectWith,
    Rule,
    RuleSet,
    Statement,
)

TABLE = "fwlab"
NAT_TABLE = "fwlab_nat"
REJECT_CHAIN = "fwlab_reject"
# what older exports put first in every chain; `fwlab import` still leaves it out
LINK_CONTROL_NOTE = "fwlab: neighbour discovery and MLD are not filtered (as ARP)"
TCP, ICMP_ANY = 6, "reject with icmpx port-unreachable"
# `mode stateful` means Linux tracks (and so reassembles) every packet, as the engine does; a
# file without `ct` matches or NAT gets this chain, never jumped to: its rule's ct expression is
# what makes nft turn conntrack on for the namespace.
CONNTRACK_CHAIN = "fwlab_conntrack"
CONNTRACK_ON = ('ct state untracked counter comment "fwlab: mode stateful: this turns conntrack '
                'on (never jumped to)"')


@dataclass(frozen=True)
class ExportResult:
    """The script, and what `--approximate` had to change (warnings with the rule's span)."""

    text: str
    warnings: list[Diagnostic] = field(default_factory=list)


def to_nft(ruleset: RuleSet, *, approximate: bool = False) -> ExportResult:
    """The nft script for `ruleset`; a FwlabError at the rule when the kernel cannot do what a
    NAT rule asks, unless `approximate` (then the nearest behaviour and a warning)."""
    warnings: list[Diagnostic] = []
    nat = nat_table(ruleset, NAT_TABLE, approximate=approximate, warnings=warnings)
    parts = [header(ruleset), replace_table("inet", TABLE, filter_body(ruleset))]
    parts.append(replace_table("ip", NAT_TABLE, nat))
    return ExportResult("\n".join(parts), warnings)


def header(ruleset: RuleSet) -> str:
    source = ", ".join(ruleset.files) or "a rule set"
    return (f"#!/usr/sbin/nft -f\n# fwlab export of {source} (mode {ruleset.mode}).\n"
            "# Loads with `nft -f`; replaces the tables inet fwlab and ip fwlab_nat whole.\n")


def replace_table(family: str, name: str, body: list[str]) -> str:
    """Declared empty, deleted, written again: one transaction, whether it existed or not."""
    lines = [f"table {family} {name} {{}}", f"delete table {family} {name}"]
    if body:
        lines += [f"table {family} {name} {{", *body, "}"]
    return "\n".join(lines) + "\n"


def filter_body(ruleset: RuleSet) -> list[str]:
    chains: list[list[str]] = []
    if not ruleset.stateful:
        chains += [notrack_chain("prerouting"), notrack_chain("output")]
    elif not uses_conntrack(ruleset):
        chains.append(chain(CONNTRACK_CHAIN, None, [CONNTRACK_ON]))
    if any(rule.verdict == "reject" and reject_stmt(rule) == f"goto {REJECT_CHAIN}"
           for rule in ruleset.rules()):
        chains.append(chain(REJECT_CHAIN, None, ["meta l4proto tcp reject with tcp reset",
                                                 ICMP_ANY]))
    for name in CHAINS:
        head = f"type filter hook {name} priority filter; policy {ruleset.policies[name].verdict};"
        chains.append(chain(name, head, list(map(rule_line, ruleset.chains[name]))))
    return [line for body in joined(chains) for line in body]


def uses_conntrack(ruleset: RuleSet) -> bool:
    """Does the script turn conntrack on by itself? nft does so in a namespace only for a table
    with a `ct` expression or NAT; without conntrack there is no reassembly either, and every
    fragment meets the rules alone (docs/fidelity.md)."""
    return bool(ruleset.nat) or any(isinstance(m, CtStateMatch | CtStatusMatch)
                                    for rule in ruleset.rules() for m in rule.matches)


def notrack_chain(hook: str) -> list[str]:
    head = f"type filter hook {hook} priority raw; policy accept;"
    return chain(f"raw_{hook}", head, ['notrack comment "fwlab: mode stateless tracks nothing"'])


def chain(name: str, head: str | None, rules: list[str]) -> list[str]:
    return [f"\tchain {name} {{", *([f"\t\t{head}"] if head else []),
            *(f"\t\t{r}" for r in rules), "\t}"]


def joined(chains: list[list[str]]) -> list[list[str]]:
    """Chains separated by a blank line, as `nft list ruleset` prints them."""
    return [body if i == 0 else ["", *body] for i, body in enumerate(chains)]


def rule_line(rule: Rule) -> str:
    """Matches, `counter`, the log statements, the verdict, the comment: one nft rule."""
    words = [match_expr(m) for m in exported_matches(rule.matches)]
    if rule.limit is not None:  # after the matches: fwlab asks a limit last
        words.append(limit_expr(rule.limit))
    words.append("counter")
    for statement in rule.statements:
        if statement.kind == "log":
            words.append(log_expr(statement))
    if rule.verdict is not None:
        words.append(reject_stmt(rule) if rule.verdict == "reject" else rule.verdict)
    if rule.comment:
        words.append(comment_expr(rule.comment))
    return " ".join(words)


def limit_expr(limit: Limit) -> str:
    over = "over " if limit.over else ""
    return f"limit rate {over}{limit.rate}/{limit.unit} burst {limit.burst} packets"


def log_expr(statement: Statement) -> str:
    words = ["log"]
    if statement.prefix:
        words.append(f"prefix {quoted(statement.prefix)}")
    if statement.level:
        words.append(f"level {statement.level}")
    return " ".join(words)


def reject_stmt(rule: Rule) -> str:
    """The reply fw/engine/reject.py sends: a RST for TCP, a port unreachable otherwise, or
    the one `reject with` chose (the rules language made sure it fits the rule)."""
    if rule.reject_with is not None:
        return reject_with_stmt(rule.reject_with)
    protos = implies_proto(rule.matches)
    if protos == {TCP}:
        return "reject with tcp reset"
    if protos is not None and TCP not in protos:
        return ICMP_ANY
    return f"goto {REJECT_CHAIN}"


def reject_with_stmt(reply: RejectWith) -> str:
    if reply.kind == "tcp-reset":
        return "reject with tcp reset"
    family = 4 if reply.kind == "icmp" else 6
    return f"reject with {reply.kind} type {code_name(family, reply.code)}"
