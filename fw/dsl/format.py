"""The model written back in the rules language: for `explain`, reports and round-trip tests."""

from __future__ import annotations

from collections.abc import Sequence

from fw.icmp_types import type_name
from fw.model import (
    TCP_FLAGS,
    AddrMatch,
    CtStateMatch,
    IcmpTypeMatch,
    IfaceMatch,
    Match,
    NatRule,
    PortMatch,
    ProtoMatch,
    Rule,
    TcpFlagsMatch,
)

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
FLAG_NAMES = {bit: name for name, bit in TCP_FLAGS.items() if name != "ecn"}


def words(items: Sequence[object]) -> str:
    """One value bare, several as a set literal."""
    shown = [str(i) for i in items]
    return shown[0] if len(shown) == 1 else "{ " + ", ".join(shown) + " }"


def match_text(match: Match) -> str:
    op = "!= " if match.negate else ""
    if isinstance(match, IfaceMatch):
        return f"{match.kind} {op}{words(match.names)}"
    if isinstance(match, AddrMatch):
        return f"{'ip' if match.family == 4 else 'ip6'} {match.kind} {op}{words(match.prefixes)}"
    if isinstance(match, ProtoMatch):
        return f"proto {op}{words([PROTO_NAMES.get(p, p) for p in match.protos])}"
    if isinstance(match, PortMatch):
        return f"{PROTO_NAMES[match.proto]} {match.kind} {op}{words(match.ranges)}"
    if isinstance(match, TcpFlagsMatch):
        return f"tcp flags {op}{flags_text(match.set, match.clear)}"
    if isinstance(match, IcmpTypeMatch):
        word = "icmp" if match.family == 4 else "icmpv6"
        return f"{word} type {op}{words([type_name(match.family, t) for t in match.types])}"
    if isinstance(match, CtStateMatch):
        return f"ct state {op}{','.join(match.states)}"
    raise TypeError(match)  # pragma: no cover


def flags_text(set_bits: int, clear_bits: int) -> str:
    parts = [name for bit, name in FLAG_NAMES.items() if set_bits & bit]
    parts += [f"!{name}" for bit, name in FLAG_NAMES.items() if clear_bits & bit]
    return ",".join(parts)


def rule_text(rule: Rule) -> str:
    parts = [match_text(m) for m in rule.matches]
    for statement in rule.statements:
        prefix = f' prefix "{statement.prefix}"' if statement.prefix else ""
        parts.append(f"{statement.kind}{prefix}")
    parts += [rule.verdict] if rule.verdict else []
    parts += [f'comment "{rule.comment}"'] if rule.comment else []
    return " ".join(parts)


def nat_rule_text(rule: NatRule) -> str:
    parts = [match_text(m) for m in rule.matches]
    target = f" to {rule.to_addr}" if rule.to_addr else ""
    target += f":{rule.to_ports}" if rule.to_ports else ""
    parts.append(f"{rule.action}{target}")
    if rule.action != "dnat":
        parts.append(f"mapping {rule.mapping} filtering {rule.filtering}")
    return " ".join(parts)
