"""What the engine says about one packet: the verdict, who decided it and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from fw.model import Limit, Match, Rule


@dataclass(frozen=True, slots=True)
class LogEvent:
    """A `log` statement fired: what the daemon writes to its log and replay shows."""

    prefix: str
    chain: str
    rule: Rule
    verdict: str | None
    level: str | None = None  # nft's log level; None: the default (warn)


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One rule tried by `explain`: whether it matched, and if not, the first match that failed."""

    rule: Rule
    matched: bool
    failed: Match | Limit | None  # the first match that failed (views print it: "tcp dport 80")


@dataclass(frozen=True, slots=True)
class NatChange:
    """How NAT rewrote a packet: (src, sport, dst, dport) before and after, as ints (formatting
    waits until someone asks: most translated packets are never shown)."""

    kind: str  # "snat", "dnat", "dnat+snat", "mapped", "reply", "icmp-error"
    family: int
    before: tuple[int, int, int, int]
    after: tuple[int, int, int, int]
    why: str = ""  # for a new connection to a pool: the member chosen and why


class Decision(NamedTuple):
    """Immutable: a remembered decision is handed out for many packets, so nobody may change
    it; a stage that changes the outcome makes a new one (`_replace`). A named tuple rather
    than a frozen dataclass because every translated packet makes one, and a tuple is built in
    one step where a frozen dataclass sets each field through object.__setattr__."""

    verdict: str  # accept / drop / reject
    chain: str
    rule: Rule | None  # None: the chain's policy (or the engine itself, see reason)
    ct_state: str | None  # None in stateless mode
    reason: str
    iif: str | None = None
    oif: str | None = None
    packet: bytes | None = None  # the bytes to send on, when NAT rewrote them
    reply: bytes | None = None  # what a reject sends back (RST / ICMP unreachable)
    logs: tuple[LogEvent, ...] = ()
    nat: tuple[NatChange, ...] = ()
    trace: tuple[TraceStep, ...] = ()
    statements: tuple[Rule, ...] = ()  # verdict-less rules that matched first (counted too)

    def translated(self, packet: bytes, nat: tuple[NatChange, ...]) -> Decision:
        """This decision for a packet NAT rewrote (built in one step: it is the NAT hot path)."""
        return tuple.__new__(Decision, (*self[:7], packet, self[8], self[9], nat, *self[11:]))

    def untranslated(self) -> Decision:
        """The verdict alone, to remember for the connection's later packets."""
        return self if self.packet is None and not self.nat else self._replace(packet=None, nat=())

    @property
    def accepted(self) -> bool:
        return self.verdict == "accept"

    def where(self) -> dict | None:
        """The deciding rule as {"file", "line"}, or None for a policy."""
        span = self.rule.span if self.rule is not None else None
        return {"file": span.file, "line": span.line} if span else None
