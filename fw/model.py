"""The rule set as every part of fwlab sees it: parsed, defines resolved, checked.

Defines are substituted away (a rule holds the values, not the names), so the engine, the analysis
and the exporter never look anything up. Spans are excluded from dumps so golden files speak about
meaning, not positions.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from fw.core.icmp_types import code_name
from fw.core.vocab import CtState, CtStatus, NatBehaviour
from fw.errors import Span

Mode = Literal["stateful", "stateless"]
ChainName = Literal["input", "forward", "output"]
Verdict = Literal["accept", "drop", "reject"]

CHAINS: tuple[ChainName, ...] = ("input", "forward", "output")


def span_field() -> Span | None:
    """A source position that stays out of dumps and reprs."""
    return Field(default=None, exclude=True, repr=False)


class Node(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)


class PortRange(Node):
    lo: int
    hi: int

    def __contains__(self, port: int) -> bool:
        return self.lo <= port <= self.hi

    def __str__(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"


def unless_none() -> object:
    """An optional field that stays out of dumps while unset (golden dumps of files that do not
    use it stay as they were)."""
    return Field(default=None, exclude_if=lambda value: value is None)


class AddrRange(Node):
    """`192.0.2.10-192.0.2.20`: every address from `lo` to `hi`, both included."""

    lo: IPv4Address | IPv6Address
    hi: IPv4Address | IPv6Address

    @property
    def version(self) -> int:
        return self.lo.version

    def __str__(self) -> str:
        return f"{self.lo}-{self.hi}"


Addresses = IPv4Network | IPv6Network | AddrRange


class IfaceMatch(Node):
    """`iif lan`, `oif { wan, dmz }`."""

    kind: Literal["iif", "oif"]
    names: tuple[str, ...]
    negate: bool = False
    span: Span | None = span_field()


class AddrMatch(Node):
    """`ip saddr 192.0.2.0/24`, `ip6 daddr != $servers`: never matches the other family.
    `prefixes` holds prefixes and address ranges."""

    kind: Literal["saddr", "daddr"]
    family: Literal[4, 6]
    prefixes: tuple[Addresses, ...]
    negate: bool = False
    span: Span | None = span_field()


class ProtoMatch(Node):
    """`proto { tcp, udp }`, as protocol numbers."""

    kind: Literal["proto"] = "proto"
    protos: tuple[int, ...]
    negate: bool = False
    span: Span | None = span_field()


class PortMatch(Node):
    """`tcp dport { 80, 443 }`: implies the protocol."""

    kind: Literal["sport", "dport"]
    proto: Literal[6, 17]
    ranges: tuple[PortRange, ...]
    negate: bool = False
    span: Span | None = span_field()


class TcpFlagsMatch(Node):
    """`tcp flags syn,!ack`: the flags in `set` are set and those in `clear` are clear."""

    kind: Literal["tcp_flags"] = "tcp_flags"
    set: int
    clear: int
    negate: bool = False
    span: Span | None = span_field()


class IcmpTypeMatch(Node):
    """`icmp type echo-request` (family 4) or `icmpv6 type ...` (family 6): implies the protocol."""

    kind: Literal["icmp_type"] = "icmp_type"
    family: Literal[4, 6]
    types: tuple[int, ...]
    negate: bool = False
    span: Span | None = span_field()


class CtStateMatch(Node):
    kind: Literal["ct_state"] = "ct_state"
    states: tuple[CtState, ...]
    negate: bool = False
    span: Span | None = span_field()


class CtStatusMatch(Node):
    """`ct status dnat`: the connection's NAT bits; several names match any of them."""

    kind: Literal["ct_status"] = "ct_status"
    statuses: tuple[CtStatus, ...]
    negate: bool = False
    span: Span | None = span_field()


Match = Annotated[
    IfaceMatch | AddrMatch | ProtoMatch | PortMatch | TcpFlagsMatch | IcmpTypeMatch | CtStateMatch
    | CtStatusMatch,
    Field(discriminator="kind"),
]

LogLevel = Literal["emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"]
LOG_LEVELS: tuple[str, ...] = LogLevel.__args__
LimitUnit = Literal["second", "minute", "hour", "day"]
UNIT_SECONDS: dict[str, int] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


class Statement(Node):
    """`counter` or `log [prefix "..."] [level LEVEL]`: they never end evaluation."""

    kind: Literal["counter", "log"]
    prefix: str | None = None
    level: LogLevel | None = unless_none()


