"""Generated traffic for comparing two rule sets packet by packet (import/export round trips).

`Mix(seed).run(engines)` sends the same conversations through every engine and returns, per
packet, what each one decided: TCP with sequence numbers that follow the conversation (so
connections really open and close, and some segments are out of window on purpose), UDP,
ICMP echo and errors quoting a flow, IPv4 and IPv6, every hook, to and through the firewall.
Replies are built from what the first engine let out, so NAT'd flows are answered at their
translated address, as a real far end would.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from fw import craft
from fw.engine.decision import Decision
from fw.engine.engine import Engine
from fw.engine.packet import decode

V4_HOSTS = ["192.0.2.2", "192.0.2.10", "192.0.2.11", "192.0.2.50", "192.0.2.130", "192.0.2.1",
            "203.0.113.1", "203.0.113.10", "203.0.113.66", "198.51.100.80", "198.51.100.25"]
V6_HOSTS = ["2001:db8:1::2", "2001:db8:1::80", "2001:db8:1::1", "2001:db8:2::1",
            "2001:db8:2::10", "2001:db8:3::66"]
PORTS = [22, 25, 53, 67, 80, 123, 443, 993, 3074, 5000, 8080, 1234, 33000, 40000, 61000]
TYPICAL = [("192.0.2.2", "203.0.113.10"), ("192.0.2.10", "198.51.100.80"),
           ("192.0.2.50", "203.0.113.66"), ("203.0.113.66", "203.0.113.1"),
           ("203.0.113.66", "192.0.2.50"), ("203.0.113.10", "198.51.100.25"),
           ("192.0.2.2", "203.0.113.1"), ("2001:db8:1::2", "2001:db8:2::10"),
           ("2001:db8:3::66", "2001:db8:1::80"), ("192.0.2.2", "192.0.2.1")]
CLIENT_PORTS = [40000, 40000, 33000, 50000, 1234, 700, 3074, 8080]
TCP_FLAGS = ["S", "SA", "A", "PA", "FA", "R", "RA", "F", "SF", "", "U"]
# Conversations as (side, what): the usual shapes; the mix then perturbs them.
SCRIPTS = {
    "tcp": [(0, "S"), (1, "SA"), (0, "A"), (0, "PA"), (1, "PA"), (0, "A"), (0, "FA"),
            (1, "FA"), (0, "A")],
    "udp": [(0, ""), (1, ""), (0, ""), (1, "")],
    "echo": [(0, ""), (1, ""), (0, ""), (1, "")],
    "other": [(0, ""), (1, "")],
}
IFACES = [None, None, None, "lan", "wan", "dmz"]


@dataclass
class Flow:
    proto: str
    ends: list[tuple[str, int]]  # [client, server] as the client addresses them
    step: int = 0
    hook: tuple[str, str | None] = ("prerouting", None)
    seq: list[int] = field(default_factory=lambda: [1000, 7000])
    seen: list[tuple[str, int] | None] = field(default_factory=lambda: [None, None])
    last: list[bytes | None] = field(default_factory=lambda: [None, None])


class Mix:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.flows: list[Flow] = []
        self.now = 1000.0

    def run(self, engines: list[Engine], count: int) -> list[list[tuple]]:
        """Per packet, each engine's outcome (see `outcome`)."""
        results = []
        for _ in range(count):
            raw, hook, iif, flow, side = self.next_packet()
            self.now += self.rng.choice([0.01] * 6 + [0.5, 2.0, 45.0, 200.0])
            decisions = [e.process(raw, hook=hook, iif=iif, now=self.now) for e in engines]
            results.append([outcome(d) for d in decisions])
            self.learn(flow, side, decisions[0], raw)
        return results

    def next_packet(self) -> tuple[bytes, str, str | None, Flow, int]:
        rng = self.rng
        live = [f for f in self.flows if f.step < len(SCRIPTS[f.proto])]
        if not live or rng.random() < 0.15:
            self.flows = [*self.flows[-30:], self.new_flow()]
            live = [self.flows[-1]]
        flow = rng.choice(live[-4:])
        side, flags = SCRIPTS[flow.proto][flow.step]
        flow.step += 1
        if rng.random() < 0.15:  # a perturbation: the other side, other flags, a replay
            side, flags = rng.randrange(2), rng.choice(TCP_FLAGS)
            flow.step -= rng.randrange(2)
        hook, iif = flow.hook if side == 0 else ("prerouting", None)
        if rng.random() < 0.05:
            hook = "output" if hook == "prerouting" else "prerouting"
            iif = None
        return self.build(flow, side, flags), hook, iif, flow, side

    def new_flow(self) -> Flow:
        rng = self.rng
        proto = rng.choice(["tcp", "tcp", "tcp", "udp", "udp", "echo", "other"])
        if rng.random() < 0.5:  # what the example rule sets are about: the LAN going out, the
            a, b = rng.choice(TYPICAL)  # internet coming in through a forward
            flow = Flow(proto, [(a, rng.choice(CLIENT_PORTS)), (b, rng.choice(PORTS[:12]))])
        else:
            a, b = rng.sample(V6_HOSTS if rng.random() < 0.25 else V4_HOSTS, 2)
            flow = Flow(proto, [(a, rng.choice(PORTS)), (b, rng.choice(PORTS))])
        hook = "output" if rng.random() < 0.08 else "prerouting"
        flow.hook = (hook, None if hook == "output" else rng.choice(IFACES))
        return flow

    def endpoints(self, flow: Flow, side: int) -> tuple[tuple[str, int], tuple[str, int]]:
        """The sender and where it sends: a reply goes to where the other side was seen."""
        if side == 0:
            return flow.ends[0], flow.ends[1]
        return flow.seen[1] or flow.ends[1], flow.seen[0] or flow.ends[0]

    def build(self, flow: Flow, side: int, flags: str) -> bytes:
        rng = self.rng
        (src, sport), (dst, dport) = self.endpoints(flow, side)
        if rng.random() < 0.06 and flow.last[1 - side] is not None:
            quoted = flow.last[1 - side][:48]  # an ICMP error about what the other side sent
            return craft.icmp(src, dst, 1 if ":" in src else 3, 4 if ":" in src else 3,
                              payload=quoted)
        if flow.proto == "tcp":
            return self.tcp(flow, side, flags, (src, sport), (dst, dport))
        if flow.proto == "udp":
            return craft.udp(src, dst, sport, dport, payload=b"x" * rng.randrange(4))
        if flow.proto == "echo":
            return craft.icmp_echo(src, dst, 8 if side == 0 else 0,
                                   id=sport if side == 0 else dport, seq=1)
        if rng.random() < 0.5:
            return craft.ip(src, dst, 47, b"\0" * 8)
        return craft.icmp(src, dst, rng.choice([3, 11, 13, 17, 5, 135, 136, 2, 1, 128]))

    def tcp(self, flow: Flow, side: int, flags: str, src_end: tuple[str, int],
            dst_end: tuple[str, int]) -> bytes:
        rng = self.rng
        (src, sport), (dst, dport) = src_end, dst_end
        seq = flow.seq[side] if rng.random() < 0.93 else rng.randrange(1 << 32)
        ack = flow.seq[1 - side] if "A" in flags else 0
        data = b"d" * (rng.choice([0, 0, 10]) if "S" not in flags else 0)
        flow.seq[side] = seq + len(data) + ("S" in flags) + ("F" in flags)
        return craft.tcp(src, dst, sport, dport, flags, seq=seq, ack=ack, payload=data)

    def learn(self, flow: Flow, side: int, decision: Decision, raw: bytes) -> None:
        """Where the packet arrived, as the receiver saw it: replies go there."""
        sent = decision.packet or raw
        flow.last[side] = sent
        if decision.verdict != "accept" or side != 0:
            return
        pkt = decode(sent)
        if not pkt.family:
            return
        ports = (pkt.sport, pkt.dport) if pkt.sport >= 0 else (pkt.icmp_id, pkt.icmp_id)
        if ports[0] >= 0 and not pkt.is_icmp_error:
            flow.seen[0] = (address_text(pkt.family, pkt.src), ports[0])
            flow.seen[1] = (address_text(pkt.family, pkt.dst), ports[1])


def address_text(family: int, value: int) -> str:
    from ipaddress import IPv4Address, IPv6Address

    return str(IPv4Address(value) if family == 4 else IPv6Address(value))


def outcome(d: Decision) -> tuple:
    """Everything a rule set decides about a packet that another rule set must decide alike."""
    nat = tuple(str(change) for change in d.nat)
    logs = tuple(event.prefix for event in d.logs)
    rule = d.rule.index if d.rule is not None else None
    return (d.verdict, d.ct_state, d.chain, rule, d.packet, d.reply, nat, logs)
