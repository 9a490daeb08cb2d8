"""The model written back in the rules language: for `explain`, reports and round-trip tests."""

from __future__ import annotations

from collections.abc import Sequence

from fw.core.icmp_types import type_name
from fw.core.protocols import PROTO_NAMES, TCP_FLAGS
from fw.model import (
    AddrMatch,
    CtStateMatch,
    CtStatusMatch,
    IcmpTypeMatch,
    IfaceMatch,
    Limit,
    Match,
    PortMatch,
    ProtoMatch,
    TcpFlagsMatch,
)

FLAG_NAMES = {bit: name for name, bit in TCP_FLAGS.items() if name != "ecn"}


def words(items: Sequence[object]) -> str:
    """One value bare, several as a set literal."""
    shown = [str(i) for i in items]
    return shown[0] if len(shown) == 1 else "{ " + ", ".join(shown) + " }"


def match_text(match: Match | Limit) -> str:
    if isinstance(match, Limit):
        return str(match)
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
    if isinstance(match, CtStatusMatch):
        return f"ct status {op}{','.join(match.statuses)}"
    raise TypeError(match)  # pragma: no cover


def flags_text(set_bits: int, clear_bits: int) -> str:
    parts = [name for bit, name in FLAG_NAMES.items() if set_bits & bit]
    parts += [f"!{name}" for bit, name in FLAG_NAMES.items() if clear_bits & bit]
    return ",".join(parts)
