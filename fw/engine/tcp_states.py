"""The TCP connection tracker's state machine, ported from Linux v6.1.

Source: torvalds/linux, net/netfilter/nf_conntrack_proto_tcp.c as of the v6.1 stable
series (``tcp_conntracks[2][6][TCP_CONNTRACK_MAX]``, ``get_conntrack_index()``,
``nf_conntrack_tcp_packet()``). The transitions are a table, as in the kernel, so that a
reader can hold this file next to the C and compare them row by row; the few cases the
kernel handles in code (reopening from TIME_WAIT/CLOSE, ignored packets and the
SYN/ACK that resynchronises us after one, RST validation, the challenge ACK, the
simultaneous open, ASSURED) are the functions below the table.

We sit in the middle and only guess each endpoint's state: a packet the table marks
IGNORE may be valid for the endpoints while we are out of sync, so it passes without
changing our state; INVALID packets are marked invalid and change nothing.

As the kernel with nf_conntrack_tcp_loose=1 (its default, the table's `loose` option), an
ACK-class segment with no entry picks the connection up in the middle (``pick_up``): state
ESTABLISHED, both directions tracked liberally, since the window scale was never seen.
"""

from __future__ import annotations

from array import array
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

from fw.core.protocols import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG
from fw.engine import tcp_window as tw
from fw.engine.tcp_window import (
    END,
    F_DATA_UNACKNOWLEDGED,
    F_MAXACK_SET,
    FLAGS,
    LAST_ACK,
    LAST_DIR,
    LAST_END,
    LAST_INDEX,
    LAST_SEQ,
    LAST_WIN,
    MAXACK,
    MAXACKWINCONST,
    MAXEND,
    MAXWIN,
    RETRANS_COUNT,
    SCALE,
)

if TYPE_CHECKING:
    from fw.engine.packet import Packet


class TcpState(IntEnum):
    """tcp_conntrack: the states, in the kernel's order (the table is indexed by it)."""

    NONE = 0
    SYN_SENT = 1
    SYN_RECV = 2
    ESTABLISHED = 3
    FIN_WAIT = 4
    CLOSE_WAIT = 5
    LAST_ACK = 6
    TIME_WAIT = 7
    CLOSE = 8
    SYN_SENT2 = 9
    INVALID = 10  # sIV: TCP_CONNTRACK_MAX
    IGNORE = 11  # sIG


class FlagClass(IntEnum):
    """tcp_bit_set: which of RST/SYN/FIN/ACK decides the transition."""

    SYN = 0
    SYNACK = 1
    FIN = 2
    ACK = 3
    RST = 4
    NONE = 5


class Outcome(IntEnum):
    """What the table must do with the connection after a packet."""

    ACCEPT = 0  # in window: state and timer updated
    IGNORE = 1  # passes, but state and timer untouched
    INVALID = 2  # marked invalid, nothing learnt
    REOPEN = 3  # a SYN reopening a closed connection: delete the entry, look up again
    CLOSED = 4  # accepted RST before any reply: delete the entry now


sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2, sIV, sIG = TcpState
# plain module names for the members (an enum member lookup costs ~1 us on Python 3.11)
O_ACCEPT, O_IGNORE, O_INVALID, O_REOPEN, O_CLOSED = Outcome
ORIGINAL, REPLY = 0, 1

