"""Flow scripts for engine tests: a test reads like the exchange it checks.

    talk = Tcp(engine, "192.0.2.2:40000", "203.0.113.10:80")
    assert talk.client("S") == "accept new"
    assert talk.server("SA") == "accept established"

Sequence numbers follow the conversation (SYN and FIN count one, data its length), so a test
only says what a packet is, not its arithmetic; `seq=`/`ack=` override for forged segments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fw import craft
from fw.engine.decision import Decision
from fw.engine.engine import Engine


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


@dataclass
class Tcp:
    engine: Engine
    client_end: str
    server_end: str
    clock: Clock = field(default_factory=Clock)
    next_seq: list[int] = field(default_factory=lambda: [1000, 5000])
    acked: list[int] = field(default_factory=lambda: [0, 0])
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
        raw = craft.tcp(src, dst, sport, dport, flags, seq=seq, ack=ack, window=window,
                        payload=b"x" * data)
        self.next_seq[side] = seq + data + ("S" in flags) + ("F" in flags)
        self.last = self.engine.process(raw, now=self.clock.advance(0.01))
        return outcome(self.last)

    def ends(self, side: int) -> tuple[tuple[str, int], tuple[str, int]]:
        ends = (split(self.client_end), split(self.server_end))
        return (ends[0], ends[1]) if side == 0 else (ends[1], ends[0])


@dataclass
class Udp:
    engine: Engine
    client_end: str
    server_end: str
    clock: Clock = field(default_factory=Clock)
    last: Decision | None = None

    def client(self, data: bytes = b"q") -> str:
        return self.send(split(self.client_end), split(self.server_end), data)

    def server(self, data: bytes = b"a") -> str:
        return self.send(split(self.server_end), split(self.client_end), data)

    def send(self, src: tuple[str, int], dst: tuple[str, int], data: bytes) -> str:
        raw = craft.udp(src[0], dst[0], src[1], dst[1], payload=data)
        self.last = self.engine.process(raw, now=self.clock.advance(0.01))
        return outcome(self.last)


def send(engine: Engine, raw: bytes, clock: Clock, **kw) -> str:
    return outcome(engine.process(raw, now=clock.advance(0.01), **kw))
