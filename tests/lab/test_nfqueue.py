"""The firewall namespace's packet path: notrack + NFQUEUE rules and the netfilterqueue adapter.

The lab tests run a real consumer (`python -m fw.lab.nfqueue`) inside the firewall namespace and
send real ping and TCP traffic from client to server through it."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from fw.lab import netns as labns
from fw.lab import nfqueue as nfq

from .conftest import ping, talk

# -- rules and the callback (no root) ---------------------------------------------------------


def test_queue_rules_fail_closed() -> None:
    rules = nfq.queue_rules(nfq.QueueLayout(0, fail_open=False))
    assert ["iptables-nft", "-t", "raw", "-A", "PREROUTING", "-j", "CT", "--notrack"] in rules
    assert [
        "ip6tables-nft",
        "-t",
        "raw",
        "-A",
        "OUTPUT",
        "-j",
        "NFQUEUE",
        "--queue-num",
        "0",
    ] in rules
    assert len(rules) == 8  # 2 families x 2 chains x (notrack, queue)
    assert not any("--queue-bypass" in r for r in rules)
    # notrack comes before the queue rule of the same chain
    for tool in nfq.IPTABLES:
        for chain in nfq.CHAINS:
            mine = [r for r in rules if r[0] == tool and r[4] == chain]
            assert mine[0][-1] == "--notrack" and "NFQUEUE" in mine[1]


def test_queue_rules_fail_open_and_balance() -> None:
    rules = nfq.queue_rules(nfq.QueueLayout(3, fail_open=True, queues=4))
    queue = [r for r in rules if "NFQUEUE" in r]
    assert all(r[-3:] == ["--queue-balance", "3:6", "--queue-bypass"] for r in queue)
    undo = nfq.unqueue_rules(nfq.QueueLayout(3, fail_open=True, queues=4))
    assert [r[3] for r in undo] == ["-D"] * 8
    assert [[*r[:3], "-A", *r[4:]] for r in reversed(undo)] == rules
    with pytest.raises(ValueError):
        nfq.queue_rules(nfq.QueueLayout(65535, queues=2))


def test_queue_rules_with_a_queue_for_connection_openers() -> None:
    rules = nfq.queue_rules(nfq.QueueLayout(0, openers=1))
    assert len(rules) == 12  # 2 families x 2 chains x (notrack, openers, everything else)
    for tool in nfq.IPTABLES:
        for chain in nfq.CHAINS:
            mine = [r[5:] for r in rules if r[0] == tool and r[4] == chain]
            assert mine == [
                ["-j", "CT", "--notrack"],
                ["-p", "tcp", "--syn", "-j", "NFQUEUE", "--queue-num", "1"],
                ["-j", "NFQUEUE", "--queue-num", "0"],
            ]
    undo = nfq.unqueue_rules(nfq.QueueLayout(0, openers=1))
    assert [[*r[:3], "-A", *r[4:]] for r in reversed(undo)] == rules


def test_openers_from_one_source_are_limited_before_their_queue() -> None:
    """The per-source limit drops openers in PREROUTING (arriving ones only) before they are
    queued; IPv6 sources count per /64. Removal undoes it in reverse."""
    rules = nfq.queue_rules(nfq.QueueLayout(0, openers=1, opener_limit=2000))
    for tool in nfq.IPTABLES:
        pre = [r[5:] for r in rules if r[0] == tool and r[4] == "PREROUTING"]
        out = [r[5:] for r in rules if r[0] == tool and r[4] == "OUTPUT"]
        limit = pre[1]
        assert limit[:3] == ["-p", "tcp", "--syn"] and limit[-2:] == ["-j", "DROP"]
        assert limit[limit.index("--hashlimit-above") + 1] == "2000/sec"
        assert ("--hashlimit-srcmask" in limit) == (tool == "ip6tables-nft")
        assert pre[2][-1] == "1" and pre[3][-1] == "0"  # then the openers queue, then the rest
        assert not any("hashlimit" in " ".join(r) for r in out)
    undo = nfq.unqueue_rules(nfq.QueueLayout(0, openers=1, opener_limit=2000))
    assert [[*r[:3], "-A", *r[4:]] for r in reversed(undo)] == rules
    assert nfq.queue_rules(nfq.QueueLayout(0, openers=1, opener_limit=0)) == nfq.queue_rules(
        nfq.QueueLayout(0, openers=1))


def test_several_workers_queue_by_the_steering_mark() -> None:
    """With workers, mark m (worker m - 1, set by fw/lab/steering.py) goes to queue m - 1 and
    its openers to their own queue per worker; an unmarked packet to worker 0 (fail closed)."""
    layout = nfq.QueueLayout(0, openers=2, opener_limit=2000, workers=2)
    rules = nfq.queue_rules(layout)
    pre = [r[5:] for r in rules if r[0] == "iptables-nft" and r[4] == "PREROUTING"]
    assert pre[0] == ["-j", "CT", "--notrack"] and "hashlimit" in pre[1]
    assert pre[2:] == [
        ["-p", "tcp", "--syn", "-m", "mark", "--mark", "1", "-j", "NFQUEUE", "--queue-num", "2"],
        ["-m", "mark", "--mark", "1", "-j", "NFQUEUE", "--queue-num", "0"],
        ["-p", "tcp", "--syn", "-m", "mark", "--mark", "2", "-j", "NFQUEUE", "--queue-num", "3"],
        ["-m", "mark", "--mark", "2", "-j", "NFQUEUE", "--queue-num", "1"],
        ["-j", "NFQUEUE", "--queue-num", "0"],
    ]
    undo = nfq.unqueue_rules(layout)
    assert [[*r[:3], "-A", *r[4:]] for r in reversed(undo)] == rules
    assert nfq.QueueLayout.of({"fail_open": True, "openers": 1, "unknown": 3}) == \
        nfq.QueueLayout(fail_open=True, openers=1)


def test_parse_queue_stats() -> None:
    text = "    0   4242     1 2  4016     5     7      123  1\n"
    (s,) = nfq.parse_queue_stats(text)
    assert (s.queue_num, s.peer_portid, s.queue_total, s.copy_range) == (0, 4242, 1, 4016)
    assert (s.queue_dropped, s.user_dropped, s.id_sequence) == (5, 7, 123)


class FakePacket:
    def __init__(self, pid: int, payload: bytes, hook: int = 0, indev: int = 0, outdev: int = 0):
        self.id, self.payload, self.hook, self.indev, self.outdev = (
            pid,
            payload,
            hook,
            indev,
            outdev,
        )
        self.mark = 0
        self.verdicts: list[str] = []
        self.new_payload: bytes | None = None

    def get_payload(self) -> bytes:
        if self.payload == b"unreadable":
            raise RuntimeError("gone")
        return self.payload

    def set_payload(self, p: bytes) -> None:
        self.new_payload = p

    def accept(self) -> None:
        self.verdicts.append("accept")

    def drop(self) -> None:
        self.verdicts.append("drop")


def test_netfilterqueue_backend_holds_a_batch_and_answers_it_in_order() -> None:
    from fw.lab.queue_backend import ACCEPT, DROP, QueuedPacket, Verdict
    from fw.lab.queue_nfq import NetfilterqueueBackend

    b = NetfilterqueueBackend(0)
    b._ifname._names = {2: "lan", 3: "wan"}
    pkts = [
        FakePacket(1, b"ok", 0, 2),
        FakePacket(2, b"bad", 3, 0, 3),
        FakePacket(3, b"unreadable"),
        FakePacket(4, b"rewrite", 0, 3),
        FakePacket(5, b"same"),
    ]
    for p in pkts:
        b._collect(p)  # what netfilterqueue's C loop calls
    batch = b._batch
    assert batch[0] == QueuedPacket(1, "prerouting", "lan", None, b"ok", 0, 0)
    assert batch[1][:4] == (2, "output", None, "wan")
    assert len(batch) == 4 and pkts[2].verdicts == ["drop"]  # unreadable: dropped at once
    b.answer(batch, [ACCEPT, DROP, Verdict(True, b"rewritten"), Verdict(True, b"same")])
    assert [p.verdicts for p in pkts] == [["accept"], ["drop"], ["drop"], ["accept"], ["accept"]]
    assert pkts[3].new_payload == b"rewritten" and pkts[4].new_payload is None
    assert (b.accepted, b.dropped, b.modified, b.errors) == (3, 1, 1, 1)
    # verdicts that do not match the batch: everything held is dropped
    b._collect(FakePacket(6, b"x"))
    b.answer([], [])
    assert b.dropped == 2


# -- real packets -----------------------------------------------------------------------------

CLIENT_TO_SERVER = [("203.0.113.10", "2001:db8:2::10")]


def _install(lab: labns.LabHandle, fail_open: bool = False) -> None:
    nfq.install_queue(lab.firewall_ns, nfq.QueueLayout(0, fail_open))


@pytest.mark.lab
def test_install_queue_rules_in_the_fw_namespace(lab: labns.LabHandle) -> None:
    t0 = time.monotonic()
    _install(lab)
    print(f"\ninstall_queue: {(time.monotonic() - t0) * 1000:.0f} ms")
    v4 = lab.run("fw", ["iptables-nft", "-t", "raw", "-S"]).stdout
    v6 = lab.run("fw", ["ip6tables-nft", "-t", "raw", "-S"]).stdout
    for out in (v4, v6):
        assert "-A PREROUTING -j CT --notrack" in out
        assert "-A PREROUTING -j NFQUEUE --queue-num 0" in out
        assert "-A OUTPUT -j NFQUEUE --queue-num 0" in out
    # other namespaces (and the root namespace) are untouched
    assert "NFQUEUE" not in lab.run("client", ["iptables-nft", "-t", "raw", "-S"]).stdout
    nfq.remove_queue(lab.firewall_ns)
    assert "NFQUEUE" not in lab.run("fw", ["iptables-nft", "-t", "raw", "-S"]).stdout
    assert ping(lab, "client", "203.0.113.10")


BACKENDS = pytest.mark.parametrize("backend", ["netfilterqueue", "netlink"])


@pytest.mark.lab
@BACKENDS
def test_accept_all_consumer_carries_ping_and_tcp(
    lab, consumer, echo_server, tmp_path, backend
) -> None:
    _install(lab)
    log = tmp_path / "packets.jsonl"
    c = consumer(lab, "--log", str(log), "--backend", backend)
    # the socket buffer: we ask for 16 MiB, the kernel reports double (SO_RCVBUFFORCE)
    assert c.ready["rcvbuf"] >= c.ready["requested_rcvbuf"]
    assert c.ready["kernel"]["copy_mode"] == 2
    assert ping(lab, "client", "203.0.113.10", count=3)
    assert ping(lab, "client", "2001:db8:2::10", count=3)
    assert ping(lab, "fw", "203.0.113.10")  # the firewall's own packets: output hook
    srv4 = echo_server(lab, "server", "203.0.113.10", 8080)
    srv6 = echo_server(lab, "server", "2001:db8:2::10", 8081)
    assert srv4.check("client")
    assert srv6.check("client")
    (st,) = nfq.queue_stats(lab.firewall_ns)
    assert st.id_sequence > 20 and st.queue_dropped == 0 and st.user_dropped == 0
    final = c.stop()
    assert final["done"] and final["errors"] == 0 and final["dropped"] == 0
    assert final["accepted"] == final["packets"] >= st.id_sequence
    # what the adapter learns about each packet: the hook and the interfaces by name
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    hooks = {(r["hook"], r["iif"], r["oif"]) for r in rows}
    assert ("prerouting", "lan", None) in hooks  # client -> server, before routing: no oif
    assert ("prerouting", "wan", None) in hooks  # server -> client
    assert ("output", None, "wan") in hooks  # fw's own ping
    assert {r["hook"] for r in rows} <= {"prerouting", "output"}
    assert {(r["version"], r["proto"]) for r in rows} >= {(4, 1), (4, 6), (6, 58), (6, 6)}
    # the kernel tracked none of it
    assert lab.run("fw", ["cat", "/proc/net/nf_conntrack"]).stdout.strip() == ""


@pytest.mark.lab
@BACKENDS
def test_drop_verdict(lab, consumer, echo_server, backend) -> None:
    _install(lab)
    consumer(lab, "--drop", "icmp", "--backend", backend)
    assert not ping(lab, "client", "203.0.113.10")
    assert ping(lab, "client", "2001:db8:2::10")  # icmpv6 is another protocol
    assert echo_server(lab, "server", "203.0.113.10").check("client")


@pytest.mark.lab
@BACKENDS
def test_fail_closed_when_the_consumer_dies(lab, consumer, echo_server, backend) -> None:
    _install(lab, fail_open=False)
    assert not ping(lab, "client", "203.0.113.10")  # no listener yet: dropped
    c = consumer(lab, "--backend", backend)
    srv = echo_server(lab, "server", "203.0.113.10")
    assert ping(lab, "client", "203.0.113.10")
    assert srv.check("client")
    c.kill()
    assert nfq.queue_stats(lab.firewall_ns) == []  # the queue went with its listener
    assert not ping(lab, "client", "203.0.113.10")
    assert not ping(lab, "client", "2001:db8:2::10")
    assert not srv.check("client", timeout=1.5)
    # a new consumer picks the traffic up again
    consumer(lab, "--backend", backend)
    assert ping(lab, "client", "203.0.113.10")
    assert srv.check("client")


@pytest.mark.lab
def test_fail_open_with_queue_bypass(lab, consumer, echo_server) -> None:
    _install(lab, fail_open=True)
    srv = echo_server(lab, "server", "203.0.113.10")
    assert ping(lab, "client", "203.0.113.10")  # no listener: bypassed
    assert srv.check("client")
    c = consumer(lab, "--drop", "icmp")  # a listener decides again
    assert not ping(lab, "client", "203.0.113.10")
    c.kill()
    assert ping(lab, "client", "203.0.113.10")  # dead listener: bypassed, fail open
    assert ping(lab, "client", "2001:db8:2::10")
    assert srv.check("client")


@pytest.mark.lab
def test_down_ends_the_consumer(lab_factory, consumer) -> None:
    lab = lab_factory()
    _install(lab)
    c = consumer(lab)
    labns.down(lab.name)
    assert c.proc.wait(timeout=5) is not None


@pytest.mark.lab
@pytest.mark.slow
def test_throughput_and_drop_counters(lab, consumer) -> None:
    """Bounded: 2 s of TCP through the accept-all consumer; report the rate and the counters."""
    if subprocess.run(["which", "iperf3"], capture_output=True).returncode != 0:
        pytest.skip("iperf3 not installed")
    _install(lab)
    c = consumer(lab)
    srv = lab.exec(
        "server",
        ["iperf3", "-s", "-1", "-B", "203.0.113.10"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        res = lab.run("client", ["iperf3", "-c", "203.0.113.10", "-t", "2", "-J"], timeout=15)
        assert res.returncode == 0, res.stdout[-500:]
        report = json.loads(res.stdout)
        bps = report["end"]["sum_received"]["bits_per_second"]
    finally:
        srv.kill()
        srv.wait(timeout=5)
    (st,) = nfq.queue_stats(lab.firewall_ns)
    final = c.stop()
    print(
        f"\naccept-all NFQUEUE (netfilterqueue, 1 queue): {bps / 1e6:.0f} Mbit/s TCP, "
        f"{final['packets']} packets, queue_dropped={st.queue_dropped} "
        f"user_dropped={st.user_dropped}"
    )
    assert bps > 0


@pytest.mark.lab
@BACKENDS
def test_rewritten_packets_go_out_as_rewritten(lab, consumer, echo_server, backend) -> None:
    """The consumer moves port 9090 to 8080 (and the replies' 8080 back to 9090): the client
    talks to a port nobody listens on and gets the echo server's answer."""
    _install(lab)
    c = consumer(lab, "--move-port", "9090:8080", "--backend", backend)
    echo_server(lab, "server", "203.0.113.10", 8080)
    assert talk(lab, "client", "tcp", "203.0.113.10", 9090) == "echo:hello"
    final = c.stop()
    assert final["modified"] >= 6  # SYN, SYN-ACK, data, its answer, FINs and ACKs both ways
    assert final["errors"] == 0