class Limit(Node):
    """`limit rate [over] N/unit [burst M packets]`: a token bucket of `burst` packets refilled
    at `rate` per `unit`, as nft's limit. The rule matches while tokens last (with `over`: only
    when they have run out). Not a field test: the engine asks it after the rule's matches."""

    rate: int
    unit: LimitUnit
    burst: int = 5
    over: bool = False
    span: Span | None = span_field()

    def __str__(self) -> str:
        over = "over " if self.over else ""
        burst = f" burst {self.burst} packets" if self.burst != 5 else ""
        return f"limit rate {over}{self.rate}/{self.unit}{burst}"


class RejectWith(Node):
    """`reject with tcp reset | icmp type NAME | icmpv6 type NAME`: the reply chosen."""

    kind: Literal["tcp-reset", "icmp", "icmpv6"]
    code: int = 0  # the ICMP / ICMPv6 destination-unreachable code

    def __str__(self) -> str:
        if self.kind == "tcp-reset":
            return "with tcp reset"
        return f"with {self.kind} type {code_name(4 if self.kind == 'icmp' else 6, self.code)}"


class Rule(Node):
    chain: ChainName
    index: int
    matches: tuple[Match, ...] = ()
    statements: tuple[Statement, ...] = ()
    verdict: Verdict | None = None
    comment: str | None = None
    reject_with: RejectWith | None = unless_none()
    limit: Limit | None = unless_none()
    text: str = Field(default="", exclude=True, repr=False)
    span: Span | None = span_field()

    @property
    def logs(self) -> bool:
        return any(s.kind == "log" for s in self.statements)

    @property
    def log_prefix(self) -> str:
        return next((s.prefix or "" for s in self.statements if s.kind == "log"), "")

    @property
    def log_level(self) -> str | None:
        return next((s.level for s in self.statements if s.kind == "log"), None)


PoolMethod = Literal["round-robin", "random", "hash", "source-hash"]
POOL_METHODS: tuple[str, ...] = ("round-robin", "random", "hash", "source-hash")


class PoolMember(Node):
    """One backend of a pool: its address, its own port if it has one, its share."""

    addr: IPv4Address
    port: int | None = None
    weight: int = 1
    span: Span | None = span_field()

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        weight = f" weight {self.weight}" if self.weight != 1 else ""
        return f"{self.addr}{port}{weight}"


class Pool(Node):
    """`dnat to { A, B:8080 weight 2 }:PORT METHOD sticky N seconds`: a layer-4 load balancer.

    A member's own port wins over the pool's, which wins over the packet's own port."""

    members: tuple[PoolMember, ...]
    port: int | None = None
    method: PoolMethod = "round-robin"
    sticky: int | None = None  # seconds a client keeps its backend after its last connection

    def port_of(self, member: PoolMember, dport: int) -> int:
        if member.port is not None:
            return member.port
        return self.port if self.port is not None else dport


class NatRule(Node):
    """`oif wan masquerade`, `snat to A[:P-Q]`, `dnat to A[:P]` with RFC 4787 behaviours, or
    `dnat to POOL` (then `pool` is set and `to_addr` is None)."""

    action: Literal["masquerade", "snat", "dnat"]
    index: int
    matches: tuple[Match, ...] = ()
    to_addr: IPv4Address | None = None
    to_ports: PortRange | None = None
    mapping: NatBehaviour = NatBehaviour.ENDPOINT_INDEPENDENT
    filtering: NatBehaviour = NatBehaviour.ADDRESS_PORT_DEPENDENT
    pool: Pool | None = None
    comment: str | None = None
    text: str = Field(default="", exclude=True, repr=False)
    span: Span | None = span_field()

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict:
        """A rule without a pool dumps as it did before pools existed (golden files)."""
        data = handler(self)
        if isinstance(data, dict) and data.get("pool", 0) is None:
            del data["pool"]
        return data


class Policy(Node):
    verdict: Literal["accept", "drop"]
    explicit: bool = True
    span: Span | None = span_field()


class RuleSet(Node):
    mode: Mode
    policies: dict[ChainName, Policy]
    chains: dict[ChainName, tuple[Rule, ...]]
    nat: tuple[NatRule, ...] = ()
    files: tuple[str, ...] = Field(default=(), exclude=True)

    @property
    def stateful(self) -> bool:
        return self.mode == "stateful"

    def rules(self) -> list[Rule]:
        return [rule for chain in CHAINS for rule in self.chains[chain]]
