"""The connection table, specified as conversations between a client, a server and an
attacker, with a clock advanced by hand."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fw.core.protocols import ACK, FIN, ICMP, PSH, RST, SYN, TCP, UDP
from fw.engine.conntrack import (
    Conn,
    ConnTable,
    CtVerdict,
    FlowState,
    key_of,
    pack,
    reverse,
    reverse_packed,
    unpack,
)
from fw.engine.packet import Packet
from fw.engine.tcp_states import TcpState
from fw.engine.timers import Timers

CLIENT = 0xC0000202  # 192.0.2.2
SERVER = 0xC6336402  # 198.51.100.2
ATTACKER = 0xCB00710A  # 203.0.113.10
ROUTER = 0xC6336401  # 198.51.100.1
_FLAGS = {"S": SYN, "A": ACK, "F": FIN, "R": RST, "P": PSH}


def flags_of(text: str) -> int:
    return sum(_FLAGS[c] for c in text)


@dataclass
class Side:
    addr: int
    port: int
    next_seq: int
    last: Packet | None = None


@dataclass
class TcpFlow:
    """A TCP conversation that keeps sequence numbers right unless told otherwise.

    ``flow.client("S")`` sends a SYN from the client and returns conntrack's verdict;
    a verdict for a new connection is confirmed (the packet was accepted) unless
    ``confirm=False``.
    """

    table: ConnTable
    now: float = 0.0
    c: Side = field(default_factory=lambda: Side(CLIENT, 40000, 1000))
    s: Side = field(default_factory=lambda: Side(SERVER, 443, 900_000))

    def client(self, flags: str, data: int = 0, **over: int) -> CtVerdict:
        return self._send(self.c, self.s, flags, data, over)

    def server(self, flags: str, data: int = 0, **over: int) -> CtVerdict:
        return self._send(self.s, self.c, flags, data, over)

    def resend(self, side: str) -> CtVerdict:
        """Retransmit the last segment of 'client' or 'server' unchanged."""
        pkt = (self.c if side == "client" else self.s).last
        assert pkt is not None
        return self._deliver(pkt, True)

    def _send(self, me: Side, peer: Side, flags: str, data: int, over: dict) -> CtVerdict:
        f = flags_of(flags)
        confirm = bool(over.pop("confirm", True))
        pkt = Packet(
            b"",
            family=4,
            src=me.addr,
            dst=peer.addr,
            proto=TCP,
            length=40 + data,
            sport=me.port,
            dport=peer.port,
            tcp_flags=f,
            seq=me.next_seq,
            ack=peer.next_seq if f & ACK else 0,
            window=64240,
            payload_len=data,
        )
        for name, value in over.items():
            setattr(pkt, name, value)
        if "seq" not in over:
            me.next_seq = (me.next_seq + data + bool(f & SYN) + bool(f & FIN)) & 0xFFFFFFFF
        me.last = pkt
        return self._deliver(pkt, confirm)

    def _deliver(self, pkt: Packet, confirm: bool) -> CtVerdict:
        verdict = self.table.lookup(pkt, self.now)
        if confirm and verdict.pending:
            assert self.table.confirm(verdict, self.now)
        return verdict

    @property
    def conn(self) -> Conn:
        """The table's entry for this flow (there must be one)."""
        key = (TCP, self.c.addr, self.c.port, self.s.addr, self.s.port)
        return next(c for c in self.table if c.orig == key)


def udp(src: int, sport: int, dst: int, dport: int, size: int = 40) -> Packet:
    return Packet(
        b"",
        family=4,
        src=src,
        dst=dst,
        proto=UDP,
        length=28 + size,
        sport=sport,
        dport=dport,
        payload_len=size,
    )


def icmp(src: int, dst: int, itype: int, ident: int = -1, inner: Packet | None = None) -> Packet:
    return Packet(
        b"",
        family=4,
        src=src,
        dst=dst,
        proto=ICMP,
        length=64,
        icmp_type=itype,
        icmp_code=0,
        icmp_id=ident,
        inner=inner,
    )


def handshake(flow: TcpFlow) -> None:
    assert flow.client("S").state == "new"
    assert flow.server("SA").state == "established"
    assert flow.client("A").state == "established"


@pytest.fixture
def table() -> ConnTable:
    return ConnTable()


