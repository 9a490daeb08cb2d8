"""TCP sequence/window tracking, ported from Linux's ``tcp_in_window()`` (v6.1).

A firewall in the middle cannot know the endpoints' real windows, so, like the kernel,
it keeps per direction the highest sequence end seen (``td_end``), the highest right
window edge the peer advertised (``td_maxend``), the largest window seen
(``td_maxwin``) and the negotiated window scale, and accepts a segment if it
intersects what the receiver could accept and acknowledges only data that was sent:

    I.   seq <= sender.td_maxend                               (not beyond the window)
    II.  seq + len >= sender.td_end - receiver.td_maxwin       (not long since acked)
    III. ack <= receiver.td_end                                (acks only data seen)
    IV.  ack >= receiver.td_end - MAXACKWINDOW(sender)          (not a stale ack)

The decoder does not hand over SACK blocks, so the "sack" of the kernel is the ack.

All per-connection numbers live in one ``array('I')`` of unsigned 32-bit words (a
million connections must fit in memory: one small array beats two dozen Python ints).
"""

from __future__ import annotations

from array import array
from enum import IntEnum
from typing import TYPE_CHECKING

from fw.core.protocols import ACK as _ACK
from fw.core.protocols import FIN as _FIN
from fw.core.protocols import RST as _RST
from fw.core.protocols import SYN as _SYN

if TYPE_CHECKING:
    from fw.engine.packet import Packet
_MASK = 0xFFFFFFFF
_HALF = 0x80000000
MAXACKWINCONST = 66000  # the kernel's bound for check IV when windows are small
MAX_WSCALE = 14  # RFC 7323

# Word offsets of one direction's block; direction 1's block starts at DIR_WORDS.
END, MAXEND, MAXWIN, MAXACK, SCALE, FLAGS = range(6)
DIR_WORDS = 6
# Connection-wide words: what the kernel keeps in ip_ct_tcp beside seen[2].
LAST_SEQ, LAST_ACK, LAST_END, LAST_WIN = 12, 13, 14, 15
LAST_INDEX, LAST_DIR, LAST_WSCALE, LAST_FLAGS, RETRANS_COUNT = 16, 17, 18, 19, 20
WORDS = 21

# Per-direction flag bits (IP_CT_TCP_FLAG_*), and two that only live in LAST_FLAGS.
F_WINDOW_SCALE = 0x01
F_SACK_PERM = 0x02
F_CLOSE_INIT = 0x04
F_BE_LIBERAL = 0x08
F_DATA_UNACKNOWLEDGED = 0x10
F_MAXACK_SET = 0x20
F_EXP_CHALLENGE_ACK = 0x40
F_SIMULTANEOUS_OPEN = 0x80

_NONE_SET = 5  # flag class "none", the kernel's initial last_index
_ACK_SET = 3


_TEMPLATE = array("I", [0] * WORDS)
_TEMPLATE[LAST_INDEX] = _NONE_SET


class WindowResult(IntEnum):
    """What tcp_in_window decided, as nf_ct_tcp_action."""

    IGNORE = 0  # let it pass but do not learn from it (no state/timer change)
    INVALID = 1
    ACCEPT = 2


# Python 3.11 looks an enum member up through EnumType.__getattr__'s slow path (about 1 us, as
# much as a whole decode): the per-packet code reads these plain module names instead.
W_IGNORE, W_INVALID, W_ACCEPT = WindowResult.IGNORE, WindowResult.INVALID, WindowResult.ACCEPT


def new_window() -> array:
    """A zeroed tracking block; last_index starts at 'none' so no special case fires."""
    return _TEMPLATE[:]  # a slice allocates exactly WORDS words


def before(a: int, b: int) -> bool:
    """Sequence-space a < b (mod 2**32), as the kernel's before()."""
    return (a - b) & _MASK >= _HALF


def after(a: int, b: int) -> bool:
    """Sequence-space a > b (mod 2**32)."""
    return (b - a) & _MASK >= _HALF


def seg_end(pkt: Packet) -> int:
    """seq + len, where SYN and FIN each occupy one sequence number."""
    flags = pkt.tcp_flags
    extra = (1 if flags & _SYN else 0) + (1 if flags & _FIN else 0)
    return (pkt.seq + pkt.payload_len + extra) & _MASK


def _options(w: array, base: int, pkt: Packet) -> None:
    """Record window scale / SACK-permitted a SYN announced (the kernel's tcp_options)."""
    flags = w[base + FLAGS] & F_BE_LIBERAL
    scale = 0
    if pkt.wscale >= 0:
        scale = min(pkt.wscale, MAX_WSCALE)
        flags |= F_WINDOW_SCALE
    if pkt.sack_perm:
        flags |= F_SACK_PERM
    w[base + SCALE] = scale
    w[base + FLAGS] = flags


