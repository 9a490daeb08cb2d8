"""The TCP state machine: every cell of the table against a reviewed golden copy, the
kernel's special cases, window tracking, and random flag sequences."""

from __future__ import annotations

from array import array
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fw.core.protocols import ACK, CWR, ECE, FIN, PSH, RST, SYN, TCP, URG
from fw.engine import tcp_states as ts
from fw.engine import tcp_window as tw
from fw.engine.conntrack import Conn
from fw.engine.packet import Packet
from fw.engine.tcp_states import FlagClass, Outcome, TcpState
from fw.engine.tcp_window import WindowResult

GOLDEN = Path(__file__).parent / "golden" / "tcp_states.txt"
STATES = list(TcpState)[:10]
C_ISN, S_ISN = 1000, 900_000


def render_table() -> str:
    """The table and timeouts as reviewable text, one cell per line."""
    lines = [
        "# fw.engine.tcp_states.TRANSITIONS, ported from Linux v6.1",
        "# (net/netfilter/nf_conntrack_proto_tcp.c, tcp_conntracks[2][6][TCP_CONNTRACK_MAX])",
        "# direction flags  old state   -> new state (INVALID = sIV, IGNORE = sIG)",
    ]
    for direction, dname in enumerate(("ORIGINAL", "REPLY")):
        for cls in FlagClass:
            for old in STATES:
                new = ts.TRANSITIONS[direction][cls][old]
                lines.append(f"{dname:9} {cls.name.lower():6} {old.name:11} -> {new.name}")
    lines.append("# timeouts (seconds)")
    names = [s.name for s in STATES] + ["RETRANS", "UNACK"]
    for name, seconds in zip(names, ts.TIMEOUTS, strict=True):
        lines.append(f"{name:11} {seconds:g}")
    return "\n".join(lines) + "\n"


def test_table_matches_golden() -> None:
    actual = render_table()
    expected = GOLDEN.read_text()
    actual_path = GOLDEN.with_suffix(".txt.actual")
    if actual != expected:
        actual_path.write_text(actual)
        pytest.fail(f"TCP table differs from {GOLDEN.name}; see {actual_path}")
    actual_path.unlink(missing_ok=True)


def test_table_shape_and_kernel_landmarks() -> None:
    assert len(ts.TRANSITIONS) == 2
    assert all(len(row) == 10 for d in ts.TRANSITIONS for row in d)
    assert ts.next_state(0, SYN, TcpState.NONE) is TcpState.SYN_SENT
    assert ts.next_state(1, SYN | ACK, TcpState.SYN_SENT) is TcpState.SYN_RECV
    assert ts.next_state(0, ACK, TcpState.SYN_RECV) is TcpState.ESTABLISHED
    assert ts.next_state(1, SYN, TcpState.SYN_SENT) is TcpState.SYN_SENT2
    assert ts.next_state(1, SYN, TcpState.TIME_WAIT) is TcpState.SYN_SENT
    assert ts.next_state(0, SYN | ACK, TcpState.ESTABLISHED) is TcpState.INVALID
    assert ts.next_state(1, SYN | ACK, TcpState.ESTABLISHED) is TcpState.IGNORE


@pytest.mark.parametrize(
    ("flags", "cls"),
    [
        (SYN, FlagClass.SYN),
        (SYN | ACK, FlagClass.SYNACK),
        (SYN | RST, FlagClass.RST),  # RST wins, as in get_conntrack_index()
        (SYN | FIN, FlagClass.SYN),  # SYN before FIN
        (FIN | ACK, FlagClass.FIN),
        (ACK | PSH, FlagClass.ACK),
        (RST | ACK, FlagClass.RST),
        (PSH | URG, FlagClass.NONE),
        (0, FlagClass.NONE),
    ],
)
def test_flag_class(flags: int, cls: FlagClass) -> None:
    assert ts.flag_class(flags) is cls


@pytest.mark.parametrize(
    ("flags", "valid"),
    [
        (SYN, True),
        (SYN | ACK | ECE | CWR, True),
        (ACK | PSH, True),
        (FIN | ACK, True),
        (RST, True),
        (0, False),  # NULL scan
        (FIN, False),  # FIN scan
        (FIN | PSH | URG, False),  # Xmas scan
        (SYN | FIN, False),
        (SYN | RST, False),
    ],
)
def test_valid_flag_combinations(flags: int, valid: bool) -> None:
    assert ts.valid_flags(flags) is valid