# -- TCP ----------------------------------------------------------------------------


def test_three_way_handshake(table: ConnTable) -> None:
    flow = TcpFlow(table)
    syn = flow.client("S", confirm=False)
    assert (syn.state, syn.pending, syn.reason) == ("new", True, "tcp SYN opens a connection")
    assert len(table) == 0
    assert table.confirm(syn, 0.0) and len(table) == 1
    assert flow.conn.state == TcpState.SYN_SENT and flow.conn.expires == 120.0
    synack = flow.server("SA")
    assert (synack.state, synack.direction) == ("established", 1)
    assert flow.conn.state == TcpState.SYN_RECV and not flow.conn.assured
    assert flow.conn.expires == 60.0
    ack = flow.client("A")
    assert (ack.state, ack.direction) == ("established", 0)
    assert flow.conn.state == TcpState.ESTABLISHED
    assert flow.conn.assured  # only once the SYN/ACK is acknowledged
    assert flow.conn.expires == 5 * 86400.0


def test_data_both_ways_and_counters(table: ConnTable) -> None:
    flow = TcpFlow(table)
    handshake(flow)
    assert flow.client("PA", data=500).state == "established"
    assert flow.server("PA", data=1400).state == "established"
    assert flow.client("A").state == "established"
    conn = flow.conn
    assert (conn.orig_packets, conn.reply_packets) == (4, 2)
    assert (conn.orig_bytes, conn.reply_bytes) == (40 * 4 + 500, 40 * 2 + 1400)


def test_fin_close_both_ways_ends_in_time_wait(table: ConnTable) -> None:
    flow = TcpFlow(table)
    handshake(flow)
    flow.client("FA")
    assert flow.conn.state == TcpState.FIN_WAIT
    flow.server("A")
    assert flow.conn.state == TcpState.CLOSE_WAIT
    flow.server("FA")
    assert flow.conn.state == TcpState.LAST_ACK
    assert flow.client("A").state == "established"
    assert flow.conn.state == TcpState.TIME_WAIT
    assert flow.conn.expires == 120.0


def test_syn_in_time_wait_reopens_the_connection(table: ConnTable) -> None:
    flow = TcpFlow(table)
    handshake(flow)
    for side, flags in (("client", "FA"), ("server", "FA"), ("client", "A")):
        getattr(flow, side)(flags)
    old = flow.conn
    flow.c.next_seq += 100_000
    again = flow.client("S")
    assert (again.state, again.reason) == ("new", "SYN reopens a closed connection")
    assert flow.conn is not old and flow.conn.state == TcpState.SYN_SENT


def test_rst_closes_with_a_short_timer(table: ConnTable) -> None:
    flow = TcpFlow(table)
    handshake(flow)
    flow.now = 5.0
    assert flow.server("RA").state == "established"
    assert flow.conn.state == TcpState.CLOSE
    assert flow.conn.expires == 15.0


def test_rst_before_any_reply_removes_the_entry(table: ConnTable) -> None:
    flow = TcpFlow(table)
    flow.client("S")
    assert flow.client("R").state == "new"  # accepted, like the kernel, then forgotten
    assert len(table) == 0


def test_rst_with_an_old_sequence_number_is_invalid(table: ConnTable) -> None:
    flow = TcpFlow(table)
    handshake(flow)
    flow.client("PA", data=1000)
    flow.server("A")
    verdict = flow.client("R", seq=1000)  # behind what the server already acknowledged
    assert (verdict.state, verdict.reason) == ("invalid", "invalid rst")
    assert flow.conn.state == TcpState.ESTABLISHED


def test_simultaneous_open(table: ConnTable) -> None:
    flow = TcpFlow(table)
    flow.client("S")
    assert flow.server("S").state == "established"
    assert flow.conn.state == TcpState.SYN_SENT2
    flow.client("SA")
    assert flow.conn.state == TcpState.SYN_RECV
    assert flow.server("A").state == "established"
    assert flow.conn.state == TcpState.ESTABLISHED and flow.conn.assured


def test_retransmission_is_in_window(table: ConnTable) -> None:
    flow = TcpFlow(table)
    handshake(flow)
    flow.client("PA", data=700)
    assert flow.resend("client").state == "established"
    assert flow.resend("client").reason == ""


