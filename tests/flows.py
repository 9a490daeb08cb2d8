"""Flow scripts for engine tests: a test reads like the exchange it checks.

    talk = Tcp(engine, "192.0.2.2:40000", "203.0.113.10:80")
    assert talk.client("S") == "accept new"
    assert talk.server("SA") == "accept established"

Sequence numbers follow the conversation (SYN and FIN count one, data its length), so a test
only says what a packet is, not its arithmetic; `seq=`/`ack=` override for forged segments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import ip_address

from fw.core.icmp_types import ICMP_CODES, ICMPV6_CODES
from fw.core.protocols import ACK, FIN, SYN, TCP, flag_letters
from fw.engine.decision import Decision
from fw.engine.engine import Engine
from fw.engine.packet import decode
from fw.packetspec import parse_packet


@dataclass
class Clock:
    now: float = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def outcome(d: Decision) -> str:
    """`accept new`, `drop invalid`, `accept -` (stateless): what the tests compare."""
    return f"{d.verdict} {d.ct_state or '-'}"


def split(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


def endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class Tcp:
    """One TCP conversation step by step: `talk.client("S") == "accept new"`. Each segment is
    written in explain's syntax and sent through a Playbook, so it is the playbooks' dialect
    with the sequence numbers kept here (a test can forge them: `seq=`, `ack=`)."""

    engine: Engine
    client_end: str
    server_end: str
    clock: Clock = field(default_factory=Clock)
    next_seq: list[int] = field(default_factory=lambda: [1000, 5000])
    last: Decision | None = None

    def client(self, flags: str, data: int = 0, **kw: int) -> str:
        return self.send(0, flags, data, **kw)

    def server(self, flags: str, data: int = 0, **kw: int) -> str:
        return self.send(1, flags, data, **kw)

    def send(self, side: int, flags: str, data: int, seq: int | None = None,
             ack: int | None = None, window: int = 64240) -> str:
        (src, sport), (dst, dport) = self.ends(side)
        seq = self.next_seq[side] if seq is None else seq
        ack = self.next_seq[1 - side] if ack is None and "A" in flags else (ack or 0)
        self.next_seq[side] = seq + data + ("S" in flags) + ("F" in flags)
        self.last = Playbook(self.engine, self.clock).send(
            f"tcp {endpoint(src, sport)} -> {endpoint(dst, dport)} flags {flags or 0} "
            f"seq {seq} ack {ack} window {window} len {data}")
        return outcome(self.last)

    def ends(self, side: int) -> tuple[tuple[str, int], tuple[str, int]]:
        ends = (split(self.client_end), split(self.server_end))
        return (ends[0], ends[1]) if side == 0 else (ends[1], ends[0])


@dataclass
class Udp:
    """A UDP flow step by step: `flow.client() == "accept new"`, through a Playbook."""

    engine: Engine
    client_end: str
    server_end: str
    clock: Clock = field(default_factory=Clock)
    last: Decision | None = None

    def client(self, data: bytes = b"q") -> str:
        return self.send(self.client_end, self.server_end, data)

    def server(self, data: bytes = b"a") -> str:
        return self.send(self.server_end, self.client_end, data)

    def send(self, src: str, dst: str, data: bytes) -> str:
        packet = f"udp {endpoint(*split(src))} -> {endpoint(*split(dst))} len {len(data)}"
        self.last = Playbook(self.engine, self.clock).send(packet)
        return outcome(self.last)


def send(engine: Engine, raw: bytes, clock: Clock, **kw) -> str:
    return outcome(engine.process(raw, now=clock.advance(0.01), **kw))


# -- playbooks: a conversation and what the engine must say to each packet ---------------------

class Playbook:
    """A conversation as a script, in the spirit of mitmproxy's Playbook tests: each line is a
    packet in `fwlab explain`'s syntax, `=>`, and what the engine must answer:

        tcp 192.0.2.2:41000 -> 203.0.113.10:80 flags S
            => accept new; nat 203.0.113.1:41000 -> 203.0.113.10:80
        tcp 203.0.113.10:80 -> 203.0.113.1:41000 flags SA => accept established
        udp 203.0.113.66:9 -> 192.0.2.2:7                 => reject -; reply icmp port-unreachable
        tcp 203.0.113.66:1 -> 192.0.2.2:22 flags S        => drop new; log fwd-drop; rule 11

    A step may run over several lines; it ends with its `=>` part. The first part is the
    verdict and the ct state (`-` when stateless); after it, any of
    `nat SRC -> DST` (where the packet leaves to), `log PREFIX` (the log statements that fired),
    `reply tcp FLAGS` / `reply icmp NAME` (what a reject sends back) and `rule LINE` (the
    deciding rule's line, or `policy`). TCP sequence and acknowledgement numbers follow the
    conversation, NAT included, unless the line gives `seq`/`ack`.
    """

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self.engine, self.clock = engine, clock or Clock()
        self.sequences = Sequences()
        self.decisions: list[Decision] = []

    def __call__(self, script: str) -> Playbook:
        pending = ""
        for raw in script.splitlines():
            pending = f"{pending} {raw.split('#')[0].strip()}".strip()
            if "=>" in pending:
                self.step(pending)
                pending = ""
        assert not pending, f"a playbook line needs '=> outcome': {pending!r}"
        return self

    def send(self, packet: str) -> Decision:
        """One packet through the engine, its decision unchecked (the step helpers' way)."""
        raw = parse_packet(self.sequences.fill(packet.strip()))
        decision = self.engine.process(raw, now=self.clock.advance(0.01))
        self.sequences.learn(raw, decision)
        self.decisions.append(decision)
        return decision

    def step(self, line: str) -> Decision:
        packet, arrow, expected = line.partition("=>")
        assert arrow, f"a playbook line needs '=> outcome': {line!r}"
        decision = self.send(packet)
        wanted = [part.strip() for part in expected.split(";")]
        actual = [observed(decision, part) for part in wanted]
        assert actual == wanted, f"{packet.strip()}: {decision.reason}"
        return decision


def observed(d: Decision, wanted: str) -> str:
    """What the decision says, in the words of one expected part (so the parts compare)."""
    word = wanted.split(" ", 1)[0]
    if word == "nat":
        if d.packet is None:
            return "nat (none)"
        pkt = decode(d.packet)
        ends = endpoint_text(pkt, pkt.src, pkt.sport), endpoint_text(pkt, pkt.dst, pkt.dport)
        return f"nat {ends[0]} -> {ends[1]}"
    if word == "log":
        return "log " + ",".join(e.prefix.strip() for e in d.logs)
    if word == "reply":
        return "reply " + reply_text(d.reply)
    if word == "rule":
        return f"rule {d.rule.span.line}" if d.rule is not None and d.rule.span else "rule policy"
    return outcome(d)


def endpoint_text(pkt, addr: int, port: int) -> str:
    text = str(ip_address(addr))
    if pkt.sport < 0:
        return text
    return f"[{text}]:{port}" if pkt.family == 6 else f"{text}:{port}"


def reply_text(reply: bytes | None) -> str:
    if reply is None:
        return "(none)"
    pkt = decode(reply)
    if pkt.proto == TCP:
        return f"tcp flags {flag_letters(pkt.tcp_flags)}"
    kind = "icmp" if pkt.family == 4 else "icmpv6"
    return f"{kind} {ICMP_CODE_NAMES[pkt.family].get(pkt.icmp_code, pkt.icmp_code)}"


ICMP_CODE_NAMES = {4: {v: k for k, v in ICMP_CODES.items()},
                   6: {v: k for k, v in ICMPV6_CODES.items()}}


@dataclass
class Sequences:
    """Each TCP end's next sequence number, by the address and port it sends from; a NAT'd end
    is known under its translated address too, so the far side acknowledges it right."""

    next_seq: dict[tuple[int, int], int] = field(default_factory=dict)
    alias: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)

    def fill(self, packet: str) -> str:
        if not packet.startswith("tcp ") or " seq " in f"{packet} ":
            return packet
        pkt = decode(parse_packet(packet))
        me, peer = self.end(pkt.src, pkt.sport), self.end(pkt.dst, pkt.dport)
        seq = self.next_seq.setdefault(me, 1000 + 100_000 * len(self.next_seq))
        ack = self.next_seq.get(peer, 0) if pkt.tcp_flags & ACK else 0
        extra = f" seq {seq}" + ("" if " ack " in f"{packet} " else f" ack {ack}")
        return packet + extra

    def end(self, addr: int, port: int) -> tuple[int, int]:
        return self.alias.get((addr, port), (addr, port))

    def learn(self, raw: bytes, d: Decision) -> None:
        pkt = decode(raw)
        if pkt.proto != TCP:
            return
        me = self.end(pkt.src, pkt.sport)
        grown = pkt.payload_len + bool(pkt.tcp_flags & SYN) + bool(pkt.tcp_flags & FIN)
        self.next_seq[me] = max(self.next_seq.get(me, 0), (pkt.seq + grown) & 0xFFFFFFFF)
        for change in d.nat:
            src, sport, dst, dport = change.after
            b_src, b_sport, b_dst, b_dport = change.before
            self.alias.setdefault((src, sport), self.end(b_src, b_sport))
            self.alias.setdefault((dst, dport), self.end(b_dst, b_dport))