def test_timeouts_are_linux_defaults() -> None:
    t = dict(zip([s.name for s in STATES], ts.TIMEOUTS, strict=False))
    assert t == {
        "NONE": 0.0, "SYN_SENT": 120.0, "SYN_RECV": 60.0, "ESTABLISHED": 432000.0,
        "FIN_WAIT": 120.0, "CLOSE_WAIT": 60.0, "LAST_ACK": 30.0, "TIME_WAIT": 120.0,
        "CLOSE": 10.0, "SYN_SENT2": 120.0,
    }  # fmt: skip
    assert ts.TIMEOUTS[ts.TIMEOUT_RETRANS] == ts.TIMEOUTS[ts.TIMEOUT_UNACK] == 300.0


# -- the tracker on its own ---------------------------------------------------------


def seg(direction: int, flags: int, seq: int, ack: int = 0, data: int = 0, **kw: int) -> Packet:
    src, dst = (1, 2) if direction == 0 else (2, 1)
    return Packet(
        b"", family=4, src=src, dst=dst, proto=TCP, tcp_flags=flags, seq=seq, ack=ack,
        window=kw.pop("window", 64240), payload_len=data, **kw,
    )  # fmt: skip


def opened() -> Conn:
    """An entry after SYN, SYN/ACK, ACK: client seq C_ISN+1, server S_ISN+1."""
    conn = Conn(0, 1, TCP, 4, TcpState.NONE, 0.0, 0.0, 1)
    assert ts.start(conn, seg(0, SYN, C_ISN), 0.0)[0] is Outcome.ACCEPT
    assert ts.track(conn, 1, seg(1, SYN | ACK, S_ISN, C_ISN + 1), 0.0)[0] is Outcome.ACCEPT
    conn.seen_reply = True
    assert ts.track(conn, 0, seg(0, ACK, C_ISN + 1, S_ISN + 1), 0.0)[0] is Outcome.ACCEPT
    assert conn.state == TcpState.ESTABLISHED and conn.assured
    return conn


def test_syn_in_established_is_ignored_and_changes_nothing() -> None:
    conn = opened()
    outcome, reason = ts.track(conn, 0, seg(0, SYN, 5), 1.0)
    assert outcome is Outcome.IGNORE
    assert reason == "syn in original direction ignored in state ESTABLISHED"
    assert conn.state == TcpState.ESTABLISHED and conn.expires == 432000.0


def test_synack_answering_an_ignored_syn_resyncs() -> None:
    """The endpoints restarted behind our back: the SYN we ignored is acknowledged."""
    conn = opened()
    assert ts.track(conn, 0, seg(0, SYN, 50_000), 1.0)[0] is Outcome.IGNORE
    outcome, _ = ts.track(conn, 1, seg(1, SYN | ACK, 70_000, 50_001), 1.0)
    assert outcome is Outcome.ACCEPT and conn.state == TcpState.SYN_RECV
    assert ts.track(conn, 0, seg(0, ACK, 50_001, 70_001), 1.0)[0] is Outcome.ACCEPT
    assert conn.state == TcpState.ESTABLISHED


def test_challenge_ack_in_last_ack_does_not_close() -> None:
    conn = opened()
    ts.track(conn, 0, seg(0, FIN | ACK, C_ISN + 1, S_ISN + 1), 1.0)
    ts.track(conn, 1, seg(1, FIN | ACK, S_ISN + 1, C_ISN + 2), 1.0)
    assert conn.state == TcpState.LAST_ACK
    assert ts.track(conn, 0, seg(0, SYN, 123_456), 2.0)[0] is Outcome.IGNORE
    outcome, reason = ts.track(conn, 1, seg(1, ACK, S_ISN + 2, C_ISN + 2), 2.0)
    assert (outcome, reason) == (Outcome.IGNORE, "challenge-ack ignored")
    assert conn.state == TcpState.LAST_ACK


def test_syn_in_close_after_rst_reopens() -> None:
    conn = opened()
    assert ts.track(conn, 0, seg(0, RST, C_ISN + 1), 1.0)[0] is Outcome.ACCEPT
    assert conn.state == TcpState.CLOSE
    assert ts.track(conn, 0, seg(0, SYN, 77), 2.0)[0] is Outcome.REOPEN


def test_inexact_rst_keeps_the_state_for_a_challenge_ack() -> None:
    conn = opened()
    outcome, _ = ts.track(conn, 1, seg(1, RST, S_ISN + 100), 1.0)
    assert outcome is Outcome.ACCEPT and conn.state == TcpState.ESTABLISHED
    assert conn.expires == 11.0  # but only for the CLOSE timeout


