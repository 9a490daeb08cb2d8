"""The connection table: which packets belong to a connection an inside host opened.

Modelled on Linux conntrack (v6.1): an entry is found under the tuple of either
direction, a packet of a known connection moves its state at once (even if the rule set
later drops it, as in prerouting), a new connection only enters the table when its first
packet is accepted (``confirm``), and a full table evicts an unreplied entry before it
refuses a new one.

Memory decides how many connections fit, so the dict is keyed on one packed int per tuple
(``pack``) rather than on 5-tuples of ints (about 200 bytes less per entry), and holds an
entry under its original tuple only: a packet not found under its own tuple is looked up
reversed, and is the reply of the entry found there unless NAT changed that entry's reply
tuple (``Conn.nat_rkey``), in which case the entry is filed under its reply tuple too.
``key_of``/``reverse`` and ``Conn.orig``/``Conn.reply`` give the readable tuples.
Timers are pulled: ``next_expiry()`` says when, ``expire(now)`` removes what is due.

``lookup`` has a fast path for the packet most connections carry most of the time, a TCP
ACK-class segment in ESTABLISHED (``tcp_states.track_established_ack``).
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from fw.core.protocols import ACK, FIN, ICMP, ICMPV6, QUERY_REPLY, RST, SYN, TCP, UDP
from fw.core.vocab import CtState
from fw.engine import ct_events, tcp_states
from fw.engine.ct_events import CtEvent
from fw.engine.tcp_states import (
    ACK_ONLY,
    O_ACCEPT,
    O_CLOSED,
    O_INVALID,
    O_REOPEN,
    TcpState,
    track_established_ack,
)
from fw.engine.timers import Timers

if TYPE_CHECKING:
    from fw.engine.nat import Binding
    from fw.engine.packet import Packet

NEW, ESTABLISHED, RELATED, INVALID = (
    CtState.NEW, CtState.ESTABLISHED, CtState.RELATED, CtState.INVALID)
ORIGINAL, REPLY = 0, 1
FlowKey = tuple[int, int, int, int, int]  # (proto, src, sport, dst, dport)

# ICMP queries (echo, timestamp, information, address mask): Linux keys them on (type, code,
# id), the reply tuple carrying the answer's type (nf_conntrack_proto_icmp.c). Here the
# identifier is both 'port'; above it, bit 16 on one of them says which end asked (so that a
# request and its reply pair up while a request coming back does not), and bits 17-32 hold the
# request's type and the code, so that queries of two types with one identifier are two
# connections and a timestamp reply never answers an echo request.
_ECHO_ANSWER = 1 << 16
_QUERY_SHIFT = 17
_PB = 33  # bits of a 'port' in a packed tuple: 16 of port or identifier, 17 of ICMP query tag
_PORT_FIELD = (1 << _PB) - 1
_REQUEST_OF = {family: {**{rep: req for req, rep in pairs.items()}, **{r: r for r in pairs}}
               for family, pairs in QUERY_REPLY.items()}
_EVICTION_RANGE = 8  # candidates an early drop looks at (the kernel's NF_CT_EVICTION_RANGE)
_TCP_ESTABLISHED = int(TcpState.ESTABLISHED)
_TCP_NONE, _TCP_CLOSE = TcpState.NONE, TcpState.CLOSE


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
        if pkt.icmp_id < 0:
            return None
        request = _REQUEST_OF[pkt.family].get(pkt.icmp_type)
        if request is None:
            return None
        ident = pkt.icmp_id | (request << 8 | pkt.icmp_code) << _QUERY_SHIFT
        if request == pkt.icmp_type:
            return (proto, pkt.src, ident, pkt.dst, ident | _ECHO_ANSWER)
        return (proto, pkt.src, ident | _ECHO_ANSWER, pkt.dst, ident)
    return (proto, pkt.src, 0, pkt.dst, 0)


def query_fields(family: int, port: int) -> tuple[int, int, int]:
    """(type, code, id) of an ICMP query tuple from its source 'port' (``key_of``): the
    asking end's carries no answer bit, so its type is the request's."""
    request, code = port >> (_QUERY_SHIFT + 8) & 0xFF, port >> _QUERY_SHIFT & 0xFF
    kind = QUERY_REPLY[family].get(request, request) if port & _ECHO_ANSWER else request
    return kind, code, port & 0xFFFF


def reverse(key: FlowKey) -> FlowKey:
    """The tuple the other direction of the same flow travels on."""
    proto, src, sport, dst, dport = key
    return (proto, dst, dport, src, sport)


def pack(family: int, key: FlowKey) -> int:
    """One int per tuple: a dict keyed on it costs a fraction of one keyed on tuples."""
    proto, src, sport, dst, dport = key
    width = 32 if family == 4 else 128
    return (
        (((((src << width) | dst) << _PB | sport) << _PB | dport) << 9) | proto << 1 | (family == 6)
    )


def unpack(packed: int) -> tuple[int, FlowKey]:
    """(family, tuple) back from ``pack``."""
    family = 6 if packed & 1 else 4
    width = 32 if family == 4 else 128
    proto = packed >> 1 & 0xFF
    packed >>= 9
    dport, sport = packed & _PORT_FIELD, packed >> _PB & _PORT_FIELD
    packed >>= 2 * _PB
    dst, src = packed & ((1 << width) - 1), packed >> width
    return family, (proto, src, sport, dst, dport)


def reverse_packed(key: int) -> int:
    """pack(family, reverse(tuple)) from pack(family, tuple), without building tuples."""
    width = 128 if key & 1 else 32
    ports, addrs = key >> 9, key >> (9 + 2 * _PB)
    dport, sport = ports & _PORT_FIELD, ports >> _PB & _PORT_FIELD
    dst, src = addrs & ((1 << width) - 1), addrs >> width
    return ((((dst << width | src) << _PB | dport) << _PB | sport) << 9) | key & 0x1FF


def _packed_key(pkt: Packet) -> int | None:
    """pack(key_of(pkt)) without building the tuple, for the per-packet lookup."""
    proto = pkt.proto
    if proto in (TCP, UDP):
        if pkt.family == 4:
            return ((((pkt.src << 32 | pkt.dst) << _PB | pkt.sport) << _PB | pkt.dport) << 9) | (
                proto << 1
            )
        return ((((pkt.src << 128 | pkt.dst) << _PB | pkt.sport) << _PB | pkt.dport) << 9) | (
            proto << 1 | 1
        )
    key = key_of(pkt)
    return None if key is None else pack(pkt.family, key)


@dataclass(slots=True, eq=False)
class Conn:
    """One tracked connection (both directions)."""

    okey: int  # pack(family, orig): the table's key for the connection
    nat_rkey: int | None  # pack(family, reply) if NAT made it other than orig reversed, else None
    proto: int
    family: int
    state: int  # TcpState for TCP, FlowState otherwise
    expires: float
    created: float | None  # the first packet's time; only UDP keeps it (its stream rule needs it)
    id: int
    seen_reply: bool = False
    assured: bool = False
    tcp: array | None = None  # tcp_window's tracking words
    nat: Binding | None = None  # how NAT translates it (fw/engine/nat.py), if it does
    memo: dict | None = None  # verdicts remembered for its established packets (engine.py)
    orig_packets: int = 0
    orig_bytes: int = 0
    reply_packets: int = 0
    reply_bytes: int = 0
    sched: float | None = field(default=None, repr=False)  # where it waits in Timers, if queued

    @property
    def rkey(self) -> int:
        """pack(family, reply)."""
        return reverse_packed(self.okey) if self.nat_rkey is None else self.nat_rkey

    @rkey.setter
    def rkey(self, key: int) -> None:
        self.nat_rkey = None if key == reverse_packed(self.okey) else key

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

    state: CtState
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
        self,
        limit: int = 262_144,
        *,
        liberal: bool = False,
        loose: bool = True,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.limit = limit
        self.liberal = liberal
        self.loose = loose
        self.timeouts = timeouts or Timeouts()
        self._tcp_timeouts = self.timeouts.tcp
        self.counters = Counters()
        self._map: dict[int, Conn] = {}
        self._count = 0
        self._next_id = 1
        self._timers = Timers()
        self._unreplied: deque[Conn] = deque()  # early-drop candidates, oldest first
        self._lazily_expired: list[Conn] = []
        self.events: list[CtEvent] | None = None  # [] to collect NEW/UPDATE/DESTROY (ct_events)

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
        if proto in (TCP, UDP):  # pack() and _find() inlined: the hot path
            src, dst, sport, dport = pkt.src, pkt.dst, pkt.sport, pkt.dport
            width = 32 if pkt.family == 4 else 128
            low = proto << 1 | (width == 128)
            key = ((((src << width | dst) << _PB | sport) << _PB | dport) << 9) | low
            conn = self._map.get(key)
            if conn is not None:
                direction = ORIGINAL if key == conn.okey else REPLY
            else:
                rkey = ((((dst << width | src) << _PB | dport) << _PB | sport) << 9) | low
                conn = self._map.get(rkey)
                if conn is None or conn.nat_rkey is not None:
                    return self._new(pkt, key, now)
                direction = REPLY
        elif pkt.is_icmp_error:
            return self._related(pkt, now)
        else:
            key = _packed_key(pkt)
            if key is None:
                return self._invalid(f"icmp type {pkt.icmp_type} opens no connection")
            conn, direction = self._find(key)
            if conn is None:
                return self._new(pkt, key, now)
        if conn.expires <= now:
            self._expire_now(conn)
            return self._new(pkt, key, now)
        if (
            proto == TCP
            and conn.state == _TCP_ESTABLISHED
            and ACK_ONLY[pkt.tcp_flags & 0xFF]
            and track_established_ack(conn, direction, pkt, now, self._tcp_timeouts)
        ):  # what _update does after such a segment, inlined
            was_new = not conn.seen_reply
            if direction:
                conn.reply_packets += 1
                conn.reply_bytes += pkt.length
                conn.seen_reply = True
            else:
                conn.orig_packets += 1
                conn.orig_bytes += pkt.length
            sched = conn.sched
            if sched is not None and conn.expires < sched:
                self._timers.moved(conn)
            return CtVerdict(NEW if was_new and not direction else ESTABLISHED, conn, direction)
        return self._update(conn, key, direction, pkt, now)

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
        if self._taken(conn):
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
        return self._timers.next_expiry()

    def expire(self, now: float) -> list[Conn]:
        """Remove and return the entries whose time has come."""
        gone, self._lazily_expired = self._lazily_expired, []
        for conn in self._timers.pop_due(now):
            self._unlink(conn)
            self.counters.expired += 1
            gone.append(conn)
            if self.events is not None:
                self.events.append(CtEvent.of(ct_events.DESTROY, conn, timeout_reason(conn)))
        self._trim_unreplied()
        return gone

    def set_closing(self, conn: Conn, now: float) -> None:
        """The firewall sent a RST for a packet of this connection (a `reject`): a TCP one
        goes to CLOSE with CLOSE's timer, as nf_conntrack_tcp_set_closing does; only a
        connection in the table, and only once (a second RST leaves the timer alone)."""
        if conn.proto != TCP or not self.contains(conn) or conn.state == TcpState.CLOSE:
            return
        conn.state = TcpState.CLOSE
        conn.expires = now + self._tcp_timeouts[TcpState.CLOSE]
        self._reschedule(conn)
        if self.events is not None:
            self.events.append(CtEvent.of(ct_events.UPDATE, conn))

    def in_use(self, family: int, key: FlowKey) -> bool:
        """Does a connection in the table travel on this tuple, in either direction?"""
        return self._find(pack(family, key))[0] is not None

    def contains(self, conn: Conn) -> bool:
        """Is this entry (not just its tuple) still in the table? NAT asks before freeing."""
        return self._map.get(conn.okey) is conn

    def remove(self, conn: Conn) -> bool:
        """Delete an entry (e.g. flushed by the user); False if it was not in the table."""
        if self._map.get(conn.okey) is not conn:
            return False
        self._drop(conn, "removed")
        self.counters.removed += 1
        return True

    # -- internals -------------------------------------------------------------------

    def _invalid(self, reason: str, conn: Conn | None = None, direction: int = 0) -> CtVerdict:
        self.counters.invalid += 1
        return CtVerdict(INVALID, conn, direction, reason)

    def _find(self, key: int) -> tuple[Conn | None, int]:
        """The entry a packed tuple belongs to, and the direction it is to that entry."""
        conn = self._map.get(key)
        if conn is not None:
            return conn, ORIGINAL if key == conn.okey else REPLY
        conn = self._map.get(reverse_packed(key))
        if conn is not None and conn.nat_rkey is None:
            return conn, REPLY
        return None, ORIGINAL

    def _taken(self, conn: Conn) -> bool:
        """Does a connection in the table travel on either tuple of this one?"""
        if conn.nat_rkey is None:  # its tuples are okey and okey reversed: is either filed?
            return conn.okey in self._map or reverse_packed(conn.okey) in self._map
        return self._find(conn.okey)[0] is not None or self._find(conn.nat_rkey)[0] is not None

    def _update(self, conn: Conn, key: int, direction: int, pkt: Packet, now: float) -> CtVerdict:
        """A packet of a known connection: step its state machine and timer."""
        reason = ""
        outcome = O_ACCEPT
        proto = conn.proto
        before = self.events is not None and (conn.state, conn.seen_reply, conn.assured)
        if proto == TCP:
            outcome, reason = tcp_states.track(
                conn, direction, pkt, now, self.timeouts.tcp, self.liberal
            )
            if outcome is O_INVALID:
                self._reschedule(conn)
                return self._invalid(reason, conn, direction)
            if outcome is O_REOPEN:
                self._drop(conn, "reopened")
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
        if outcome is O_CLOSED:
            self._drop(conn, "RST")
        else:
            self._reschedule(conn)
            if before and before != (conn.state, conn.seen_reply, conn.assured):
                self.events.append(CtEvent.of(ct_events.UPDATE, conn))  # type: ignore[union-attr]
        state = NEW if direction == ORIGINAL and was_new else ESTABLISHED
        return CtVerdict(state, conn, direction, reason)

    def _udp_timeout(self, conn: Conn, now: float) -> float:
        """Unreplied flows and the first answer get the short timer; an answered flow
        still active after a couple of seconds is a stream, long timer, ASSURED."""
        t = self.timeouts
        assert conn.created is not None
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
            opening = pkt.tcp_flags & (SYN | ACK | RST | FIN)
            if opening == SYN:
                start, why = tcp_states.start, why or "tcp SYN opens a connection"
            elif opening == ACK and self.loose:
                start, why = tcp_states.pick_up, why or "tcp: picked up in the middle (loose)"
            elif self.loose:
                return self._invalid("tcp: no connection, and only a SYN or an ACK may open one")
            else:
                return self._invalid("tcp: no connection, and only a SYN may open one")
            conn = self._make(pkt, key, now, _TCP_NONE, now)
            outcome, reason = start(conn, pkt, now, self.timeouts.tcp)
            if outcome is not O_ACCEPT:
                return self._invalid(reason)
        elif proto == UDP:
            conn = self._make(pkt, key, now, FlowState.UNREPLIED, now + self.timeouts.udp_unreplied)
            why = why or "udp: first datagram of a flow"
        elif proto in (ICMP, ICMPV6):
            if not pkt.is_query_request:
                return self._invalid(f"icmp type {pkt.icmp_type}: a reply without a request")
            conn = self._make(pkt, key, now, FlowState.UNREPLIED, now + self.timeouts.icmp)
            why = why or ("icmp echo request" if pkt.is_echo_request else
                          f"icmp query (type {pkt.icmp_type})")
        else:
            conn = self._make(pkt, key, now, FlowState.UNREPLIED, now + self.timeouts.generic)
            why = why or f"protocol {proto}: first packet (generic tracking)"
        conn.orig_packets = 1
        conn.orig_bytes = pkt.length
        return CtVerdict(NEW, conn, ORIGINAL, why, pending=True)

    def _make(self, pkt: Packet, key: int, now: float, state: int, expires: float) -> Conn:
        created = now if pkt.proto == UDP else None  # 24 bytes less for each of the others
        conn = Conn(key, None, pkt.proto, pkt.family, state, expires, created, self._next_id)
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
        if flow is None:
            return self._invalid("icmp error for no known connection")
        conn, direction = self._find(pack(inner.family, reverse(flow)))
        if conn is None or conn.expires <= now:
            return self._invalid("icmp error for no known connection")
        if pkt.dst != inner.src:
            return self._invalid("icmp error not addressed to the sender of the quoted packet")
        return CtVerdict(RELATED, conn, direction, f"icmp error about connection {conn.id}")

    def _insert(self, conn: Conn) -> None:
        self._map[conn.okey] = conn
        if conn.nat_rkey is not None:
            self._map[conn.nat_rkey] = conn
        self._count += 1
        self.counters.inserted += 1
        self._timers.add(conn)
        if self.events is not None:
            self.events.append(CtEvent.of(ct_events.NEW, conn))
        if not conn.seen_reply:
            queue = self._unreplied
            if queue and queue[0].seen_reply:  # answered ones would pin memory until expire()
                self._trim_unreplied()
            queue.append(conn)

    def _reschedule(self, conn: Conn) -> None:
        """A later expiry is picked up lazily; an earlier one is filed again."""
        sched = conn.sched
        if sched is not None and conn.expires < sched:
            self._timers.moved(conn)

    def _drop(self, conn: Conn, reason: str) -> None:
        """Take an entry out of the table; its timer goes stale."""
        if conn.sched is not None:
            self._timers.discard(conn)
        self._unlink(conn)
        if self.events is not None:
            self.events.append(CtEvent.of(ct_events.DESTROY, conn, reason))

    def _unlink(self, conn: Conn) -> None:
        if self._map.get(conn.okey) is conn:
            del self._map[conn.okey]
            self._count -= 1
        nat_rkey = conn.nat_rkey
        if nat_rkey is not None and self._map.get(nat_rkey) is conn:
            del self._map[nat_rkey]

    def _expire_now(self, conn: Conn) -> None:
        """Found expired by a lookup before expire() ran: gone, and reported next time."""
        self._drop(conn, timeout_reason(conn))
        self.counters.expired += 1
        self._lazily_expired.append(conn)

    def _early_drop(self) -> bool:
        """Evict the oldest entry that never saw a reply, looking at a few at most."""
        queue = self._unreplied
        for _ in range(_EVICTION_RANGE):
            if not queue:
                return False
            conn = queue.popleft()
            if conn.sched is not None and not conn.seen_reply:
                self._drop(conn, "early drop")
                self.counters.early_drops += 1
                return True
        return False

    def _trim_unreplied(self) -> None:
        """Forget candidates that were answered or are gone, so the queue stays short."""
        queue = self._unreplied
        while queue and (queue[0].seen_reply or queue[0].sched is None):
            queue.popleft()


def timeout_reason(conn: Conn) -> str:
    """Why an entry whose timer ran out is gone: a TCP entry in CLOSE was reset."""
    return "RST" if conn.proto == TCP and conn.state == _TCP_CLOSE else "timeout"