def test_out_of_window_segment_is_invalid(table: ConnTable) -> None:
    flow = TcpFlow(table)
    handshake(flow)
    verdict = flow.client("PA", data=100, seq=flow.c.next_seq + 10_000_000)
    assert verdict.state == "invalid"
    assert verdict.reason.startswith("SEQ is over upper bound")
    assert flow.conn.state == TcpState.ESTABLISHED


def test_liberal_tracking_accepts_out_of_window(table: ConnTable) -> None:
    flow = TcpFlow(ConnTable(liberal=True))
    handshake(flow)
    assert flow.client("PA", data=100, seq=flow.c.next_seq + 10_000_000).state == "established"


def test_ack_for_data_never_sent_is_invalid(table: ConnTable) -> None:
    flow = TcpFlow(table)
    handshake(flow)
    verdict = flow.client("A", ack=flow.s.next_seq + 50_000)
    assert verdict.state == "invalid"
    assert verdict.reason.startswith("ACK is over upper bound")


def test_unsolicited_ack_is_invalid_without_loose() -> None:
    table = ConnTable(loose=False)  # nf_conntrack_tcp_loose=0
    flow = TcpFlow(table, s=Side(ATTACKER, 443, 7))
    verdict = flow.server("A")
    assert (verdict.state, verdict.conn) == ("invalid", None)
    assert verdict.reason == "tcp: no connection, and only a SYN may open one"
    assert table.counters.invalid == 1 and len(table) == 0


def test_an_ack_picks_a_connection_up_in_the_middle(table: ConnTable) -> None:
    """Linux's default (nf_conntrack_tcp_loose=1, tcp_new()): an ACK with no entry opens one
    in ESTABLISHED, `new` until the other side answers, tracked liberally both ways (the
    window scale was never seen), so even a wild ack number passes."""
    flow = TcpFlow(table)
    first = flow.client("PA", data=100)
    assert first.state == "new" and first.reason == "tcp: picked up in the middle (loose)"
    assert first.conn.state_name == "ESTABLISHED" and len(table) == 1
    assert flow.server("A").state == "established"
    assert flow.client("A", ack=flow.s.next_seq + 10_000_000).state == "established"


def test_only_an_ack_class_segment_is_picked_up(table: ConnTable) -> None:
    for flags in ("FA", "R", "RA", "SA", "F", ""):
        verdict = TcpFlow(table).client(flags)
        assert verdict.state == "invalid", flags


def test_syn_ack_without_syn_is_invalid(table: ConnTable) -> None:
    assert TcpFlow(table).server("SA").state == "invalid"


def test_retransmitted_syn_is_still_new_and_keeps_its_timer(table: ConnTable) -> None:
    flow = TcpFlow(table)
    flow.client("S")
    flow.now = 50.0
    again = flow.resend("client")
    assert (again.state, again.pending) == ("new", False)
    assert flow.conn.expires == 120.0


def test_syn_after_timeout_is_new(table: ConnTable) -> None:
    flow = TcpFlow(table)
    handshake(flow)
    flow.client("R")
    old = flow.conn
    flow.now = 11.0  # CLOSE lasts 10 s; nobody called expire()
    assert flow.client("S").state == "new"
    assert flow.conn is not old
    assert table.expire(11.0) == [old]  # reported once, by the next expire()
    assert table.counters.expired == 1


# -- UDP, ICMP, generic -------------------------------------------------------------


def test_udp_request_reply_and_timers(table: ConnTable) -> None:
    request = table.lookup(udp(CLIENT, 5353, SERVER, 53), 0.0)
    assert request.state == "new"
    assert table.confirm(request, 0.0)
    conn = request.conn
    assert conn.expires == 30.0 and conn.state == FlowState.UNREPLIED
    reply = table.lookup(udp(SERVER, 53, CLIENT, 5353), 1.0)
    assert (reply.state, reply.direction, reply.conn) == ("established", 1, conn)
    assert conn.state == FlowState.REPLIED and conn.expires == 31.0
    assert table.lookup(udp(CLIENT, 5353, SERVER, 53), 5.0).state == "established"
    assert conn.expires == 125.0 and conn.assured  # a stream: both ways, past 2 s
    assert table.next_expiry() == 125.0
    assert table.expire(124.9) == []
    assert table.expire(125.0) == [conn] and len(table) == 0