def test_invalid_flags_are_rejected_whatever_the_state() -> None:
    conn = opened()
    outcome, reason = ts.track(conn, 0, seg(0, SYN | FIN, C_ISN + 1), 1.0)
    assert (outcome, reason) == (Outcome.INVALID, "invalid tcp flag combination")


# -- window tracking ----------------------------------------------------------------


def test_retransmitted_data_is_in_window() -> None:
    conn = opened()
    data = seg(0, ACK | PSH, C_ISN + 1, S_ISN + 1, data=1000)
    assert ts.track(conn, 0, data, 1.0)[0] is Outcome.ACCEPT
    assert ts.track(conn, 0, data, 1.2)[0] is Outcome.ACCEPT
    assert conn.expires == 301.2  # data not yet acknowledged: the UNACK timer


def test_segment_beyond_the_window_is_invalid() -> None:
    conn = opened()
    far = seg(0, ACK, C_ISN + 1 + 200_000, S_ISN + 1, data=100)
    outcome, reason = ts.track(conn, 0, far, 1.0)
    assert outcome is Outcome.INVALID and reason.startswith("SEQ is over upper bound")


def test_ack_of_unsent_data_is_invalid() -> None:
    conn = opened()
    outcome, reason = ts.track(conn, 1, seg(1, ACK, S_ISN + 1, C_ISN + 5000), 1.0)
    assert outcome is Outcome.INVALID and reason.startswith("ACK is over upper bound")


def test_data_acked_long_ago_is_ignored_not_invalid() -> None:
    conn = opened()
    seq = C_ISN + 1
    for _ in range(40):  # push the client's window far beyond the start
        ts.track(conn, 0, seg(0, ACK, seq, S_ISN + 1, data=60_000), 1.0)
        seq += 60_000
        ts.track(conn, 1, seg(1, ACK, S_ISN + 1, seq), 1.0)
    outcome, reason = ts.track(conn, 0, seg(0, ACK, C_ISN + 1, S_ISN + 1, data=10), 1.0)
    assert outcome is Outcome.IGNORE and reason.startswith("SEQ is under lower bound")


def test_window_scaling_needs_both_sides() -> None:
    w = tw.new_window()
    tw.init_original(w, seg(0, SYN, C_ISN, wscale=7))
    tw.init_sender(w, 1, seg(1, SYN | ACK, S_ISN, C_ISN + 1))
    assert (w[tw.SCALE], w[6 + tw.SCALE]) == (0, 0)
    w = tw.new_window()
    tw.init_original(w, seg(0, SYN, C_ISN, wscale=7))
    tw.init_sender(w, 1, seg(1, SYN | ACK, S_ISN, C_ISN + 1, wscale=20))
    assert (w[tw.SCALE], w[6 + tw.SCALE]) == (7, 14)


def test_liberal_accepts_what_strict_rejects() -> None:
    conn = opened()
    far = seg(0, ACK, C_ISN + 1 + 200_000, S_ISN + 1, data=100)
    assert tw.in_window(conn.tcp, conn.state, 0, FlagClass.ACK, far, liberal=True) == (
        WindowResult.ACCEPT,
        "",
    )


def test_sequence_arithmetic_wraps() -> None:
    assert tw.before(0xFFFFFFF0, 0x10) and tw.after(0x10, 0xFFFFFFF0)
    assert not tw.before(5, 5) and not tw.after(5, 5)


# -- random sequences ---------------------------------------------------------------

_FLAG_BYTES = st.sampled_from([SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK, 0])
_STEP = st.tuples(
    st.integers(0, 1), _FLAG_BYTES | st.integers(0, 255), st.integers(0, 2**32 - 1), st.booleans()
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_STEP, max_size=30), st.integers(0, 2**32 - 1))
def test_random_sequences_stay_in_defined_states(steps: list, isn: int) -> None:
    conn = Conn(0, 1, TCP, 4, TcpState.NONE, 0.0, 0.0, 1)
    ts.start(conn, seg(0, SYN, isn), 0.0)
    seqs = [(isn + 1) & 0xFFFFFFFF, 0]
    for now, (direction, flags, rnd, sane) in enumerate(steps, start=1):
        seq = seqs[direction] if sane else rnd
        ack = seqs[1 - direction] if sane else rnd ^ 0x5A5A
        outcome, reason = ts.track(conn, direction, seg(direction, flags, seq, ack), float(now))
        assert outcome in Outcome and isinstance(reason, str)
        assert conn.state in STATES and conn.state != TcpState.NONE
        if outcome is Outcome.REOPEN or outcome is Outcome.CLOSED:
            break
        if direction == 1 and outcome is not Outcome.INVALID:
            conn.seen_reply = True
        if flags & SYN and direction == 1 and not seqs[1]:
            seqs[1] = (seq + 1) & 0xFFFFFFFF


