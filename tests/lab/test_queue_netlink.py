"""The netlink queue backend's wire format, without a kernel: what it sends (config, verdicts,
batched verdicts) and what it makes of what the kernel sends (packet messages, error reports),
and the checksum of a rewritten packet whose checksum the kernel had left unfinished."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fw import craft
from fw.engine.checksum import pseudo_header_sum, verify
from fw.engine.packet import decode
from fw.lab import nfqueue as nfq
from fw.lab import queue_netlink as nl
from fw.lab.nfqueue import move_port
from fw.lab.queue_backend import (
    ACCEPT,
    DROP,
    SKB_CSUM_NOT_READY,
    SKB_GSO,
    IfNames,
    JudgeErrors,
    QueuedPacket,
    Verdict,
    judge_batch,
    judge_each,
    serve,
)

from .conftest import TEST_RULES

NLMSG = struct.Struct("=IHHII")
NLA = struct.Struct("=HH")


def messages(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type, flags, body after nlmsghdr) of each netlink message in `data`."""
    out, off = [], 0
    while off < len(data):
        length, kind, flags, _, _ = NLMSG.unpack_from(data, off)
        assert length >= 16 and off + length <= len(data)
        out.append((kind, flags, data[off + 16 : off + length]))
        off += (length + 3) & ~3
    assert off == len(data)
    return out


def attributes(body: bytes) -> dict[int, bytes]:
    """Attributes after the 4-byte nfgenmsg; each must be padded to 4 bytes."""
    out, off = {}, 4
    while off < len(body):
        length, kind = NLA.unpack_from(body, off)
        out[kind] = body[off + 4 : off + length]
        off += (length + 3) & ~3
    assert off == len(body)
    return out


def names() -> IfNames:
    n = IfNames()
    n._names = {2: "lan", 3: "wan"}
    return n


# -- what the backend sends -------------------------------------------------------------------


@pytest.mark.parametrize("fail_open,flags", [(False, nl.CFG_F_GSO), (True, nl.CFG_F_GSO | 1)])
def test_config_binds_and_configures_in_one_acknowledged_message(fail_open, flags) -> None:
    ((kind, nlflags, body),) = messages(nl.config_message(7, max_len=1000, fail_open=fail_open))
    assert kind == 3 << 8 | 2  # NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG
    assert nlflags == nl.NLM_F_REQUEST | nl.NLM_F_ACK
    assert body[:4] == bytes([0, 0, 0, 7])  # AF_UNSPEC, version 0, queue 7 in network order
    attrs = attributes(body)
    assert attrs[nl.NFQA_CFG_CMD] == bytes([1, 0, 0, 0])  # bind
    assert attrs[nl.NFQA_CFG_PARAMS] == struct.pack("!IB", 65531, 2)  # whole packets
    assert attrs[nl.NFQA_CFG_QUEUE_MAXLEN] == struct.pack("!I", 1000)
    assert attrs[nl.NFQA_CFG_MASK] == struct.pack("!I", nl.CFG_F_GSO | nl.CFG_F_FAIL_OPEN)
    assert attrs[nl.NFQA_CFG_FLAGS] == struct.pack("!I", flags)


def test_the_copy_range_changes_on_a_bound_queue_in_one_acknowledged_message() -> None:
    ((kind, nlflags, body),) = messages(nl.copy_range_message(7, 2048))
    assert (kind, nlflags) == (3 << 8 | 2, nl.NLM_F_REQUEST | nl.NLM_F_ACK)
    assert attributes(body) == {nl.NFQA_CFG_PARAMS: struct.pack("!IB", 2048, 2)}  # nothing else


def test_a_backend_asked_for_more_than_an_attribute_holds_copies_whole_packets() -> None:
    b = nl.NetlinkBackend(0, copy_range=2048)
    b.set_copy_range(0xFFFF)
    assert b.copy_range == nl.MAX_COPY_RANGE == 65531
    assert b.counters()["copy_range"] == 65531


def pkt(pid: int, payload: bytes = b"E" * 20, skb_info: int = 0, length: int = -1) -> QueuedPacket:
    return QueuedPacket(pid, "prerouting", "lan", None, payload, skb_info, 0, length)


