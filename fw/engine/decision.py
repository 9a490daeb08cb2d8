"""What the engine says about one packet: the verdict, who decided it and why."""

from __future__ import annotations

from dataclasses import dataclass

from fw.model import Rule


@dataclass(frozen=True, slots=True)
class LogEvent:
    """A `log` statement fired: what the daemon writes to its log and replay shows."""

    prefix: str
    chain: str
    rule: Rule
    verdict: str | None


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One rule tried by `explain`: whether it matched, and if not, the first match that failed."""

    rule: Rule
    matched: bool
    failed: str | None  # the text of the first failing match, e.g. "tcp dport 80"


@dataclass(frozen=True, slots=True)
class NatChange:
    """How NAT rewrote a packet (original and new addresses/ports) and which rule did it."""

    kind: str  # "snat", "dnat", "reply" (translated back), "hairpin"
    src: tuple[str, int | None]
    dst: tuple[str, int | None]
    new_src: tuple[str, int | None]
    new_dst: tuple[str, int | None]


@dataclass(slots=True)
class Decision:
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

    @property
    def accepted(self) -> bool:
        return self.verdict == "accept"

    def where(self) -> dict | None:
        """The deciding rule as {"file", "line"}, or None for a policy."""
        span = self.rule.span if self.rule is not None else None
        return {"file": span.file, "line": span.line} if span else None