# -- the fast path for established connections --------------------------------------


def opened_at(c_isn: int, s_isn: int, wscale: int) -> Conn:
    """An entry after SYN, SYN/ACK, ACK with the given ISNs and window scale (-1: none)."""
    conn = Conn(0, 1, TCP, 4, TcpState.NONE, 0.0, 0.0, 1)
    c_next, s_next = (c_isn + 1) & 0xFFFFFFFF, (s_isn + 1) & 0xFFFFFFFF
    assert ts.start(conn, seg(0, SYN, c_isn, wscale=wscale), 0.0)[0] is Outcome.ACCEPT
    synack = seg(1, SYN | ACK, s_isn, c_next, wscale=wscale)
    assert ts.track(conn, 1, synack, 0.0)[0] is Outcome.ACCEPT
    conn.seen_reply = True
    assert ts.track(conn, 0, seg(0, ACK, c_next, s_next), 0.0)[0] is Outcome.ACCEPT
    return conn


def clone(conn: Conn) -> Conn:
    copy = Conn(conn.okey, conn.nat_rkey, conn.proto, conn.family, conn.state, conn.expires,
                conn.created, conn.id, conn.seen_reply, conn.assured)  # fmt: skip
    copy.tcp = array("I", conn.tcp)
    return copy


def snapshot(conn: Conn) -> tuple:
    return (conn.state, conn.expires, conn.seen_reply, conn.assured, list(conn.tcp))


_ACK_FLAGS = st.sampled_from([ACK, ACK | PSH, ACK | URG, ACK | PSH | ECE | CWR])
_FAST_STEP = st.tuples(
    st.integers(0, 1),  # direction
    _ACK_FLAGS,
    st.sampled_from([0] * 8 + [1, -1, 1000, -1000, 70_000, -70_000, 2**31, 2**31 + 5]),  # seq
    st.sampled_from([0] * 8 + [1, -1, 100, 66_001, -66_001, 2**31]),  # ack, off the expected
    st.sampled_from([0, 1, 100, 1448, 65_535]),  # payload
    st.sampled_from([0, 1, 512, 29_200, 65_535]),  # window
    st.booleans(),  # repeat the previous segment exactly (a retransmission)
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_FAST_STEP, min_size=1, max_size=25),
    st.sampled_from([1000, 2**32 - 3000, 2**32 - 65_000, 2**31 - 10, 0]),
    st.sampled_from([900_000, 2**32 - 1, 2**32 - 65_000, 2**31]),
    st.sampled_from([-1, 0, 7, 14]),
)
def test_established_fast_path_does_what_track_does(
    steps: list, c_isn: int, s_isn: int, wscale: int
) -> None:
    """Whenever track_established_ack() takes a segment, track() would have accepted it and
    left the entry exactly so; when it declines, it has changed nothing."""
    conn = opened_at(c_isn, s_isn, wscale)
    nxt = [(c_isn + 1) & 0xFFFFFFFF, (s_isn + 1) & 0xFFFFFFFF]
    taken = 0
    last = None
    for now, (direction, flags, dseq, dack, data, window, again) in enumerate(steps, start=1):
        if again and last is not None:
            pkt = last
            direction = 0 if pkt.src == 1 else 1
        else:
            seq = (nxt[direction] + dseq) & 0xFFFFFFFF
            ack = (nxt[1 - direction] + dack) & 0xFFFFFFFF
            pkt = seg(direction, flags, seq, ack, data, window=window)
        last = pkt
        before = snapshot(conn)
        fast, slow = clone(conn), clone(conn)
        expected = ts.track(slow, direction, pkt, float(now))
        if conn.state == TcpState.ESTABLISHED and ts.track_established_ack(
            fast, direction, pkt, float(now)
        ):
            taken += 1
            assert expected == (Outcome.ACCEPT, "")
            assert snapshot(fast) == snapshot(slow)
        else:
            assert snapshot(fast) == before
        conn = slow
        if expected[0] is Outcome.ACCEPT and not dseq:
            nxt[direction] = (pkt.seq + pkt.payload_len) & 0xFFFFFFFF
    TAKEN.append((taken, len(steps)))


TAKEN: list[tuple[int, int]] = []  # (segments the fast path took, segments) per example


def test_the_fast_path_was_exercised() -> None:
    """The property above means little if the fast path never took a segment."""
    if not TAKEN:
        pytest.skip("runs after test_established_fast_path_does_what_track_does")
    assert sum(t for t, _ in TAKEN) > sum(n for _, n in TAKEN) // 4