def test_unreplied_udp_expires_after_30s(table: ConnTable) -> None:
    table.confirm(table.lookup(udp(CLIENT, 5000, SERVER, 9), 0.0), 0.0)
    assert table.next_expiry() == 30.0
    assert len(table.expire(30.0)) == 1


def test_icmp_echo(table: ConnTable) -> None:
    request = table.lookup(icmp(CLIENT, SERVER, 8, ident=77), 0.0)
    assert request.state == "new"
    table.confirm(request, 0.0)
    assert table.lookup(icmp(SERVER, CLIENT, 0, ident=77), 0.5).state == "established"
    assert table.lookup(icmp(SERVER, CLIENT, 0, ident=78), 0.5).state == "invalid"
    # a request coming back the other way is not a reply: it opens its own flow
    back = table.lookup(icmp(SERVER, CLIENT, 8, ident=77), 0.5)
    assert (back.state, back.pending) == ("new", True)
    assert request.conn.expires == 30.5


def test_generic_protocol_is_tracked_for_600s(table: ConnTable) -> None:
    gre = Packet(b"", family=4, src=CLIENT, dst=SERVER, proto=47, length=100)
    verdict = table.lookup(gre, 0.0)
    assert verdict.state == "new" and table.confirm(verdict, 0.0)
    assert verdict.conn.expires == 600.0
    back = Packet(b"", family=4, src=SERVER, dst=CLIENT, proto=47, length=100)
    assert table.lookup(back, 1.0).direction == 1


def test_icmp_port_unreachable_is_related_to_its_udp_flow(table: ConnTable) -> None:
    datagram = udp(CLIENT, 5353, SERVER, 53)
    table.confirm(table.lookup(datagram, 0.0), 0.0)
    error = table.lookup(icmp(SERVER, CLIENT, 3, inner=datagram), 0.1)
    assert (error.state, error.direction) == ("related", 1)
    assert error.conn is not None and error.conn.orig == key_of(datagram)
    from_router = table.lookup(icmp(ROUTER, CLIENT, 11, inner=datagram), 0.1)
    assert from_router.state == "related"


def test_forged_icmp_errors_are_invalid(table: ConnTable) -> None:
    datagram = udp(CLIENT, 5353, SERVER, 53)
    table.confirm(table.lookup(datagram, 0.0), 0.0)
    wrong_port = udp(CLIENT, 5354, SERVER, 53)
    assert table.lookup(icmp(ATTACKER, CLIENT, 3, inner=wrong_port), 0.1).state == "invalid"
    misdirected = table.lookup(icmp(ATTACKER, SERVER, 3, inner=datagram), 0.1)
    assert misdirected.state == "invalid"
    assert "not addressed to the sender" in misdirected.reason


def test_malformed_and_later_fragments_are_invalid(table: ConnTable) -> None:
    bad = udp(CLIENT, 1, SERVER, 2)
    bad.invalid = "bad UDP length"
    assert table.lookup(bad, 0.0).reason == "bad UDP length"
    frag = Packet(b"", family=4, src=CLIENT, dst=SERVER, proto=UDP, frag_offset=185)
    assert table.lookup(frag, 0.0).state == "invalid"


# -- the table ----------------------------------------------------------------------


def test_full_table_drops_the_oldest_unreplied_entry() -> None:
    table = ConnTable(limit=2)
    first = table.lookup(udp(CLIENT, 1001, SERVER, 53), 0.0)
    table.confirm(first, 0.0)
    table.confirm(table.lookup(udp(CLIENT, 1002, SERVER, 53), 1.0), 1.0)
    third = table.lookup(udp(CLIENT, 1003, SERVER, 53), 2.0)
    assert table.confirm(third, 2.0)
    assert table.counters.early_drops == 1 and len(table) == 2
    assert first.conn not in list(table)


def test_full_table_of_answered_flows_refuses() -> None:
    table = ConnTable(limit=1)
    table.confirm(table.lookup(udp(CLIENT, 1001, SERVER, 53), 0.0), 0.0)
    table.lookup(udp(SERVER, 53, CLIENT, 1001), 0.1)
    extra = table.lookup(udp(CLIENT, 1002, SERVER, 53), 0.2)
    assert not table.confirm(extra, 0.2)
    assert table.counters.refused == 1 and table.counters.early_drops == 0
    assert len(table) == 1