# TRANSITIONS[direction][flag class][old state] -> new state, sIV or sIG.
# Columns:  sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2
TRANSITIONS: tuple[tuple[tuple[TcpState, ...], ...], ...] = (
    (  # ORIGINAL
        # syn: NO->SS new connection; SS->SS retransmitted SYN; S2->S2 late retransmitted
        # SYN; SR..LA->IG SYN in window outside SYN_SENT (receiver will RST, or we hold
        # a dead connection); TW,CL->SS reopened connection (RFC 1122)
        (sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2),
        # synack: NO->IV too late; SS->IV client cannot send SYN then SYN/ACK;
        # SR->SR late retransmitted SYN/ACK in simultaneous open; S2->SR SYN/ACK to a
        # simultaneous SYN; ES..CL->IV SYN/ACK sent by the client
        (sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR),
        # fin: NO->IV too late; SS,S2->IV wait for the SYN/ACK first; SR,ES->FW close
        # started; FW,CW->LA FIN in both directions; LA->LA retransmitted FIN; TW,CL stay
        (sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV),
        # ack: NO->ES assumed (unused: we never pick up); SS,S2->IV no SYN/ACK seen yet;
        # SR->ES established; FW->CW close answered by ACK; LA->TW last ACK (RFC 5961
        # challenged); TW,CL stay
        (sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV),
        # rst: closes anything open
        (sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),
        # none: no RST/SYN/FIN/ACK is never valid
        (sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV),
    ),
    (  # REPLY
        # syn: NO->IV never reached; SS->S2 simultaneous open; S2->S2 retransmitted
        # simultaneous SYN; SR..LA,CL->IV SYN sent by the server; TW->SS reopened
        # connection, the server may have switched role
        (sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2),
        # synack: SS->SR standard open; S2->SR simultaneous open; SR->IG retransmitted
        # SYN/ACK; ES->IG late retransmitted SYN/ACK; FW..CL->IG may answer an ignored SYN
        (sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR),
        # fin: SS,S2->IV server may not FIN yet; SR,ES->FW close started; FW,CW->LA FIN
        # in both directions; LA->LA retransmitted FIN; TW,CL stay
        (sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV),
        # ack: SS,S2->IG might be a half-open connection; SR->SR may answer a late
        # resent SYN; ES->ES; FW->CW close answered by ACK; LA->TW last ACK (RFC 5961
        # challenged); TW->TW retransmitted last ACK; CL stays
        (sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG),
        # rst: closes anything open
        (sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),
        # none
        (sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV),
    ),
)

# Kernel defaults (seconds), indexed by TcpState; TIMEOUT_RETRANS and TIMEOUT_UNACK follow.
TIMEOUT_RETRANS, TIMEOUT_UNACK = 10, 11
TIMEOUTS: tuple[float, ...] = (
    0.0,  # NONE: never stored
    120.0,  # SYN_SENT
    60.0,  # SYN_RECV
    5 * 86400.0,  # ESTABLISHED
    120.0,  # FIN_WAIT
    60.0,  # CLOSE_WAIT
    30.0,  # LAST_ACK
    120.0,  # TIME_WAIT
    10.0,  # CLOSE
    120.0,  # SYN_SENT2
    300.0,  # RETRANS: after MAX_RETRANS identical ACKs
    300.0,  # UNACK: while data is unacknowledged
)
MAX_RETRANS = 3

# tcp_valid_flags: combinations of FIN/SYN/RST/ACK/URG a sane stack sends
# (PSH, ECE and CWR are ignored). Anything else is a scan or garbage.
_VALID_FLAGS = frozenset(
    {SYN, SYN | URG, SYN | ACK, RST, RST | ACK, FIN | ACK, FIN | ACK | URG, ACK, ACK | URG}
)


def _classify(flags: int) -> FlagClass:
    """get_conntrack_index(): RST wins, then SYN (with or without ACK), FIN, ACK."""
    if flags & RST:
        return FlagClass.RST
    if flags & SYN:
        return FlagClass.SYNACK if flags & ACK else FlagClass.SYN
    if flags & FIN:
        return FlagClass.FIN
    if flags & ACK:
        return FlagClass.ACK
    return FlagClass.NONE


# Both answers precomputed for every flag byte: one tuple index per packet.
_CLASS_OF: tuple[FlagClass, ...] = tuple(_classify(f) for f in range(256))
_VALID: tuple[bool, ...] = tuple(f & ~(ECE | CWR | PSH) in _VALID_FLAGS for f in range(256))


# Valid flags of class ACK (no SYN, FIN or RST): the segments track_established_ack() takes.
ACK_ONLY: tuple[bool, ...] = tuple(_VALID[f] and _CLASS_OF[f] == FlagClass.ACK for f in range(256))
_ACK_CLASS = int(FlagClass.ACK)


def flag_class(flags: int) -> FlagClass:
    """The flag class (row of the table) of a TCP flag byte."""
    return _CLASS_OF[flags & 0xFF]


