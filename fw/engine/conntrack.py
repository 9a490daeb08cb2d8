"""The connection table: which packets belong to a connection an inside host opened.

Modelled on Linux conntrack (v6.1): an entry is found under the tuple of either
direction, a packet of a known connection moves its state at once (even if the rule set
later drops it, as in prerouting), a new connection only enters the table when its first
packet is accepted (``confirm``), and a full table evicts an unreplied entry before it
refuses a new one.

Memory decides how many connections fit, so the dict is keyed on one packed int per
direction (``pack``) rather than on 5-tuples of ints (about 200 bytes less per entry);
``key_of``/``reverse`` and ``Conn.orig``/``Conn.reply`` give the readable tuples.
Timers are pulled: ``next_expiry()`` says when, ``expire(now)`` removes what is due.
"""

from __future__ import annotations

import heapq
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from fw.engine import tcp_states
from fw.engine.packet import ACK, FIN, ICMP, ICMPV6, RST, SYN, TCP, UDP
from fw.engine.tcp_states import Outcome, TcpState

if TYPE_CHECKING:
    from fw.engine.packet import Packet

NEW, ESTABLISHED, RELATED, INVALID = "new", "established", "related", "invalid"
ORIGINAL, REPLY = 0, 1
FlowKey = tuple[int, int, int, int, int]  # (proto, src, sport, dst, dport)

# ICMP echo: the identifier is both 'port'; this bit on one of them says which end
# asked, so that a request and its reply pair up while a request coming back does not.
_ECHO_ANSWER = 1 << 16
_EVICTION_RANGE = 8  # candidates an early drop looks at (the kernel's NF_CT_EVICTION_RANGE)


class FlowState(IntEnum):
    """The state of a UDP, ICMP or generic entry: has the other side answered?"""

    UNREPLIED = 0
    REPLIED = 1


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Linux's default timeouts, in seconds."""

    tcp: tuple[float, ...] = tcp_states.TIMEOUTS
    udp_unreplied: float = 30.0
    udp_stream: float = 120.0
    udp_stream_after: float = 2.0  # a flow answered and still active after this is a stream
    icmp: float = 30.0
    generic: float = 600.0


def key_of(pkt: Packet) -> FlowKey | None:
    """The flow tuple a packet travels on; None for ICMP that opens no flow."""
    proto = pkt.proto
    if proto in (TCP, UDP):
        return (proto, pkt.src, pkt.sport, pkt.dst, pkt.dport)
    if proto == (ICMP if pkt.family == 4 else ICMPV6):
        ident = pkt.icmp_id
        if pkt.is_echo_request:
            return (proto, pkt.src, ident, pkt.dst, ident | _ECHO_ANSWER)
        if pkt.is_echo_reply:
            return (proto, pkt.src, ident | _ECHO_ANSWER, pkt.dst, ident)
        return None
    return (proto, pkt.src, 0, pkt.dst, 0)


def reverse(key: FlowKey) -> FlowKey:
    """The tuple the other direction of the same flow travels on."""
    proto, src, sport, dst, dport = key
    return (proto, dst, dport, src, sport)


def pack(family: int, key: FlowKey) -> int:
    """One int per tuple: a dict keyed on it costs a fraction of one keyed on tuples."""
    proto, src, sport, dst, dport = key
    width = 32 if family == 4 else 128
    return (
        (((((src << width) | dst) << 17 | sport) << 17 | dport) << 9) | proto << 1 | (family == 6)
    )


def unpack(packed: int) -> tuple[int, FlowKey]:
    """(family, tuple) back from ``pack``."""
    family = 6 if packed & 1 else 4
    width = 32 if family == 4 else 128
    proto = packed >> 1 & 0xFF
    packed >>= 9
    dport, sport = packed & 0x1FFFF, packed >> 17 & 0x1FFFF
    packed >>= 34
    dst, src = packed & ((1 << width) - 1), packed >> width
    return family, (proto, src, sport, dst, dport)


def _packed_key(pkt: Packet) -> int | None:
    """pack(key_of(pkt)) without building the tuple, for the per-packet lookup."""
    proto = pkt.proto
    if proto in (TCP, UDP):
        if pkt.family == 4:
            return ((((pkt.src << 32 | pkt.dst) << 17 | pkt.sport) << 17 | pkt.dport) << 9) | (
                proto << 1
            )
        return ((((pkt.src << 128 | pkt.dst) << 17 | pkt.sport) << 17 | pkt.dport) << 9) | (
            proto << 1 | 1
        )
    key = key_of(pkt)
    return None if key is None else pack(pkt.family, key)


