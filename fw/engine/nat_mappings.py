"""NAT mappings (RFC 4787): which outside address and port an inside endpoint appears as.

A mapping is keyed by what its *mapping behaviour* says must share it: the inside endpoint alone
(endpoint-independent), plus the remote address (address-dependent), plus the remote port
(address-port-dependent). Its *filtering behaviour* says which remote endpoints may send in
through it. Outside ports are never shared between mappings (no port overloading, REQ-3), the
inside port is kept when free (port preservation), and a port below 1024 maps below 1024.
Mappings live while a connection uses them, as Linux's do (a masquerade mapping is its conntrack
entry: a UDP mapping is gone 30 s after an unanswered packet). With a hold (the engine's
`nat_mapping_hold`; RFC 4787 REQ-5 asks for at least 120 s) a mapping also outlives its last
outbound packet by that long, refreshed by outbound traffic only (REQ-6).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from fw.core.vocab import NatBehaviour

RFC4787_HOLD = 120.0  # seconds REQ-5 wants a mapping to outlive its last outbound packet
RECHECK = 10.0  # at most this long until a mapping still in use past its hold is looked at
DEFAULT_RANGE = (32768, 60999)
PRIVILEGED_RANGE = (1, 1023)
ICMP_ID_RANGE = (0, 65535)

Endpoint = tuple[int, int]  # (address as int, port or ICMP id)


@dataclass(slots=True, eq=False)
class Mapping:
    proto: int
    inside: Endpoint
    outside: Endpoint
    mapping: str
    filtering: str
    key: tuple
    created: float
    last_out: float
    remotes: set[Endpoint] = field(default_factory=set)  # remote endpoints contacted
    conns: list = field(default_factory=list)  # connections that used it (some may be gone)
    recheck: float = 0.0  # still in use when last looked at: look again then
    hold: float = 0.0  # seconds it outlives its last outbound packet (0: as Linux)

    def permits(self, remote: Endpoint) -> bool:
        """May this remote endpoint send in through the mapping (the filtering behaviour)?"""
        if self.filtering == NatBehaviour.ENDPOINT_INDEPENDENT:
            return True
        if self.filtering == NatBehaviour.ADDRESS_DEPENDENT:
            return any(addr == remote[0] for addr, _ in self.remotes)
        return remote in self.remotes

    def hold_until(self) -> float:
        """`hold` after the last outbound packet (REQ-5 with a hold); longer while in use."""
        return max(self.last_out + self.hold, self.recheck)

    def in_use(self, alive: Callable[[object], bool]) -> bool:
        self.conns = [conn for conn in self.conns if alive(conn)]
        return bool(self.conns)


@dataclass(slots=True)
class NatCounters:
    mappings_created: int = 0
    mappings_expired: int = 0
    preserved: int = 0
    exhausted: int = 0


class MappingTable:
    def __init__(self, seed: int | None = None, hold: float = 0.0) -> None:
        self.hold = hold
        self.by_key: dict[tuple, Mapping] = {}
        self.by_outside: dict[tuple[int, Endpoint], Mapping] = {}
        self.counters = NatCounters()
        self.seed = seed
        self.rng = random.Random(seed)
        # (modulus, residue): new outside ports must keep this class (replay's flow shards,
        # fw/engine/shard.py); each class draws from its own generator, so a class's choices
        # depend on its own flows only, whichever process judges them
        self.port_class: tuple[int, int] | None = None
        self._class_rngs: dict[int, random.Random] = {}

    def __len__(self) -> int:
        return len(self.by_key)

    def __iter__(self):
        return iter(list(self.by_key.values()))

    @staticmethod
    def key(proto: int, inside: Endpoint, remote: Endpoint, mapping: str) -> tuple:
        if mapping == NatBehaviour.ENDPOINT_INDEPENDENT:
            return (proto, inside)
        if mapping == NatBehaviour.ADDRESS_DEPENDENT:
            return (proto, inside, remote[0])
        return (proto, inside, remote)

    def find(self, proto: int, inside: Endpoint, remote: Endpoint, mapping: str) -> Mapping | None:
        return self.by_key.get(self.key(proto, inside, remote, mapping))

    def inbound(self, proto: int, outside: Endpoint) -> Mapping | None:
        return self.by_outside.get((proto, outside))

    def allocate(
        self, proto: int, inside: Endpoint, remote: Endpoint, address: int,
        ports: tuple[int, int] | None, mapping: str, filtering: str, now: float,
        refused: Callable[[int], bool] | None = None,
    ) -> Mapping | None:
        """The mapping to use for an outbound packet: the existing one, or a new one; None when
        every port of the range is taken (exhaustion: the caller drops and counts)."""
        existing = self.find(proto, inside, remote, mapping)
        if existing is not None and existing.outside[0] == address:
            return existing
        port = self.free_port(proto, address, inside[1], ports, refused)
        if port is None:
            self.counters.exhausted += 1
            return None
        created = Mapping(proto, inside, (address, port), mapping, filtering,
                          self.key(proto, inside, remote, mapping), now, now, hold=self.hold)
        self.by_key[created.key] = created
        self.by_outside[(proto, created.outside)] = created
        self.counters.mappings_created += 1
        return created

    def free_port(self, proto: int, address: int, wanted: int, ports: tuple[int, int] | None,
                  refused: Callable[[int], bool] | None = None):
        """Port preservation first (inside the range, when the rule names one), then random.
        With port classes, `refused` says which ports a port forward would take the replies
        of (replay's shards could not tell them from new connections)."""
        lo, hi = self.port_range(proto, wanted, ports)
        allowed = (ports is None or lo <= wanted <= hi) and self.in_class(wanted)
        if self.port_class is not None and allowed and refused is not None:
            allowed = not refused(wanted)
        if allowed and (proto, (address, wanted)) not in self.by_outside:
            self.counters.preserved += 1
            return wanted
        if self.port_class is not None:
            return self.random_free_in_class(proto, address, lo, hi, refused)
        return self.random_free(proto, address, lo, hi)

    def in_class(self, port: int) -> bool:
        shard = self.port_class
        return shard is None or port % shard[0] == shard[1]

    def class_rng(self) -> random.Random:
        """The generator of the current port class (the shared one without classes)."""
        if self.port_class is None:
            return self.rng
        residue = self.port_class[1]
        rng = self._class_rngs.get(residue)
        if rng is None:
            seed = None if self.seed is None else f"{self.seed}/{residue}"
            rng = self._class_rngs[residue] = random.Random(seed)
        return rng

    def class_ports(self, lo: int, hi: int) -> tuple[int, int]:
        """The first port of [lo, hi] in the current class and how many there are."""
        modulus, residue = self.port_class
        first = lo + (residue - lo) % modulus
        return first, 0 if first > hi else (hi - first) // modulus + 1

    def draw(self, lo: int, hi: int) -> int:
        """One random port of [lo, hi], of the current class when there is one."""
        if self.port_class is None:
            return self.rng.randint(lo, hi)
        first, size = self.class_ports(lo, hi)
        return first + self.port_class[0] * self.class_rng().randrange(max(size, 1))

    def random_free_in_class(self, proto: int, address: int, lo: int, hi: int,
                             refused: Callable[[int], bool] | None = None) -> int | None:
        """`random_free` among the range's ports of the current class (replay's shards)."""
        first, size = self.class_ports(lo, hi)
        if size == 0:
            return None
        step, rng, taken = self.port_class[0], self.class_rng(), self.by_outside

        def free(port: int) -> bool:
            return (proto, (address, port)) not in taken and not (refused and refused(port))

        for _ in range(16):
            port = first + step * rng.randrange(size)
            if free(port):
                return port
        start = rng.randrange(size)
        for i in range(size):
            port = first + step * ((start + i) % size)
            if free(port):
                return port
        return None

    @staticmethod
    def port_range(proto: int, wanted: int, ports: tuple[int, int] | None) -> tuple[int, int]:
        if ports is not None:
            return ports
        if proto in (1, 58):
            return ICMP_ID_RANGE
        return PRIVILEGED_RANGE if 0 < wanted < 1024 else DEFAULT_RANGE

    def random_free(self, proto: int, address: int, lo: int, hi: int) -> int | None:
        """A random free port: a few random probes, then a scan from a random start, so a
        nearly full range still finds its last free port and a full one says so."""
        taken = self.by_outside
        for _ in range(16):
            port = self.rng.randint(lo, hi)
            if (proto, (address, port)) not in taken:
                return port
        start, size = self.rng.randint(lo, hi), hi - lo + 1
        for step in range(size):
            port = lo + (start - lo + step) % size
            if (proto, (address, port)) not in taken:
                return port
        return None

    def outbound(self, found: Mapping, remote: Endpoint, now: float) -> None:
        """An outbound packet through the mapping: remember whom it went to, refresh it."""
        found.remotes.add(remote)
        found.last_out = now

    def expire(self, now: float, alive: Callable[[object], bool]) -> int:
        """Remove mappings past their hold whose connections are all gone; `alive` asks the
        connection table, so a connection that left it in any way frees its mapping."""
        due = [m for m in self.by_key.values() if m.hold_until() <= now]
        gone = [m for m in due if not m.in_use(alive)]
        for mapping in gone:
            self.remove(mapping)
        for mapping in due:
            if mapping.conns:  # look again when its first connection may be gone
                soonest = min(conn.expires for conn in mapping.conns)
                mapping.recheck = min(max(soonest, now), now + RECHECK)
        self.counters.mappings_expired += len(gone)
        return len(gone)

    def remove(self, mapping: Mapping) -> None:
        self.by_key.pop(mapping.key, None)
        self.by_outside.pop((mapping.proto, mapping.outside), None)

    def next_expiry(self) -> float | None:
        return min((m.hold_until() for m in self.by_key.values()), default=None)