def valid_flags(flags: int) -> bool:
    """tcp_error()'s flag check: SYN+FIN, FIN without ACK, no flags... are invalid."""
    return _VALID[flags & 0xFF]


def next_state(direction: int, flags: int, state: int) -> TcpState:
    """The bare table lookup, for callers (and tests) that want no side effects."""
    return TRANSITIONS[direction][flag_class(flags)][state]


class TcpConn(Protocol):
    """What the tracker needs of a connection entry (conntrack.Conn provides it)."""

    state: int
    expires: float
    seen_reply: bool
    assured: bool
    tcp: array | None


def start(
    conn: TcpConn, pkt: Packet, now: float, timeouts: tuple[float, ...] = TIMEOUTS
) -> tuple[Outcome, str]:
    """A first packet with no entry: seed the window from it and run it through the
    table from NONE (kernel: tcp_new). Only a SYN gets further than INVALID."""
    w = tw.new_window()
    tw.init_original(w, pkt)
    conn.tcp = w
    conn.state = sNO
    return track(conn, ORIGINAL, pkt, now, timeouts)


def pick_up(
    conn: TcpConn, pkt: Packet, now: float, timeouts: tuple[float, ...] = TIMEOUTS
) -> tuple[Outcome, str]:
    """A segment of flag class ACK with no entry, with pickup allowed (kernel: tcp_new with
    nf_conntrack_tcp_loose): the history is lost, so the sender's window is guessed from
    this packet (unscaled) and both directions are tracked liberally (SACK assumed)."""
    w = tw.new_window()
    tw.init_picked_up(w, pkt)
    conn.tcp = w
    conn.state = sNO
    return track(conn, ORIGINAL, pkt, now, timeouts)


def track(
    conn: TcpConn,
    direction: int,
    pkt: Packet,
    now: float,
    timeouts: tuple[float, ...] = TIMEOUTS,
    liberal: bool = False,
) -> tuple[Outcome, str]:
    """One packet of a known connection (kernel: nf_conntrack_tcp_packet).

    Mutates the entry (state, window, expiry, assured) and says what the table must do
    with it. ``conn.seen_reply`` must still be the value before this packet: the kernel
    sets SEEN_REPLY after the protocol handler, and the ASSURED and RST rules rely on it.
    """
    flags = pkt.tcp_flags & 0xFF
    if not _VALID[flags]:
        return O_INVALID, "invalid tcp flag combination"
    w = conn.tcp
    assert w is not None
    old = conn.state
    index = _CLASS_OF[flags]
    new = TRANSITIONS[direction][index][old]
    special = _SPECIAL.get(new)
    if special is not None:
        old, new, early = special(conn, w, direction, index, pkt, old, new)
        if early is not None:
            return early
    if new != _SKIP_WINDOW:
        res, reason = tw.in_window(w, old, direction, index, pkt, liberal)
        if res is tw.W_IGNORE:
            return O_IGNORE, reason
        if res is tw.W_INVALID:
            _shorten_on_invalid(conn, w, direction, index, now, timeouts)
            return O_INVALID, reason
    else:
        new = sCL
    return _commit(conn, w, direction, index, old, new, now, timeouts)


_MASK, _HALF, _NEG_HALF = 0xFFFFFFFF, 0x80000000, -0x80000000