@dataclass(slots=True, eq=False)
class Conn:
    """One tracked connection (both directions)."""

    okey: int  # pack(family, orig): the dict key of the original direction
    rkey: int  # pack(family, reply): the dict key of the reply direction
    proto: int
    family: int
    state: int  # TcpState for TCP, FlowState otherwise
    expires: float
    created: float
    id: int
    seen_reply: bool = False
    assured: bool = False
    tcp: array | None = None  # tcp_window's tracking words
    nat: object | None = None  # reserved for the NAT layer
    orig_packets: int = 0
    orig_bytes: int = 0
    reply_packets: int = 0
    reply_bytes: int = 0
    sched: float | None = field(default=None, repr=False)  # its time in the table's heap

    @property
    def orig(self) -> FlowKey:
        return unpack(self.okey)[1]

    @property
    def reply(self) -> FlowKey:
        return unpack(self.rkey)[1]

    @reply.setter
    def reply(self, key: FlowKey) -> None:
        """NAT sets the translated reply tuple here, before the entry is confirmed."""
        self.rkey = pack(self.family, key)

    @property
    def state_name(self) -> str:
        if self.proto == TCP:
            return TcpState(self.state).name
        return FlowState(self.state).name

    def __lt__(self, other: Conn) -> bool:
        """Only breaks ties between heap entries with the same expiry."""
        return self.id < other.id


@dataclass(slots=True)
class CtVerdict:
    """What conntrack says about one packet.

    ``state`` is new / established / related / invalid, as Linux's ctstate: packets in
    the original direction stay 'new' until the other side has answered (a retransmitted
    SYN is 'new', with ``pending`` False). ``direction`` is 0 (original) or 1 (reply)
    relative to ``conn``. ``pending`` means ``conn`` is not in the table yet: call
    ``confirm`` if the packet is accepted. ``reason`` says why a packet is invalid or
    new; on an established packet it is set when the TCP tracker let it pass without
    learning from it (the kernel's "ignored" packets, e.g. a SYN in ESTABLISHED).
    """

    state: str
    conn: Conn | None = None
    direction: int = ORIGINAL
    reason: str = ""
    pending: bool = False


@dataclass(slots=True)
class Counters:
    inserted: int = 0
    expired: int = 0
    removed: int = 0
    early_drops: int = 0
    refused: int = 0
    invalid: int = 0