def verdict_of(kind: int, body: bytes) -> tuple[str, int, int, dict[int, bytes]]:
    attrs = attributes(body)
    verdict, pid = struct.unpack("!II", attrs.pop(nl.NFQA_VERDICT_HDR))
    name = {3 << 8 | 1: "one", 3 << 8 | 3: "batch"}[kind]
    return name, verdict, pid, attrs


def test_runs_of_accepts_are_batched_and_the_rest_answered_one_by_one_in_order() -> None:
    packets = [pkt(i) for i in range(10, 17)]
    verdicts = [ACCEPT, ACCEPT, DROP, Verdict(True, b"new"), ACCEPT, Verdict(True, mark=9), ACCEPT]
    sent = b"".join(b"".join(m) for m in nl.verdict_messages(5, packets, verdicts))
    got = [verdict_of(kind, body) for kind, _, body in messages(sent)]
    assert [(name, v, pid) for name, v, pid, _ in got] == [
        ("batch", 1, 11),  # 10 and 11
        ("one", 0, 12),  # dropped
        ("one", 1, 13),  # rewritten
        ("batch", 1, 14),
        ("one", 1, 15),  # re-marked
        ("batch", 1, 16),
    ]
    assert got[2][3] == {nl.NFQA_PAYLOAD: b"new"}  # padded to 4 bytes on the wire
    assert got[4][3] == {nl.NFQA_MARK: struct.pack("!I", 9)}
    assert all(body[2:4] == b"\0\x05" for _, _, body in messages(sent))  # queue 5


def test_all_dropped_means_no_batch() -> None:
    sent = nl.verdict_messages(0, [pkt(1), pkt(2)], [DROP, DROP])
    assert [verdict_of(k, b)[:3] for m in sent for k, _, b in messages(b"".join(m))] == [
        ("one", 0, 1),
        ("one", 0, 2),
    ]


# -- what the kernel sends --------------------------------------------------------------------


def attr(kind: int, data: bytes) -> bytes:
    return NLA.pack(4 + len(data), kind) + data + b"\0" * (-len(data) % 4)


def packet_message(pid: int, hook: int, payload: bytes, **extra: int) -> bytes:
    """An NFQNL_MSG_PACKET as nfnetlink_queue builds it (the payload attribute last, the message
    length not counting its padding)."""
    body = struct.pack("!BBH", 2, 0, 0) + attr(1, struct.pack("!IHB", pid, 0x0800, hook))
    for kind, value in (
        (nl.NFQA_IFINDEX_INDEV, extra.get("indev")),
        (nl.NFQA_IFINDEX_OUTDEV, extra.get("outdev")),
        (nl.NFQA_MARK, extra.get("mark")),
        (nl.NFQA_CAP_LEN, extra.get("cap_len")),
        (nl.NFQA_SKB_INFO, extra.get("skb_info")),
    ):
        if value is not None:
            body += attr(kind, struct.pack("!I", value))
    body += NLA.pack(4 + len(payload), nl.NFQA_PAYLOAD) + payload
    return NLMSG.pack(16 + len(body), 3 << 8, 0, 0, 0) + body


def error_message(err: int, seq: int) -> bytes:
    return NLMSG.pack(36, 2, 0, seq, 0) + struct.pack("=i", -err) + NLMSG.pack(20, 0, 0, seq, 0)


def test_packet_messages_are_decoded_with_their_metadata() -> None:
    one = packet_message(41, 0, b"\x45abc", indev=2, skb_info=SKB_CSUM_NOT_READY | SKB_GSO)
    two = packet_message(42, 3, b"\x60" * 8, outdev=3, mark=7, cap_len=70000)
    data = one + b"\0" * (-len(one) % 4) + two
    packets, errors = nl.parse_datagram(data, len(data), names())
    assert errors == []
    assert packets == [
        QueuedPacket(41, "prerouting", "lan", None, b"\x45abc", 3, 0, -1),
        QueuedPacket(42, "output", None, "wan", b"\x60" * 8, 0, 7, 70000),
    ]
    assert packets[1].truncated and not packets[0].truncated


def test_error_reports_and_acks_are_told_apart() -> None:
    data = error_message(2, 5) + error_message(0, 1)  # ENOENT for seq 5, an ack for seq 1
    assert nl.parse_datagram(data, len(data), names()) == ([], [(2, 5), (0, 1)])