def track_established_ack(
    conn: TcpConn, direction: int, pkt: Packet, now: float, timeouts: tuple[float, ...] = TIMEOUTS
) -> bool:
    """``track()`` for the packet most connections carry most of the time: a segment of flag
    class ACK (``ACK_ONLY[flags]``) in ESTABLISHED, in window. True when it has done exactly
    what ``track()`` would (window, retransmission count, timer, ASSURED) with outcome ACCEPT;
    False, having changed nothing, when ``track()`` must decide (the first segment seen from a
    side, or any window bound not met), and the caller then calls ``track()``.

    This is ``in_window`` (``_check``, ``_learn``, ``_count_retrans``), ``_commit`` and
    ``_timeout`` with the table step (ESTABLISHED -> ESTABLISHED) and every branch that cannot
    happen for such a segment taken out, and each word of the window read once into a local.
    It is one long function on purpose: it runs for nearly every packet, and the calls and
    repeated array reads of the general path cost more than the work itself. The hypothesis
    test in tests/test_tcp_states.py holds it to ``track()`` on random segments.
    """
    w = conn.tcp
    sb = tw.DIR_WORDS if direction else 0  # the sender's block of words; the receiver's is rb
    rb = tw.DIR_WORDS - sb
    s_maxwin = w[sb + MAXWIN]
    seq, ack, window = pkt.seq, pkt.ack, pkt.window
    end = (seq + pkt.payload_len) & _MASK  # no SYN or FIN to count
    s_end, s_maxend, r_end, r_maxwin = w[sb + END], w[sb + MAXEND], w[rb + END], w[rb + MAXWIN]
    maxack = s_maxwin if s_maxwin > MAXACKWINCONST else MAXACKWINCONST
    # tcp_window._check's four bounds each hold when (x mod 2**32) >= 2**31 for their x; here
    # a bound counts as met only for x in [-2**31, 0) (the usual case, no masking needed).
    # Anything else (a missed bound, a wrapped one, no window yet) is track()'s to judge.
    if not (
        s_maxwin
        and _NEG_HALF <= seq - s_maxend - 1 < 0  # I: seq not beyond the receiver's window
        and _NEG_HALF <= ack - r_end - 1 < 0  # III: acks no data not seen
        and (not r_maxwin or _NEG_HALF <= s_end - r_maxwin - 1 - end < 0)  # II: not long acked
        and _NEG_HALF <= r_end - maxack - 1 - ack < 0  # IV: ack not stale
    ):
        return False
    # tcp_window._learn. after(a, b) is (b - a) mod 2**32 >= 2**31; for d = b - a, in
    # (-2**32, 2**32), that is -2**31 <= d < 0 or d >= 2**31 (no masking of negatives).
    s_flags, r_flags = w[sb + FLAGS], w[rb + FLAGS]
    win = (window << w[sb + SCALE]) & _MASK
    if s_maxwin < win:
        w[sb + MAXWIN] = win
    d = s_end - end
    if _NEG_HALF <= d < 0 or d >= _HALF:  # after(end, s_end)
        w[sb + END] = end
        s_flags |= F_DATA_UNACKNOWLEDGED
    if not s_flags & F_MAXACK_SET:
        w[sb + MAXACK] = ack
        s_flags |= F_MAXACK_SET
    else:
        d = w[sb + MAXACK] - ack
        if _NEG_HALF <= d < 0 or d >= _HALF:  # after(ack, maxack)
            w[sb + MAXACK] = ack
    w[sb + FLAGS] = s_flags
    d = s_maxend - end
    if r_maxwin and (_NEG_HALF <= d < 0 or d >= _HALF):  # after(end, s_maxend)
        w[rb + MAXWIN] = (r_maxwin + end - s_maxend) & _MASK
    if (w[rb + MAXEND] - 1 - ack - win) & _MASK >= _HALF:  # after(ack + win, r_maxend - 1)
        w[rb + MAXEND] = (ack + win + (win == 0)) & _MASK
    if ack == r_end:
        r_flags &= ~F_DATA_UNACKNOWLEDGED
        w[rb + FLAGS] = r_flags
    # tcp_window._count_retrans, then _commit
    if (
        w[LAST_DIR] == direction
        and w[LAST_SEQ] == seq
        and w[LAST_ACK] == ack
        and w[LAST_END] == end
        and w[LAST_WIN] == window
    ):
        retrans = w[RETRANS_COUNT] = min(w[RETRANS_COUNT] + 1, 255)
    else:
        w[LAST_SEQ], w[LAST_ACK], w[LAST_END], w[LAST_WIN] = seq, ack, end, window
        retrans = w[RETRANS_COUNT] = 0
    w[LAST_INDEX] = _ACK_CLASS
    w[LAST_DIR] = direction
    # _timeout: ESTABLISHED's, unless retransmitting, unacknowledged or at a zero window
    timeout = timeouts[sES]
    if retrans >= MAX_RETRANS and timeout > timeouts[TIMEOUT_RETRANS]:
        timeout = timeouts[TIMEOUT_RETRANS]
    elif (s_flags | r_flags) & F_DATA_UNACKNOWLEDGED and timeout > timeouts[TIMEOUT_UNACK]:
        timeout = timeouts[TIMEOUT_UNACK]
    elif window == 0 and timeout > timeouts[TIMEOUT_RETRANS]:
        timeout = timeouts[TIMEOUT_RETRANS]
    if conn.seen_reply and not conn.assured:
        conn.assured = True
    conn.expires = now + timeout
    return True