def test_timers_with_a_hand_advanced_clock(table: ConnTable) -> None:
    assert table.next_expiry() is None
    flow = TcpFlow(table)
    flow.client("S")  # SYN_SENT: 120 s
    table.confirm(table.lookup(udp(CLIENT, 7, SERVER, 7), 10.0), 10.0)  # 40
    assert table.next_expiry() == 40.0
    flow.now = 20.0
    flow.server("SA")  # SYN_RECV: 60 s from 20, earlier than the 120 s it had
    assert table.expire(39.0) == [] and table.next_expiry() == 40.0
    assert [c.proto for c in table.expire(40.0)] == [UDP]
    assert table.next_expiry() == 80.0
    flow.now = 30.0
    flow.client("A")  # ESTABLISHED: 5 days, picked up lazily
    assert table.expire(80.0) == []
    assert table.next_expiry() == 30.0 + 5 * 86400.0
    assert [c.state for c in table.expire(1e9)] == [TcpState.ESTABLISHED]
    assert len(table) == 0 and table.next_expiry() is None


def test_remove_and_iterate(table: ConnTable) -> None:
    flow = TcpFlow(table)
    handshake(flow)
    table.confirm(table.lookup(udp(CLIENT, 7, SERVER, 7), 0.0), 0.0)
    assert sorted(c.proto for c in table) == [TCP, UDP]
    tcp_conn = flow.conn
    assert table.remove(tcp_conn) and not table.remove(tcp_conn)
    assert len(table) == 1 and table.next_expiry() == 30.0


def test_keys_pack_reverse_and_unpack() -> None:
    pkt = udp(CLIENT, 5353, SERVER, 53)
    key = key_of(pkt)
    assert key == (UDP, CLIENT, 5353, SERVER, 53)
    assert reverse(key) == key_of(udp(SERVER, 53, CLIENT, 5353))
    assert unpack(pack(4, key)) == (4, key)
    v6 = (TCP, 0x20010DB8 << 96 | 1, 40000, 0x20010DB8 << 96 | 2, 443)
    assert unpack(pack(6, v6)) == (6, v6)
    assert pack(6, (TCP, 1, 2, 3, 4)) != pack(4, (TCP, 1, 2, 3, 4))


def test_conn_reply_setter_for_nat(table: ConnTable) -> None:
    verdict = table.lookup(udp(CLIENT, 5353, SERVER, 53), 0.0)
    conn = verdict.conn
    assert conn.reply == (UDP, SERVER, 53, CLIENT, 5353)
    conn.reply = (UDP, SERVER, 53, ROUTER, 61000)  # what masquerading would do
    table.confirm(verdict, 0.0)
    back = table.lookup(udp(SERVER, 53, ROUTER, 61000), 0.1)
    assert (back.state, back.conn, back.direction) == ("established", conn, 1)


_ADDR = st.sampled_from([CLIENT, SERVER, 0, 2**32 - 1]) | st.integers(0, 2**32 - 1)
_ADDR6 = st.sampled_from([0, 2**128 - 1]) | st.integers(0, 2**128 - 1)
_PORT17 = st.sampled_from([0, 65535, 65536 | 7, 2**17 - 1]) | st.integers(0, 2**17 - 1)


@settings(deadline=None)
@given(st.booleans(), st.integers(0, 255), st.data())
def test_reverse_packed_is_pack_of_the_reverse(v6: bool, proto: int, data: st.DataObject) -> None:
    addr = _ADDR6 if v6 else _ADDR
    key = (proto, data.draw(addr), data.draw(_PORT17), data.draw(addr), data.draw(_PORT17))
    family = 6 if v6 else 4
    assert reverse_packed(pack(family, key)) == pack(family, reverse(key))


def test_one_dict_entry_per_connection_without_nat(table: ConnTable) -> None:
    flow = TcpFlow(table)
    handshake(flow)
    conn = flow.conn
    assert conn.nat_rkey is None and conn.rkey == pack(4, reverse(conn.orig))
    assert list(table._map) == [conn.okey]
    assert flow.server("A").direction == 1