def init_original(w: array, pkt: Packet) -> None:
    """The first SYN of a connection seeds the originator's block (kernel: tcp_new)."""
    end = seg_end(pkt)
    w[END] = end
    w[MAXEND] = end
    w[MAXWIN] = pkt.window or 1
    _options(w, 0, pkt)


def init_picked_up(w: array, pkt: Packet) -> None:
    """A connection picked up in the middle (kernel: tcp_new, loose branch)."""
    end = seg_end(pkt)
    w[END] = end
    w[MAXWIN] = pkt.window or 1
    w[MAXEND] = (end + w[MAXWIN]) & _MASK
    w[FLAGS] = w[DIR_WORDS + FLAGS] = F_SACK_PERM | F_BE_LIBERAL


def init_sender(w: array, direction: int, pkt: Packet) -> None:
    """SYN/ACK (or SYN of a simultaneous open) seeds the responder's block.

    Window scaling is only in force when both SYNs carried the option (RFC 7323), so
    when the reply side lacks it, both scales drop to zero.
    """
    base = direction * DIR_WORDS
    end = seg_end(pkt)
    w[base + END] = end
    w[base + MAXEND] = end
    w[base + MAXWIN] = pkt.window or 1
    _options(w, base, pkt)
    rbase = DIR_WORDS - base
    both = w[base + FLAGS] & w[rbase + FLAGS] & F_WINDOW_SCALE
    if direction == 1 and not both:
        w[base + SCALE] = 0
        w[rbase + SCALE] = 0


def reset_dir(w: array, direction: int) -> None:
    """Forget one direction's window (kernel: nf_ct_tcp_state_reset)."""
    base = direction * DIR_WORDS
    w[base + END] = w[base + MAXEND] = w[base + MAXWIN] = w[base + MAXACK] = 0
    w[base + SCALE] = 0
    w[base + FLAGS] &= F_BE_LIBERAL


def in_window(
    w: array, state: int, direction: int, index: int, pkt: Packet, liberal: bool = False
) -> tuple[WindowResult, str]:
    """Check a segment against the tracked windows and learn from it when it fits.

    ``state`` is the TCP state before this packet and ``index`` its flag class; both
    matter only for the kernel's lenience around the handshake and its retransmission
    counting. With ``liberal`` (nf_conntrack_tcp_be_liberal) out-of-window segments are
    accepted without being learnt from.
    """
    sb = direction * DIR_WORDS
    rb = DIR_WORDS - sb
    flags = pkt.tcp_flags
    seq = pkt.seq
    ack = pkt.ack
    end = seg_end(pkt)
    win = pkt.window
    if w[sb + MAXWIN] == 0:
        early = _first_from_sender(w, sb, rb, direction, pkt, end, ack)
        if early is not None:
            return early
    elif flags & _SYN and after(end, w[sb + END]) and state in (1, 2):  # SYN_SENT, SYN_RECV
        # RFC 793: a reinitialised TCP only has to use higher sequence numbers: re-seed.
        init_sender(w, direction, pkt)
        if direction == 1 and not flags & _ACK:
            return W_ACCEPT, ""
    if not flags & _ACK or (flags & _RST and ack == 0):
        # No ACK (or a broken stack's RST|ACK with ack 0): pretend it acked everything.
        ack = w[rb + END]
    if flags & _RST and seq == 0 and state == 1:
        seq = end = w[sb + END]  # RST answering our SYN
    verdict = _check(w, sb, rb, seq, ack, end, liberal)
    if verdict is not None:
        return verdict
    _learn(w, sb, rb, seq, ack, end, win if flags & _SYN else win << w[sb + SCALE], flags)
    if index == _ACK_SET:
        _count_retrans(w, direction, seq, ack, end, win)
    return W_ACCEPT, ""


def _first_from_sender(
    w: array, sb: int, rb: int, direction: int, pkt: Packet, end: int, ack: int
) -> tuple[WindowResult, str] | None:
    """First segment seen from this side: seed its block from the packet itself."""
    if pkt.tcp_flags & _SYN:
        init_sender(w, direction, pkt)
        if not pkt.tcp_flags & _ACK:
            return W_ACCEPT, ""  # simultaneous open
        return None
    # Mid-stream: the history is lost, trust this packet's numbers.
    w[sb + END] = end
    swin = (pkt.window << w[sb + SCALE]) & _MASK
    w[sb + MAXWIN] = swin or 1
    w[sb + MAXEND] = (end + (swin or 1)) & _MASK
    if w[rb + MAXWIN] == 0:
        w[rb + END] = w[rb + MAXEND] = ack  # let III and IV pass until the peer speaks
    elif ack == (w[rb + END] + 1) & _MASK:
        w[rb + END] = ack  # likely a keepalive reply
    return None