# Sentinel new-state meaning "CLOSE, and skip the window check" (kernel: goto in_window).
_SKIP_WINDOW = -1
_Early = tuple[Outcome, str] | None
_Special = tuple[int, int, _Early]


def _commit(
    conn: TcpConn,
    w: array,
    direction: int,
    index: int,
    old: int,
    new: int,
    now: float,
    timeouts: tuple[float, ...],
) -> tuple[Outcome, str]:
    """The packet is in window: move the state, pick the timeout, maybe set ASSURED."""
    w[tw.LAST_INDEX] = index
    w[tw.LAST_DIR] = direction
    conn.state = new
    if old != new and new == sFW:
        w[direction * tw.DIR_WORDS + tw.FLAGS] |= tw.F_CLOSE_INIT
    timeout = _timeout(w, index, new, timeouts)
    if not conn.seen_reply:
        if index == FlagClass.RST:
            return O_CLOSED, "reset before any reply"
        if index == FlagClass.SYN and old == sSS:
            return O_ACCEPT, ""  # a retransmitted SYN must not keep the entry alive
    elif not conn.assured and old in (sSR, sES) and new == sES:
        conn.assured = True  # only the ACK of the SYN/ACK proves a real connection
    conn.expires = now + timeout
    return O_ACCEPT, ""


def _timeout(w: array, index: int, new: int, timeouts: tuple[float, ...]) -> float:
    """Shorter timers for retransmitting, reset, unacknowledged or zero-window flows."""
    base = timeouts[new]
    if w[tw.RETRANS_COUNT] >= MAX_RETRANS and base > timeouts[TIMEOUT_RETRANS]:
        return timeouts[TIMEOUT_RETRANS]
    if index == FlagClass.RST:
        return timeouts[sCL]
    unacked = (w[tw.FLAGS] | w[tw.DIR_WORDS + tw.FLAGS]) & tw.F_DATA_UNACKNOWLEDGED
    if unacked and base > timeouts[TIMEOUT_UNACK]:
        return timeouts[TIMEOUT_UNACK]
    if w[tw.LAST_WIN] == 0 and base > timeouts[TIMEOUT_RETRANS]:
        return timeouts[TIMEOUT_RETRANS]
    return base


def _syn_sent(
    conn: TcpConn, w: array, direction: int, index: int, pkt: Packet, old: int, new: int
) -> _Special:
    """A SYN in TIME_WAIT/CLOSE reopens the connection if it was really closed.

    RFC 1122 lets a host accept a new SYN in TIME-WAIT; an aborted connection (RST from
    the same side) may be reopened too. Otherwise we may be out of sync: ignore it.
    """
    if old < sTW:
        return old, new, None
    closing = (w[tw.FLAGS] | w[tw.DIR_WORDS + tw.FLAGS]) & tw.F_CLOSE_INIT
    aborted = w[tw.LAST_DIR] == direction and w[tw.LAST_INDEX] == FlagClass.RST
    if closing or aborted:
        return old, new, (O_REOPEN, "SYN reopens a closed connection")
    return _ignore(conn, w, direction, index, pkt, old, new)