def test_a_cut_message_is_ignored_not_misread() -> None:
    data = packet_message(1, 0, b"\x45" * 30)
    assert nl.parse_datagram(data, len(data) - 3, names()) == ([], [])


# -- checksums of rewritten packets -----------------------------------------------------------


def partial(packet: bytes, csum_at: int) -> bytes:
    """`packet` as the kernel queues a CHECKSUM_PARTIAL one: only the pseudo-header sum."""
    p = decode(packet)
    segment_len = p.length - p.l4_offset
    seed = pseudo_header_sum(p.family, p.src, p.dst, p.proto, segment_len)
    at = p.l4_offset + csum_at
    return packet[:at] + seed.to_bytes(2) + packet[at + 2 :]


@pytest.mark.parametrize("numpy", [True, False])
@pytest.mark.parametrize(
    "packet,csum_at",
    [
        (craft.tcp("192.0.2.2", "203.0.113.10", 40000, 9090, "PA", payload=b"x" * 3001), 16),
        (craft.tcp("192.0.2.2", "203.0.113.10", 40000, 9090, "A", payload=b"\xfe\x01" * 32001), 16),
        (craft.udp("192.0.2.2", "203.0.113.10", 40000, 9090, b"hello"), 6),
        (craft.udp("192.0.2.2", "203.0.113.10", 40000, 9090, bytes(range(256)) * 40 + b"!"), 6),
    ],
)
def test_a_rewritten_partial_checksum_is_completed(
    packet: bytes, csum_at: int, numpy: bool, monkeypatch
) -> None:
    if not numpy:
        monkeypatch.setattr(nl, "_np", None)  # the pure-Python sum
    queued = partial(packet, csum_at)
    assert not verify(decode(queued))
    moved = move_port(queued, 9090, 8080)
    assert moved is not None and decode(moved).dport == 8080
    done = nl.complete_checksum(moved)
    assert verify(decode(done))
    assert done == move_port(packet, 9090, 8080)  # as if it had been complete all along


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["tcp", "udp"]),
    st.sampled_from(["192.0.2.2", "2001:db8::2"]),
    st.integers(0, 65535 - 40 - 20),
    st.binary(min_size=1, max_size=64),
)
def test_a_completed_checksum_is_the_one_a_receiver_computes(proto, src, size, fill) -> None:
    """Any size (numpy's 32-bit words from 4 KiB on, and the 1 to 3 bytes after the last
    word), both families, both protocols."""
    dst = "203.0.113.10" if ":" not in src else "2001:db8::10"
    payload = (fill * (size // len(fill) + 1))[:size]
    make = craft.tcp if proto == "tcp" else craft.udp
    whole = (make(src, dst, 40000, 9090, "PA", payload=payload) if proto == "tcp"
             else make(src, dst, 40000, 9090, payload))
    csum_at = 16 if proto == "tcp" else 6
    assert nl.complete_checksum(partial(whole, csum_at)) == whole


def test_the_backend_completes_drops_or_passes_rewrites() -> None:
    b = nl.NetlinkBackend(0)
    tcp = craft.tcp("192.0.2.2", "203.0.113.10", 40000, 9090, "PA", payload=b"data")
    queued = partial(tcp, 16)
    moved = move_port(queued, 9090, 8080)
    ready = pkt(1, queued, SKB_CSUM_NOT_READY)
    assert verify(decode(b._prepare(ready, Verdict(True, moved)).payload))
    # cut short by the copy range: giving the bytes back would cut the packet, so drop it
    assert b._prepare(pkt(2, queued, 0, 70000), Verdict(True, moved)) == DROP
    assert b.cut_rewrites == 1
    # the same bytes back are no rewrite
    assert b._prepare(pkt(3, tcp), Verdict(True, tcp)) == ACCEPT
    assert (b.accepted, b.dropped, b.modified, b.csum_completed) == (2, 1, 1, 1)


def test_a_forwarded_tcp_gso_rewrite_keeps_its_checksum_for_the_kernel_to_write() -> None:
    """The kernel segments a forwarded GSO packet given back with new bytes in software and
    writes each TCP segment's checksum itself (docs/lab-notes.md): summing 64 KiB would be
    wasted. A packet delivered locally, a plain one, or UDP's are completed."""
    b = nl.NetlinkBackend(0)
    big = partial(craft.tcp("192.0.2.2", "203.0.113.10", 40000, 9090, "A", payload=bytes(9000)), 16)
    moved = move_port(big, 9090, 8080)
    gso = pkt(1, big, SKB_CSUM_NOT_READY | SKB_GSO)
    assert b._prepare(gso, Verdict(True, moved, forwarded=True)).payload == moved
    assert verify(decode(b._prepare(gso, Verdict(True, moved)).payload))  # to a local socket
    small = partial(craft.tcp("192.0.2.2", "203.0.113.10", 40000, 9090, "A", payload=b"x"), 16)
    one = pkt(2, small, SKB_CSUM_NOT_READY)
    done = b._prepare(one, Verdict(True, move_port(small, 9090, 8080), forwarded=True))
    assert verify(decode(done.payload))
    udp = partial(craft.udp("192.0.2.2", "203.0.113.10", 40000, 9090, bytes(9000)), 6)
    done = b._prepare(pkt(3, udp, SKB_CSUM_NOT_READY | SKB_GSO),
                      Verdict(True, move_port(udp, 9090, 8080), forwarded=True))
    assert verify(decode(done.payload))
    assert (b.csum_left, b.csum_completed) == (1, 3)


# -- driving a backend ------------------------------------------------------------------------


def test_a_judge_that_fails_drops_its_whole_batch() -> None:
    errors = JudgeErrors()

    def broken(packets):
        raise RuntimeError("engine bug")

    assert judge_batch(broken, [pkt(1), pkt(2)], errors) == [DROP, DROP]
    assert judge_batch(lambda ps: [ACCEPT], [pkt(1), pkt(2)], errors) == [DROP, DROP]
    assert errors.count == 2 and isinstance(errors.last, ValueError)


def test_per_packet_handlers_fail_closed_one_packet_at_a_time() -> None:
    seen = []

    def handler(payload, hook, now, iif, oif):
        seen.append((payload, hook, now, iif, oif))
        if payload == b"boom":
            raise RuntimeError("engine bug")
        if payload == b"odd":
            return "maybe", None
        if payload == b"rewrite":
            return "accept", b"rewritten"
        return ("drop", None) if payload == b"bad" else ("accept", None)

    errors = JudgeErrors()
    judge = judge_each(handler, errors, clock=lambda: 42.0)
    batch = [pkt(i, p) for i, p in enumerate([b"ok", b"bad", b"boom", b"rewrite", b"odd"])]
    assert judge(batch) == [ACCEPT, DROP, DROP, Verdict(True, b"rewritten"), DROP]
    assert seen[0] == (b"ok", "prerouting", 42.0, "lan", None)
    assert errors.count == 2 and isinstance(errors.last, ValueError)


class FakeBackend:
    name = "fake"
    queue_num = 0
    rcvbuf = None

    def __init__(self, batches: list[list[QueuedPacket]], stop: threading.Event) -> None:
        self.batches, self.stop, self.answers = batches, stop, []

    def receive(self, timeout):
        if not self.batches:
            self.stop.set()
            return []
        return self.batches.pop(0)

    def answer(self, packets, verdicts):
        self.answers.append(list(verdicts))


def test_serve_answers_every_batch_and_stops_on_interrupt() -> None:
    stop = threading.Event()
    backend = FakeBackend([[pkt(1)], [], [pkt(2), pkt(3)]], stop)
    serve(backend, lambda ps: [ACCEPT] * len(ps), stop=stop)
    assert backend.answers == [[ACCEPT], [ACCEPT, ACCEPT]]

    def interrupted(packets):
        raise KeyboardInterrupt

    backend = FakeBackend([[pkt(4)], [pkt(5)]], threading.Event())
    with pytest.raises(KeyboardInterrupt):
        serve(backend, interrupted, stop=threading.Event())
    assert backend.answers == [[DROP]]  # answered (dropped) before the loop ends


class ReadyBackend(FakeBackend):
    """A fake whose socket is always readable (a pipe with a byte in it)."""

    def __init__(self, batches, stop, log, name) -> None:
        super().__init__(batches, stop)
        self.log, self.name = log, name
        self._r, self._w = os.pipe()
        os.write(self._w, b"x")

    def fileno(self) -> int:
        return self._r

    def receive(self, timeout):
        self.log.append((self.name, timeout))
        if self.name == "main" and not self.batches:
            self.stop.set()
        return self.batches.pop(0) if self.batches else []

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


def test_openers_are_read_after_each_main_batch_without_waiting() -> None:
    stop, log = threading.Event(), []
    main = ReadyBackend([[pkt(1), pkt(2)], [pkt(3)]], stop, log, "main")
    openers = ReadyBackend([[pkt(10)], [pkt(11)], [pkt(12)]], stop, log, "openers")
    try:
        serve(main, lambda ps: [ACCEPT] * len(ps), stop=stop, openers=openers)
    finally:
        main.close()
        openers.close()
    assert log == [("main", 0), ("openers", 0)] * 3  # never blocked in one while the other waits
    assert main.answers == [[ACCEPT, ACCEPT], [ACCEPT]]
    assert openers.answers == [[ACCEPT]] * 3


# -- in a lab ---------------------------------------------------------------------------------


def _verify_checksums_in_software(lab) -> None:
    """Turn receive checksum offload off on every interface of the lab, so that every receiver
    checks every checksum itself (a veth otherwise marks packets as already checked)."""
    from fw.lab import netns as labns

    for ns in labns.lab_namespaces(lab.name):
        script = "for d in $(ls /sys/class/net); do [ $d = lo ] || ethtool -K $d rx off; done"
        subprocess.run(
            ["ip", "netns", "exec", ns, "sh", "-c", script],
            check=True,
            timeout=10,
            capture_output=True,
        )


def _csum_errors(lab, host: str) -> int:
    """TCP and UDP checksum errors counted by the host's stack so far."""
    out = lab.run(host, ["nstat", "-asz", "TcpInCsumErrors", "UdpInCsumErrors"]).stdout
    return sum(int(line.split()[1]) for line in out.splitlines()[1:] if line.strip())


def _iperf(lab, port: int, seconds: int = 2, server_port: int = 8080) -> float:
    """Bits per second of one TCP stream client -> server (iperf3 server on `server_port`)."""
    srv = lab.exec(
        "server",
        ["iperf3", "-s", "-1", "-B", "203.0.113.10", "-p", str(server_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        res = lab.run(
            "client",
            ["iperf3", "-c", "203.0.113.10", "-p", str(port), "-t", str(seconds), "-J"],
            timeout=seconds + 15,
        )
        assert res.returncode == 0, res.stdout[-800:]
        return json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"]
    finally:
        srv.kill()
        srv.wait(timeout=5)


needs_tools = pytest.mark.skipif(
    not (shutil.which("iperf3") and shutil.which("ethtool") and shutil.which("nstat")),
    reason="needs iperf3, ethtool and nstat",
)


@pytest.mark.lab
@needs_tools
def test_gso_packets_rewritten_arrive_with_good_checksums(lab, consumer, tmp_path) -> None:
    """iperf3 through a port rewrite: the backend gets GSO packets with unfinished checksums,
    gives them back rewritten, and the receivers, checking every checksum in software, count no
    checksum error."""
    _verify_checksums_in_software(lab)
    nfq.install_queue(lab.firewall_ns)
    log = tmp_path / "packets.jsonl"
    c = consumer(
        lab,
        "--backend",
        "netlink",
        "--move-port",
        "9090:8080",
        "--log",
        str(log),
        "--log-max",
        "5000",
    )
    before = {h: _csum_errors(lab, h) for h in ("client", "server")}
    bps = _iperf(lab, 9090)
    after = {h: _csum_errors(lab, h) for h in ("client", "server")}
    final = c.stop()
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    print(f"\nnetlink backend, port rewrite, iperf3: {bps / 1e9:.2f} Gbit/s; {final}")
    assert bps > 0 and after == before
    assert final["gso_packets"] > 0 and final["csum_completed"] > 0
    assert any(r["len"] > 1500 and r["skb_info"] & SKB_GSO and r["rewritten"] for r in rows)
    assert final["kernel_errors"] == 0 and final["truncated"] == 0


@pytest.mark.lab
@needs_tools
def test_the_lab_copies_headers_only_while_no_packet_can_leave_rewritten(cli_lab) -> None:
    """Without NAT the engine judges headers, so the queue copies 2 KiB of each packet, not the
    64 KiB of a GSO packet; with NAT loaded it copies whole packets (a rewrite gives the kernel
    the whole packet back), and keeps doing so while translated connections run."""
    lab = cli_lab("--backend", "netlink", "--rules", str(TEST_RULES / "bench-stateful.fw"))
    _verify_checksums_in_software(lab.handle)

    def adapter() -> dict:
        return lab.status()["daemon"]["adapter"]

    assert adapter()["copy_range"] == 2048
    assert _iperf(lab.handle, 5201, server_port=5201) > 0
    headers = adapter()
    assert headers["gso_packets"] > 0 and headers["truncated"] > 0
    assert headers["cut_rewrites"] == 0 and headers["kernel_errors"] == 0
    assert lab.cli("reload", str(TEST_RULES / "bench-masq.fw")).returncode == 0
    assert adapter()["copy_range"] == nl.MAX_COPY_RANGE
    assert _iperf(lab.handle, 5201, server_port=5201) > 0
    nat = json.loads(lab.cli("nat", "--json").stdout)
    assert nat and adapter()["csum_completed"] > 0 and adapter()["cut_rewrites"] == 0
    assert _csum_errors(lab.handle, "server") == 0
    assert lab.cli("reload", str(TEST_RULES / "bench-stateful.fw")).returncode == 0
    assert adapter()["copy_range"] == nl.MAX_COPY_RANGE  # the translated connections still run


@contextlib.contextmanager
def udp_flood(lab) -> Iterator[None]:
    """A 4 s flood of 64-byte UDP from client to an iperf3 server, under way when the body
    starts (1.5 s in); both ends are ended by PID afterwards."""
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    srv = lab.exec("server", ["iperf3", "-s", "-1", "-B", "203.0.113.10"], **quiet)
    flood = None
    try:
        time.sleep(0.5)
        flood = lab.exec("client", ["iperf3", "-c", "203.0.113.10", "-u", "-b", "0", "-l", "64",
                                    "-t", "4"], **quiet)
        time.sleep(1.5)
        yield
    finally:
        for proc in (flood, srv):
            if proc is not None:
                proc.kill()
                proc.wait(timeout=5)


def _udp_received(lab) -> int:
    out = lab.run("server", ["nstat", "-asz", "UdpInDatagrams"]).stdout
    return sum(int(line.split()[1]) for line in out.splitlines()[1:] if line.strip())


@pytest.mark.lab
@needs_tools
def test_a_flood_fails_closed_when_the_consumer_is_killed(lab, consumer) -> None:
    """64-byte UDP at full speed through the netlink backend; SIGKILL the consumer in the middle:
    from then on nothing reaches the server (bounded: a 4 s flood)."""
    nfq.install_queue(lab.firewall_ns)
    c = consumer(lab, "--backend", "netlink")
    with udp_flood(lab):
        assert _udp_received(lab) > 100  # the flood passes while the consumer runs
        c.kill()
        time.sleep(0.3)  # what the consumer had answered is delivered
        after_kill = _udp_received(lab)
        time.sleep(1.0)
        assert _udp_received(lab) == after_kill  # nothing since: fail closed
        assert nfq.queue_stats(lab.firewall_ns) == []


@pytest.mark.lab
@needs_tools
def test_a_flood_through_the_lab_fails_closed_when_its_engine_is_killed(cli_lab) -> None:
    """`fwlab up --backend netlink`, a 64-byte UDP flood through the engine, then SIGKILL to the
    supervisor and the daemon: the queue loses its listener and nothing passes any more."""
    lab = cli_lab("--backend", "netlink", "--rules", str(TEST_RULES / "open.fw"))
    status = lab.status()
    assert status["daemon"]["backend"] == "netlink"
    handle = lab.handle
    with udp_flood(handle):
        assert _udp_received(handle) > 100
        os.kill(int(status["supervisor"]["supervisor_pid"]), signal.SIGKILL)  # this lab's own
        os.kill(int(status["daemon"]["pid"]), signal.SIGKILL)  # (it dies with it anyway)
        time.sleep(0.5)
        after_kill = _udp_received(handle)
        time.sleep(1.0)
        assert _udp_received(handle) == after_kill