def test_reverse_of_a_natted_tuple_is_not_its_reply(table: ConnTable) -> None:
    verdict = table.lookup(udp(CLIENT, 5353, SERVER, 53), 0.0)
    verdict.conn.reply = (UDP, SERVER, 53, ROUTER, 61000)
    assert table.confirm(verdict, 0.0) and len(table._map) == 2
    # the un-NATed answer belongs to no connection: it opens one, whose reply tuple is taken
    stray = table.lookup(udp(SERVER, 53, CLIENT, 5353), 0.1)
    assert (stray.state, stray.pending) == ("new", True)
    assert not table.confirm(stray, 0.1) and table.counters.refused == 1
    assert table.remove(verdict.conn) and not table._map


class Entry:
    """What Timers needs of an entry."""

    __slots__ = ("expires", "name", "sched")

    def __init__(self, name: int, expires: float) -> None:
        self.name, self.expires, self.sched = name, expires, None

    def __lt__(self, other: Entry) -> bool:
        return self.name < other.name


_TIMER_OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "later", "earlier", "discard", "next", "pop"]),
        st.integers(0, 30),  # which entry
        st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 3.0, 60.0, 7200.5]),  # an amount of time
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(_TIMER_OPS)
def test_timers_agree_with_a_sorted_list(ops: list) -> None:
    """Timers, driven at random, against the obvious model: entries are due at `expires`."""
    timers, now = Timers(), 0.0
    queued: dict[int, Entry] = {}
    for op, name, amount in ops:
        entry = queued.get(name)
        if op == "add" and entry is None:
            queued[name] = entry = Entry(name, now + amount)
            timers.add(entry)
        elif op == "later" and entry is not None:
            entry.expires += amount
        elif op == "earlier" and entry is not None:
            entry.expires = max(now, entry.expires - amount)
            if entry.expires < entry.sched:
                timers.moved(entry)
        elif op == "discard" and entry is not None:
            timers.discard(queued.pop(name))
        elif op == "next":
            want = min((e.expires for e in queued.values()), default=None)
            assert timers.next_expiry() == want
        elif op == "pop":
            now += amount
            due = {e.name for e in queued.values() if e.expires <= now}
            got = timers.pop_due(now)
            assert sorted(e.name for e in got) == sorted(due) and len(got) == len(due)
            assert all(e.sched is None for e in got)
            for gone in due:
                del queued[gone]
    assert sorted(e.name for e in timers.pop_due(1e12)) == sorted(queued)
    assert timers.next_expiry() is None


_FLAGS_ST = st.sampled_from(["S", "SA", "A", "PA", "FA", "R", "RA", "F", ""])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), _FLAGS_ST, st.integers(0, 3000)), max_size=25))
def test_random_conversations_never_break_the_table(steps: list) -> None:
    table = ConnTable()
    flow = TcpFlow(table)
    for i, (from_client, flags, data) in enumerate(steps):
        flow.now = float(i)
        send = flow.client if from_client else flow.server
        verdict = send(flags, data=data)
        assert verdict.state in ("new", "established", "invalid")
        assert len(table) <= 1
        for conn in table:
            assert conn.state in list(TcpState)[1:10]
    table.expire(1e12)
    assert len(table) == 0 and table.next_expiry() is None


def test_timers_compact_stale_filings() -> None:
    timers = Timers()
    entries = [Entry(i, 100.0 + i % 50) for i in range(4000)]
    for entry in entries:
        timers.add(entry)
    assert timers.next_expiry() == 100.0  # the first bucket is near now
    for entry in entries:  # every one moves earlier: 4,000 stale filings, compacted on the way
        entry.expires -= 60.5
        timers.moved(entry)
    for entry in entries[::2]:
        timers.discard(entry)
    assert timers._stale * 4 <= timers._filed or timers._stale <= 1024
    assert timers.next_expiry() == 40.5
    due = timers.pop_due(60.0)
    assert sorted(e.name for e in due) == [e.name for e in entries[1::2] if e.expires <= 60.0]
    assert [e.expires for e in due] == sorted(e.expires for e in due)
    rest = timers.pop_due(1e9)
    assert len(due) + len(rest) == 2000 and timers.next_expiry() is None
