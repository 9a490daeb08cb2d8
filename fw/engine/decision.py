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
    """How NAT rewrote a packet: (src, sport, dst, dport) before and after, as ints (formatting
    waits until someone asks: most translated packets are never shown)."""

    kind: str  # "snat", "dnat", "dnat+snat", "mapped", "reply", "icmp-error"
    family: int
    before: tuple[int, int, int, int]
    after: tuple[int, int, int, int]

    def as_json(self) -> dict:
        from fw.engine.views import endpoint

        def ends(t: tuple[int, int, int, int]) -> dict:
            return {"src": endpoint(self.family, t[0], t[1]),
                    "dst": endpoint(self.family, t[2], t[3])}

        return {"kind": self.kind, "from": ends(self.before), "to": ends(self.after)}

    def __str__(self) -> str:
        a, b = self.as_json()["from"], self.as_json()["to"]
        return f"{self.kind}: {a['src']} -> {a['dst']}  =>  {b['src']} -> {b['dst']}"


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

    def translated(self, packet: bytes, nat: tuple[NatChange, ...]) -> Decision:
        """This decision for a translated packet (a remembered decision is shared: copy it)."""
        return Decision(self.verdict, self.chain, self.rule, self.ct_state, self.reason, self.iif,
                        self.oif, packet, self.reply, self.logs, nat, self.trace)

    @property
    def accepted(self) -> bool:
        return self.verdict == "accept"

    def where(self) -> dict | None:
        """The deciding rule as {"file", "line"}, or None for a policy."""
        span = self.rule.span if self.rule is not None else None
        return {"file": span.file, "line": span.line} if span else None