def _ignore(
    conn: TcpConn, w: array, direction: int, index: int, pkt: Packet, old: int, new: int
) -> _Special:
    """sIG: remember the packet, so that the peer's answer can resync us.

    a) a SYN in ORIGINAL: the endpoints may be in sync while we are not; note its
       options so that the SYN/ACK answering it can rebuild the window;
    b) a SYN/ACK in REPLY acknowledging exactly that SYN: resync, old state SYN_SENT;
    c) an ACK in REPLY after the SYN: maybe a challenge ACK (RFC 5961).
    """
    last_dir, last_index = w[tw.LAST_DIR], w[tw.LAST_INDEX]
    if (
        index == FlagClass.SYNACK
        and last_index == FlagClass.SYN
        and last_dir != direction
        and pkt.ack == w[tw.LAST_END]
    ):
        _resync(w, direction)
        return sSS, sSR, None
    w[tw.LAST_INDEX] = index
    w[tw.LAST_DIR] = direction
    w[tw.LAST_SEQ] = pkt.seq
    w[tw.LAST_END] = tw.seg_end(pkt)
    w[tw.LAST_WIN] = pkt.window
    if index == FlagClass.SYN and direction == ORIGINAL:
        _note_syn_options(w, pkt, old)
    if old == sSS and index == FlagClass.ACK and direction == REPLY:
        w[tw.LAST_ACK] = pkt.ack
    return old, new, (O_IGNORE, _describe(index, direction, "ignored", old))


def _note_syn_options(w: array, pkt: Packet, old: int) -> None:
    """Keep an ignored SYN's options; in LAST_ACK expect a challenge ACK for it."""
    flags = 0
    scale = 0
    if pkt.wscale >= 0:
        flags |= tw.F_WINDOW_SCALE
        scale = min(pkt.wscale, tw.MAX_WSCALE)
    if pkt.sack_perm:
        flags |= tw.F_SACK_PERM
    if old == sLA:
        flags |= tw.F_EXP_CHALLENGE_ACK
    w[tw.LAST_FLAGS] = flags
    w[tw.LAST_WSCALE] = scale


def _resync(w: array, direction: int) -> None:
    """Rebuild the SYN sender's window from the ignored SYN we annotated."""
    base = w[tw.LAST_DIR] * tw.DIR_WORDS
    w[base + tw.END] = w[tw.LAST_END]
    w[base + tw.MAXEND] = w[tw.LAST_END]
    w[base + tw.MAXWIN] = w[tw.LAST_WIN] or 1
    w[base + tw.SCALE] = w[tw.LAST_WSCALE]
    w[tw.LAST_FLAGS] &= ~tw.F_EXP_CHALLENGE_ACK & 0xFFFFFFFF
    w[base + tw.FLAGS] = w[tw.LAST_FLAGS]
    tw.reset_dir(w, direction)


def _invalid(
    conn: TcpConn, w: array, direction: int, index: int, pkt: Packet, old: int, new: int
) -> _Special:
    """sIV: the packet makes no sense in this state."""
    return old, new, (O_INVALID, _describe(index, direction, "invalid", old))


def _describe(index: int, direction: int, what: str, old: int) -> str:
    """The kernel's log line, with names instead of numbers."""
    cls = FlagClass(index).name.lower()
    side = "original" if direction == ORIGINAL else "reply"
    return f"{cls} in {side} direction {what} in state {TcpState(old).name}"


def _time_wait(
    conn: TcpConn, w: array, direction: int, index: int, pkt: Packet, old: int, new: int
) -> _Special:
    """An ACK answering a SYN we let through in LAST_ACK is a challenge ACK (RFC 5961),
    not the last ACK of the close: do not move to TIME_WAIT on it."""
    if (
        old == sLA
        and index == FlagClass.ACK
        and w[tw.LAST_DIR] != direction
        and w[tw.LAST_INDEX] == FlagClass.SYN
        and w[tw.LAST_FLAGS] & tw.F_EXP_CHALLENGE_ACK
    ):
        w[tw.LAST_FLAGS] &= ~tw.F_EXP_CHALLENGE_ACK & 0xFFFFFFFF
        return old, new, (O_IGNORE, "challenge-ack ignored")
    return old, new, None


def _syn_sent2(
    conn: TcpConn, w: array, direction: int, index: int, pkt: Packet, old: int, new: int
) -> _Special:
    """The table alone cannot finish a simultaneous open: remember we are in one."""
    w[tw.LAST_FLAGS] |= tw.F_SIMULTANEOUS_OPEN
    return old, new, None