def _check(
    w: array, sb: int, rb: int, seq: int, ack: int, end: int, liberal: bool
) -> tuple[WindowResult, str] | None:
    """The four bounds, in the kernel's order and with its messages; None when in window."""
    liberal = liberal or bool(w[sb + FLAGS] & F_BE_LIBERAL)
    r_end, r_maxwin = w[rb + END], w[rb + MAXWIN]
    s_maxwin = w[sb + MAXWIN]
    maxack = s_maxwin if s_maxwin > MAXACKWINCONST else MAXACKWINCONST
    # before()/after() inlined: this runs for every TCP packet.
    if (seq - w[sb + MAXEND] - 1) & _MASK < _HALF:  # I: not before(seq, maxend + 1)
        return _overshoot(w, sb, rb, ack, end, maxack, liberal)
    if (ack - r_end - 1) & _MASK < _HALF:  # III: not before(ack, r_end + 1)
        bound = (r_end + 1) & _MASK
        return _bad(
            liberal,
            W_INVALID,
            f"ACK is over upper bound {bound} (ACKed data not seen yet)",
        )
    low = (w[sb + END] - r_maxwin - 1) & _MASK
    if r_maxwin and (low - end) & _MASK < _HALF:  # II: not after(end, low)
        why = f"SEQ is under lower bound {low} (already ACKed data retransmitted)"
        return _bad(liberal, W_IGNORE, why)
    low = (r_end - maxack - 1) & _MASK
    if (low - ack) & _MASK < _HALF:  # IV: not after(ack, low)
        why = f"ignored ACK under lower bound {low} (possible overly delayed)"
        return _bad(liberal, W_IGNORE, why)
    return None


def _overshoot(
    w: array, sb: int, rb: int, ack: int, end: int, maxack: int, liberal: bool
) -> tuple[WindowResult, str]:
    """Check I failed: tolerate stacks that send a little more than the window allows."""
    r_end, r_maxwin = w[rb + END], w[rb + MAXWIN]
    overshot = (end - w[sb + MAXEND] + 1) & _MASK
    ack_ok = after(ack, (r_end - maxack - 1) & _MASK)
    in_recv_win = r_maxwin and after(end, (w[sb + END] - r_maxwin - 1) & _MASK)
    if in_recv_win and ack_ok and overshot <= r_maxwin and before(ack, (r_end + 1) & _MASK):
        # Learn the end anyway, or the peer's ACK for it would later look bogus.
        w[sb + END] = end
        w[sb + FLAGS] |= F_DATA_UNACKNOWLEDGED
        return _bad(liberal, W_IGNORE, f"{overshot} bytes more than expected")
    bound = (w[sb + MAXEND] + 1) & _MASK
    why = f"SEQ is over upper bound {bound} (over the window of the receiver)"
    return _bad(liberal, W_INVALID, why)


def _bad(liberal: bool, result: WindowResult, reason: str) -> tuple[WindowResult, str]:
    """Liberal tracking accepts what the strict checks reject (kernel: nf_tcp_log_invalid)."""
    if liberal:
        return W_ACCEPT, ""
    return result, reason


def _learn(w: array, sb: int, rb: int, seq: int, ack: int, end: int, win: int, flags: int) -> None:
    """Widen both sides' windows from an accepted segment."""
    win &= _MASK
    if w[sb + MAXWIN] < win:
        w[sb + MAXWIN] = win
    if after(end, w[sb + END]):
        w[sb + END] = end
        w[sb + FLAGS] |= F_DATA_UNACKNOWLEDGED
    if flags & _ACK:
        if not w[sb + FLAGS] & F_MAXACK_SET:
            w[sb + MAXACK] = ack
            w[sb + FLAGS] |= F_MAXACK_SET
        elif after(ack, w[sb + MAXACK]):
            w[sb + MAXACK] = ack
    if w[rb + MAXWIN] != 0 and after(end, w[sb + MAXEND]):
        w[rb + MAXWIN] = (w[rb + MAXWIN] + end - w[sb + MAXEND]) & _MASK
    if after((ack + win) & _MASK, (w[rb + MAXEND] - 1) & _MASK):
        w[rb + MAXEND] = (ack + win + (1 if win == 0 else 0)) & _MASK
    if ack == w[rb + END]:
        w[rb + FLAGS] &= ~F_DATA_UNACKNOWLEDGED & _MASK


def _count_retrans(w: array, direction: int, seq: int, ack: int, end: int, win: int) -> None:
    """Identical pure ACKs in a row count as retransmissions (they shorten the timeout)."""
    if (
        w[LAST_DIR] == direction
        and w[LAST_SEQ] == seq
        and w[LAST_ACK] == ack
        and w[LAST_END] == end
        and w[LAST_WIN] == win
    ):
        w[RETRANS_COUNT] = min(w[RETRANS_COUNT] + 1, 255)
        return
    w[LAST_DIR] = direction
    w[LAST_SEQ] = seq
    w[LAST_ACK] = ack
    w[LAST_END] = end
    w[LAST_WIN] = win
    w[RETRANS_COUNT] = 0