class ConnTable:
    """All tracked connections, keyed by the packed tuple of each direction."""

    def __init__(
        self, limit: int = 262_144, *, liberal: bool = False, timeouts: Timeouts | None = None
    ) -> None:
        self.limit = limit
        self.liberal = liberal
        self.timeouts = timeouts or Timeouts()
        self.counters = Counters()
        self._map: dict[int, Conn] = {}
        self._count = 0
        self._next_id = 1
        self._heap: list[tuple[float, Conn]] = []
        self._stale = 0  # heap entries whose connection moved or left
        self._unreplied: deque[Conn] = deque()  # early-drop candidates, oldest first
        self._lazily_expired: list[Conn] = []

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Conn]:
        for key, conn in self._map.items():
            if key == conn.okey:
                yield conn

    # -- per packet ------------------------------------------------------------------

    def lookup(self, pkt: Packet, now: float) -> CtVerdict:
        """Classify a packet and update the connection it belongs to."""
        if pkt.invalid is not None:
            return self._invalid(pkt.invalid)
        if pkt.frag_offset > 0:
            return self._invalid("later fragment: no transport header to track")
        proto = pkt.proto
        if proto in (TCP, UDP):  # inline _packed_key: this is the hot path
            if pkt.family == 4:
                key = ((((pkt.src << 32 | pkt.dst) << 17 | pkt.sport) << 17 | pkt.dport) << 9) | (
                    proto << 1
                )
            else:
                key = ((((pkt.src << 128 | pkt.dst) << 17 | pkt.sport) << 17 | pkt.dport) << 9) | (
                    proto << 1 | 1
                )
        elif pkt.is_icmp_error:
            return self._related(pkt, now)
        else:
            key = _packed_key(pkt)
            if key is None:
                return self._invalid(f"icmp type {pkt.icmp_type} opens no connection")
        conn = self._map.get(key)
        if conn is not None and conn.expires <= now:
            self._expire_now(conn)
            conn = None
        if conn is None:
            return self._new(pkt, key, now)
        return self._update(conn, key, ORIGINAL if key == conn.okey else REPLY, pkt, now)

    def confirm(self, verdict: CtVerdict, now: float) -> bool:
        """The first packet was accepted: enter its connection into the table.

        False when the table is full and no unreplied entry could be evicted (counted in
        ``refused``), or when either tuple is already taken.
        """
        conn = verdict.conn
        if conn is None:
            return False
        if not verdict.pending or conn.sched is not None:
            return True
        if conn.okey in self._map or conn.rkey in self._map:
            self.counters.refused += 1
            return False
        if self._count >= self.limit and not self._early_drop():
            self.counters.refused += 1
            return False
        self._insert(conn)
        verdict.pending = False
        return True

    # -- timers ----------------------------------------------------------------------

    def next_expiry(self) -> float | None:
        """When the earliest entry expires, or None for an empty table."""
        heap = self._heap
        while heap:
            sched, conn = heap[0]
            if conn.sched is not sched:
                heapq.heappop(heap)
                self._stale -= 1
            elif conn.expires > sched:  # refreshed since it was scheduled
                conn.sched = conn.expires
                heapq.heapreplace(heap, (conn.sched, conn))
            else:
                return sched
        return None

    def expire(self, now: float) -> list[Conn]:
        """Remove and return the entries whose time has come."""
        gone, self._lazily_expired = self._lazily_expired, []
        heap = self._heap
        while heap and heap[0][0] <= now:
            sched, conn = heapq.heappop(heap)
            if conn.sched is not sched:
                self._stale -= 1
            elif conn.expires <= now:
                conn.sched = None
                self._unlink(conn)
                self.counters.expired += 1
                gone.append(conn)
            else:
                conn.sched = conn.expires
                heapq.heappush(heap, (conn.sched, conn))
        self._trim_unreplied()
        return gone

    def contains(self, conn: Conn) -> bool:
        """Is this entry (not just its tuple) still in the table? NAT asks before freeing."""
        return self._map.get(conn.okey) is conn

    def remove(self, conn: Conn) -> bool:
        """Delete an entry (e.g. flushed by the user); False if it was not in the table."""
        if self._map.get(conn.okey) is not conn:
            return False
        self._drop(conn)
        self.counters.removed += 1
        return True

    # -- internals -------------------------------------------------------------------

    def _invalid(self, reason: str, conn: Conn | None = None, direction: int = 0) -> CtVerdict:
        self.counters.invalid += 1
        return CtVerdict(INVALID, conn, direction, reason)

    def _update(self, conn: Conn, key: int, direction: int, pkt: Packet, now: float) -> CtVerdict:
        """A packet of a known connection: step its state machine and timer."""
        reason = ""
        outcome = Outcome.ACCEPT
        proto = conn.proto
        if proto == TCP:
            outcome, reason = tcp_states.track(
                conn, direction, pkt, now, self.timeouts.tcp, self.liberal
            )
            if outcome is Outcome.INVALID:
                self._reschedule(conn)
                return self._invalid(reason, conn, direction)
            if outcome is Outcome.REOPEN:
                self._drop(conn)
                return self._new(pkt, key, now, reason)
        elif proto == UDP:
            conn.expires = now + self._udp_timeout(conn, now)
        elif proto in (ICMP, ICMPV6):
            conn.expires = now + self.timeouts.icmp
        else:
            conn.expires = now + self.timeouts.generic
        was_new = not conn.seen_reply
        if direction == REPLY:
            conn.reply_packets += 1
            conn.reply_bytes += pkt.length
            if was_new:
                self._first_reply(conn)
        else:
            conn.orig_packets += 1
            conn.orig_bytes += pkt.length
        if outcome is Outcome.CLOSED:
            self._drop(conn)
        else:
            self._reschedule(conn)
        state = NEW if direction == ORIGINAL and was_new else ESTABLISHED
        return CtVerdict(state, conn, direction, reason)

    def _udp_timeout(self, conn: Conn, now: float) -> float:
        """Unreplied flows and the first answer get the short timer; an answered flow
        still active after a couple of seconds is a stream, long timer, ASSURED."""
        t = self.timeouts
        if not conn.seen_reply or now <= conn.created + t.udp_stream_after:
            return t.udp_unreplied
        conn.assured = True
        return t.udp_stream

    def _first_reply(self, conn: Conn) -> None:
        conn.seen_reply = True
        if conn.proto != TCP:
            conn.state = FlowState.REPLIED

    def _new(self, pkt: Packet, key: int, now: float, why: str = "") -> CtVerdict:
        """No entry: may this packet start a connection? If so, a pending one."""
        proto = pkt.proto
        if proto == TCP:
            if pkt.tcp_flags & (SYN | ACK | RST | FIN) != SYN:
                return self._invalid("tcp: no connection, and only a SYN may open one")
            conn = self._make(pkt, key, now, TcpState.NONE, now)
            outcome, reason = tcp_states.start(conn, pkt, now, self.timeouts.tcp)
            if outcome is not Outcome.ACCEPT:
                return self._invalid(reason)
            why = why or "tcp SYN opens a connection"
        elif proto == UDP:
            conn = self._make(pkt, key, now, FlowState.UNREPLIED, now + self.timeouts.udp_unreplied)
            why = why or "udp: first datagram of a flow"
        elif proto in (ICMP, ICMPV6):
            if not pkt.is_echo_request:
                return self._invalid("icmp echo reply without a request")
            conn = self._make(pkt, key, now, FlowState.UNREPLIED, now + self.timeouts.icmp)
            why = why or "icmp echo request"
        else:
            conn = self._make(pkt, key, now, FlowState.UNREPLIED, now + self.timeouts.generic)
            why = why or f"protocol {proto}: first packet (generic tracking)"
        conn.orig_packets = 1
        conn.orig_bytes = pkt.length
        return CtVerdict(NEW, conn, ORIGINAL, why, pending=True)

    def _make(self, pkt: Packet, key: int, now: float, state: int, expires: float) -> Conn:
        flow = key_of(pkt)
        assert flow is not None
        rkey = pack(pkt.family, reverse(flow))
        conn = Conn(key, rkey, pkt.proto, pkt.family, state, expires, now, self._next_id)
        self._next_id += 1
        return conn

    def _related(self, pkt: Packet, now: float) -> CtVerdict:
        """An ICMP error belongs to the connection whose packet it quotes, and must go
        back to the host that sent that packet."""
        inner = pkt.inner
        if inner is None or inner.is_icmp_error:
            return self._invalid("icmp error quoting no trackable packet")
        flow = key_of(inner)
        # As Linux: the quoted packet's tuple inverted is the one the error travels on; with
        # NAT only the inverted tuple is in the table (the quote shows the translated packet).
        key = None if flow is None else pack(inner.family, reverse(flow))
        conn = None if key is None else self._map.get(key)
        if conn is None or conn.expires <= now:
            return self._invalid("icmp error for no known connection")
        if pkt.dst != inner.src:
            return self._invalid("icmp error not addressed to the sender of the quoted packet")
        direction = ORIGINAL if key == conn.okey else REPLY
        return CtVerdict(RELATED, conn, direction, f"icmp error about connection {conn.id}")

    def _insert(self, conn: Conn) -> None:
        self._map[conn.okey] = conn
        self._map[conn.rkey] = conn
        self._count += 1
        self.counters.inserted += 1
        conn.sched = conn.expires
        heapq.heappush(self._heap, (conn.sched, conn))
        if not conn.seen_reply:
            self._unreplied.append(conn)

    def _reschedule(self, conn: Conn) -> None:
        """A later expiry is picked up lazily; an earlier one needs its own heap entry."""
        sched = conn.sched
        if sched is not None and conn.expires < sched:
            self._stale += 1
            conn.sched = conn.expires
            heapq.heappush(self._heap, (conn.sched, conn))
            self._compact()

    def _drop(self, conn: Conn) -> None:
        """Take an entry out of the table; its heap entry goes stale."""
        if conn.sched is not None:
            conn.sched = None
            self._stale += 1
            self._compact()
        self._unlink(conn)

    def _unlink(self, conn: Conn) -> None:
        if self._map.get(conn.okey) is conn:
            del self._map[conn.okey]
            self._count -= 1
        if self._map.get(conn.rkey) is conn:
            del self._map[conn.rkey]

    def _expire_now(self, conn: Conn) -> None:
        """Found expired by a lookup before expire() ran: gone, and reported next time."""
        self._drop(conn)
        self.counters.expired += 1
        self._lazily_expired.append(conn)

    def _compact(self) -> None:
        """Rebuild the heap once a quarter of it is stale: each stale entry pins a float and
        maybe a dead Conn, and an O(n) rebuild every n/4 stale entries is cheap."""
        if self._stale > 1024 and self._stale * 4 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[1].sched is entry[0]]
            heapq.heapify(self._heap)
            self._stale = 0

    def _early_drop(self) -> bool:
        """Evict the oldest entry that never saw a reply, looking at a few at most."""
        queue = self._unreplied
        for _ in range(_EVICTION_RANGE):
            if not queue:
                return False
            conn = queue.popleft()
            if conn.sched is not None and not conn.seen_reply:
                self._drop(conn)
                self.counters.early_drops += 1
                return True
        return False

    def _trim_unreplied(self) -> None:
        """Forget candidates that were answered or are gone, so the queue stays short."""
        queue = self._unreplied
        while queue and (queue[0].seen_reply or queue[0].sched is None):
            queue.popleft()