def _syn_recv(
    conn: TcpConn, w: array, direction: int, index: int, pkt: Packet, old: int, new: int
) -> _Special:
    """In a simultaneous open the REPLY side's ACK completes the handshake."""
    if direction == REPLY and index == FlagClass.ACK and w[tw.LAST_FLAGS] & tw.F_SIMULTANEOUS_OPEN:
        new = sES
    return old, new, None


def _close(
    conn: TcpConn, w: array, direction: int, index: int, pkt: Packet, old: int, new: int
) -> _Special:
    """RST validation: only a RST whose sequence number the peer would accept closes us.

    A blind RST (RFC 5961) with an in-window but inexact sequence keeps the state, so the
    endpoint's challenge ACK can pass; a RST before the peer's highest ACK is invalid.
    """
    if index != FlagClass.RST:
        return old, new, None
    if old in (sFW, sLA, sTW, sCL, sCW):  # tcp_can_early_drop: the tuple may be reused
        return old, _SKIP_WINDOW, None
    seq = pkt.seq
    peer = (1 - direction) * tw.DIR_WORDS
    # nf_conntrack_tcp_established(): ESTABLISHED and ASSURED
    established = conn.assured and old == sES
    if w[peer + tw.FLAGS] & tw.F_MAXACK_SET and w[tw.LAST_INDEX] != FlagClass.SYN:
        maxack = w[peer + tw.MAXACK]
        if seq == 0 and not established:
            return old, new, None  # most likely answers a SYN we let through
        if tw.before(seq, maxack):
            return old, new, (O_INVALID, "invalid rst")
        if not established or seq == maxack:
            return old, new, None
        last = w[tw.LAST_INDEX], w[tw.LAST_DIR], w[tw.LAST_END]
        if last == (FlagClass.ACK, direction, seq):
            return old, new, None  # RST closing a train of our own segments
        new = old  # inexact sequence: keep the state, let the challenge ACK through
    return _rst_answers(conn, w, direction, pkt, old, new)


def _rst_answers(
    conn: TcpConn, w: array, direction: int, pkt: Packet, old: int, new: int
) -> _Special:
    """A RST answering a SYN or ACK we let through while out of sync closes the entry
    without a window check (it may acknowledge segments we ignored)."""
    last_index = w[tw.LAST_INDEX]
    answers_ignored = (conn.seen_reply and last_index == FlagClass.SYN) or (
        not conn.assured and last_index == FlagClass.ACK
    )
    if answers_ignored and pkt.ack == w[tw.LAST_END]:
        return old, _SKIP_WINDOW, None
    challenged = old == sSS and last_index == FlagClass.ACK and w[tw.LAST_DIR] == REPLY
    if challenged and pkt.seq == w[tw.LAST_ACK]:  # reset answering a challenge ACK
        return old, _SKIP_WINDOW, None
    return old, new, None


def _shorten_on_invalid(
    conn: TcpConn, w: array, direction: int, index: int, now: float, timeouts: tuple[float, ...]
) -> None:
    """An out-of-window FIN/RST answering the peer's FIN/RST means we are out of sync:
    do not keep an ASSURED entry in ESTABLISHED for days (kernel: nf_tcp_handle_invalid)."""
    if not conn.assured or index not in (FlagClass.RST, FlagClass.FIN):
        return
    if w[tw.LAST_DIR] != direction and w[tw.LAST_INDEX] in (FlagClass.FIN, FlagClass.RST):
        remaining = conn.expires - now
        if remaining >= 120.0 and remaining > timeouts[TIMEOUT_UNACK]:
            conn.expires = now + timeouts[TIMEOUT_UNACK]
    else:
        w[tw.LAST_INDEX] = index
        w[tw.LAST_DIR] = direction


_SPECIAL = {
    sSS: _syn_sent,
    sIG: _ignore,
    sIV: _invalid,
    sTW: _time_wait,
    sS2: _syn_sent2,
    sSR: _syn_recv,
    sCL: _close,
}
