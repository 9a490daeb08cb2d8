"""The engine daemon: its parts without root, then real traffic through real labs (marker `lab`).

Every live test brings a lab up with `fwlab up` (engine daemon included), sends traffic with real
programs from the lab's hosts and checks what arrived *at the receiver*, not only what the sender
saw. The `cli_lab` fixture removes the lab and checks nothing is left."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fw.engine.engine import Engine
from fw.lab import daemon as daemon_mod
from fw.lab import rulestore, runtime
from fw.lab.daemon import Daemon, ReplySender
from fw.lab.engine_glue import load_rules, routing_for
from fw.lab.eventlog import JsonLog, packet_summary
from fw.lab.topology import default_topology

from .conftest import RULES, TEST_RULES, CliLab, read_line, talk

CLIENT, SERVER, ATTACKER = "192.0.2.2", "203.0.113.10", "203.0.113.66"
CLIENT6, SERVER6 = "2001:db8:1::2", "2001:db8:2::10"
FW_WAN = "203.0.113.1"


def ping(lab: CliLab, host: str, dst: str, count: int = 1) -> bool:
    res = lab.run(host, ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1", dst])
    return res.returncode == 0


# -- the parts (no root) -----------------------------------------------------------------------


def syn(src: str = CLIENT, dst: str = SERVER, dport: int = 80) -> bytes:
    from scapy.layers.inet import IP, TCP

    return bytes(IP(src=src, dst=dst) / TCP(sport=40000, dport=dport, flags="S"))


def bare_daemon(tmp_path: Path, rules: Path = RULES / "stateful-web.fw") -> Daemon:
    """A Daemon with a real engine and a log, but no queue, socket or lab."""
    daemon = Daemon("unit", rules)
    daemon.ruleset = load_rules(rules)
    daemon.engine = Engine(daemon.ruleset, routing_for(default_topology()))
    daemon.log = JsonLog(tmp_path / "engine.log")
    return daemon


def log_lines(daemon: Daemon) -> list[dict]:
    assert daemon.log is not None
    daemon.log.flush()
    return [json.loads(x) for x in daemon.log.path.read_text().splitlines()]


def test_routing_for_the_default_lab() -> None:
    routing = routing_for(default_topology())
    assert set(routing.interfaces) == {"lan", "wan"}
    import ipaddress

    def route(a: str) -> str | None:
        ip = ipaddress.ip_address(a)
        return routing.route(ip.version, int(ip))

    assert route(CLIENT) == "lan" and route(SERVER) == "wan" and route("198.51.100.7") == "wan"
    assert route(CLIENT6) == "lan" and route("2001:db8:99::1") == "wan"
    assert routing.is_local(4, int(ipaddress.ip_address(FW_WAN)))


def test_handle_judges_logs_and_drops(tmp_path: Path) -> None:
    daemon = bare_daemon(tmp_path)
    verdict, translated = daemon.handle(syn(), "prerouting", 1.0, "lan", None)
    assert verdict == "accept"  # and masqueraded: the bytes handed back carry the wan address
    assert translated is not None and translated[12:16] == bytes([203, 0, 113, 1])
    verdict, _ = daemon.handle(syn(ATTACKER, CLIENT, 22), "prerouting", 1.1, "wan", None)
    assert verdict == "drop"
    (event,) = [e for e in log_lines(daemon) if e["event"] == "drop"]
    assert event["chain"] == "forward" and event["prefixes"] == ["fwd-drop "]
    assert event["rule"]["line"] == 18 and event["rule"]["file"].endswith("stateful-web.fw")
    assert event["packet"] == {
        "len": 40, "family": 4, "src": ATTACKER, "dst": CLIENT, "proto": "tcp",
        "sport": 40000, "dport": 22, "flags": "syn",
    }


class CopyRanges:
    """A queue that only notes the copy ranges it is given."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def set_copy_range(self, size: int) -> None:
        self.sizes.append(size)


def test_the_queue_copies_headers_only_once_nothing_can_be_rewritten(tmp_path: Path) -> None:
    """Whole packets while NAT rules are loaded, and after a reload that took them away while a
    connection they translated runs; headers only once expiry has ended it."""
    from scapy.layers.inet import IP, UDP

    daemon = bare_daemon(tmp_path)  # stateful-web.fw masquerades
    daemon.queue = queue = CopyRanges()
    whole, headers = daemon_mod.WHOLE_COPY, daemon_mod.HEADERS_COPY
    daemon._fit_copy_range()
    udp = bytes(IP(src=CLIENT, dst=SERVER) / UDP(sport=5000, dport=53))
    _, translated = daemon.handle(udp, "prerouting", 1.0, "lan", None)
    assert translated is not None  # masqueraded: a translated connection
    daemon.engine.reload(load_rules(TEST_RULES / "bench-stateful.fw"))  # what reload() does
    daemon._fit_copy_range()
    for now in (2.0, 10.0):  # the connection runs (30 s for an unanswered UDP flow)
        daemon.clock = lambda now=now: now
        daemon._wait()
    assert queue.sizes == [whole, whole] and daemon.copy_range == whole
    daemon.clock = lambda: 100.0
    daemon._wait()
    assert len(daemon.engine.conntrack) == 0
    assert queue.sizes == [whole, whole, headers] and daemon.copy_range == headers


def test_loopback_is_not_judged(tmp_path: Path) -> None:
    daemon = bare_daemon(tmp_path)
    assert daemon.handle(syn("127.0.0.1", "127.0.0.1"), "output", 1.0, None, "lo")[0] == "accept"
    assert daemon.loopback == 1 and daemon.engine.stats.packets == 0


def test_an_engine_crash_drops_that_packet_and_logs_it(tmp_path: Path) -> None:
    daemon = bare_daemon(tmp_path)
    real = daemon.engine

    class Exploding:
        def process(self, payload: bytes, **kw: object) -> object:
            if payload[9] == 17:
                raise ZeroDivisionError("boom")
            return real.process(payload, **kw)

    daemon.engine = Exploding()
    from scapy.layers.inet import IP, UDP

    udp = bytes(IP(src=CLIENT, dst=SERVER) / UDP(sport=5000, dport=53))
    assert daemon.handle(udp, "prerouting", 1.0, "lan", None) == ("drop", None)
    assert daemon.handle(syn(), "prerouting", 1.1, "lan", None)[0] == "accept"  # goes on
    (crash,) = [e for e in log_lines(daemon) if e["event"] == "crash"]
    assert crash["packet_hex"] == udp.hex() and "ZeroDivisionError: boom" in crash["error"]
    assert daemon.crashes == 1


def reload_request(rules: Path, deadline_in: float = 10.0) -> dict:
    """What `fwlab reload` sends: the compiled rules and the deadline to apply them by."""
    stored = rulestore.StoredRules(str(rules), load_rules(rules))
    return {"cmd": "reload", "compiled": rulestore.encode(stored),
            "deadline": time.monotonic() + deadline_in}


def test_reload_swaps_compiled_rules_and_keeps_connections(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "RUN_DIR", tmp_path)
    (tmp_path / "unit").mkdir()  # the lab's runtime directory
    daemon = bare_daemon(tmp_path)
    daemon.handle(syn(), "prerouting", 1.0, "lan", None)
    assert len(daemon.engine.conntrack) == 1
    good = daemon.dispatch(reload_request(TEST_RULES / "open.fw"))
    assert good == {"ok": True, "applied": True, "rules": str(TEST_RULES / "open.fw"),
                    "mode": "stateful"}
    assert len(daemon.engine.conntrack) == 1 and daemon.reloads == 1
    assert rulestore.load_stored("unit").path == str(TEST_RULES / "open.fw")  # for a restart
    assert daemon.dispatch({"cmd": "nope"})["ok"] is False


def test_reload_is_applied_before_its_deadline_or_never(tmp_path: Path) -> None:
    daemon = bare_daemon(tmp_path)
    late = daemon.dispatch(reload_request(TEST_RULES / "open.fw", deadline_in=-1))
    assert late["applied"] is False and "the old rules stay" in late["error"]
    gone = daemon.dispatch(reload_request(TEST_RULES / "open.fw"), waiting=lambda: False)
    assert gone["applied"] is False and "stopped waiting" in gone["error"]
    assert daemon.rules == RULES / "stateful-web.fw" and daemon.reloads == 0
    # a path alone is refused: the daemon never opens a user's file
    for request in ({"cmd": "reload", "rules": str(TEST_RULES / "open.fw")},
                    {"cmd": "reload", "compiled": "garbage"}):
        answer = daemon.dispatch(request)
        assert answer["ok"] is False and "compiled" in answer["error"]
    assert [e["event"] for e in log_lines(daemon)] == ["reload-refused", "reload-refused"]


def test_json_log_is_capped(tmp_path: Path) -> None:
    log = JsonLog(tmp_path / "engine.log", max_bytes=1000)
    for i in range(200):
        log.write({"event": "drop", "n": i, "pad": "x" * 20})
    log.close()
    current, old = tmp_path / "engine.log", tmp_path / "engine.log.1"
    assert current.stat().st_size <= 1000 and old.stat().st_size <= 1000
    assert json.loads(current.read_text().splitlines()[-1])["n"] == 199
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine.log", "engine.log.1"]


def test_reply_sender_recognises_its_own_packets() -> None:
    from scapy.layers.inet import IP, TCP

    sent = bytes(IP(src=SERVER, dst=CLIENT, id=0) / TCP(sport=81, dport=40000, flags="RA"))
    as_seen = bytes(IP(src=SERVER, dst=CLIENT, id=4321) / TCP(sport=81, dport=40000, flags="RA"))
    sender = ReplySender()
    sender._own[ReplySender.key(sent)] = 10.0  # what send() records
    assert sender.is_own(as_seen, 5.0)  # the kernel filled in id and checksum: still ours
    assert not sender.is_own(as_seen, 5.0)  # once only
    assert packet_summary(b"\x45")["undecodable"] is True


# -- real traffic --------------------------------------------------------------------------------


@pytest.mark.lab
def test_stateful_web(cli_lab, listener) -> None:
    lab = cli_lab()  # default lab, rules/stateful-web.fw
    web = listener(lab, "server", "tcp", SERVER, 80)
    dns = listener(lab, "server", "udp", SERVER, 53)
    inside = listener(lab, "client", "tcp", CLIENT, 40000)
    inside_udp = listener(lab, "client", "udp", CLIENT, 40001)
    assert talk(lab, "client", "tcp", SERVER, 80) == "echo:hello"
    assert talk(lab, "client", "udp", SERVER, 53) == "echo:hello"
    assert ping(lab, "client", SERVER)
    # nothing unsolicited gets in, not even from the web server's port
    assert talk(lab, "attacker", "tcp", CLIENT, 40000, timeout=1, sport=80).startswith("error")
    assert talk(lab, "attacker", "udp", CLIENT, 40001, timeout=1, sport=53).startswith("error")
    assert not ping(lab, "attacker", CLIENT)
    assert [p[0] for p in web.peers()] == ["conn"] and [p[0] for p in dns.peers()] == ["dgram"]
    assert inside.peers() == [] and inside_udp.peers() == []  # asserted at the receiver
    rows = json.loads(lab.cli("conntrack", "--json").stdout)
    assert {r["proto"] for r in rows} >= {"tcp", "udp", "icmp"}
    drops = [e for e in lab.log_events() if e["event"] == "drop"]
    assert any(e["packet"].get("dport") == 40000 and e["iif"] == "wan" for e in drops)
    status = lab.status()["daemon"]
    assert status["engine"]["packets"]["dropped"] >= 3
    hits = {r["line"]: r["hits"] for r in status["engine"]["chains"]["forward"]["rules"]}
    assert hits[14] == 1 and hits[15] == 1 and hits[16] == 1 and hits[18] >= 3


@pytest.mark.lab
def test_stateless_web_opens_the_ephemeral_range(cli_lab, listener) -> None:
    lab = cli_lab("--rules", str(RULES / "stateless-web.fw"))
    web = listener(lab, "server", "tcp", SERVER, 80)
    inside = listener(lab, "client", "tcp", CLIENT, 40000)
    closed = listener(lab, "client", "tcp", CLIENT, 22)
    assert talk(lab, "client", "tcp", SERVER, 80) == "echo:hello"
    # the hole: from source port 80, anyone reaches any port of the ephemeral range
    assert talk(lab, "attacker", "tcp", CLIENT, 40000, sport=80) == "echo:hello"
    assert talk(lab, "attacker", "tcp", CLIENT, 22, timeout=1, sport=80).startswith("error")
    assert len(web.peers()) == 1
    assert [(k, a) for k, a, _ in inside.peers()] == [("conn", ATTACKER)]
    assert closed.peers() == []
    assert lab.status()["daemon"]["engine"]["conntrack"]["entries"] == 0  # stateless: no table


@pytest.mark.lab
def test_reject_sends_rst_and_icmp_unreachable(cli_lab, listener) -> None:
    lab = cli_lab("--rules", str(TEST_RULES / "reject.fw"))
    for dst in (SERVER, SERVER6):
        t0 = time.monotonic()
        assert talk(lab, "client", "tcp", dst, 81, timeout=3) == "error ConnectionRefusedError"
        assert talk(lab, "client", "udp", dst, 81, timeout=3) == "error ConnectionRefusedError"
        assert time.monotonic() - t0 < 2.5  # told at once, not timed out
    rejects = [e for e in lab.log_events() if e["event"] == "reject"]
    assert len(rejects) == 4 and all(e["reply_sent"] for e in rejects)
    assert sum(e.get("prefixes") == ["udp-81 "] for e in rejects) == 2
    assert lab.status()["daemon"]["daemon"]["rejects_sent"] == 4


@pytest.mark.lab
def test_ipv6_tcp_udp_and_ping(cli_lab, listener) -> None:
    lab = cli_lab("--rules", str(TEST_RULES / "open.fw"))
    tcp6 = listener(lab, "server", "tcp", SERVER6, 8080)
    udp6 = listener(lab, "server", "udp", SERVER6, 8080)
    inside6 = listener(lab, "client", "tcp", CLIENT6, 40000)
    assert ping(lab, "client", SERVER6)
    assert talk(lab, "client", "tcp", SERVER6, 8080) == "echo:hello"
    assert talk(lab, "client", "udp", SERVER6, 8080) == "echo:hello"
    assert talk(lab, "attacker", "tcp", CLIENT6, 40000, timeout=1, sport=8080).startswith("error")
    assert [(k, a) for k, a, _ in tcp6.peers()] == [("conn", CLIENT6)]
    assert [(k, a) for k, a, _ in udp6.peers()] == [("dgram", CLIENT6)]
    assert inside6.peers() == []


_LONG_CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
f = s.makefile("rwb", buffering=0)
for line in sys.stdin:
    f.write(line.encode()); print(f.readline().decode().strip(), flush=True)
"""


@pytest.mark.lab
def test_reload_keeps_a_long_lived_connection(cli_lab, listener) -> None:
    lab = cli_lab("--rules", str(TEST_RULES / "open.fw"))
    listener(lab, "server", "tcp", SERVER, 8080, life=90)  # slow reloads on a busy machine
    conn = lab.handle.exec(
        "client",
        [sys.executable, "-c", _LONG_CLIENT, SERVER, "8080"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:

        def say(word: str) -> str:
            assert conn.stdin is not None
            conn.stdin.write(word + "\n")
            conn.stdin.flush()
            return read_line(conn, timeout=5).strip()

        assert say("one") == "echo:one"
        # a file with errors: refused with its diagnostics, the old rules stay
        bad = lab.cli("reload", str(TEST_RULES / "bad.fw"))
        assert bad.returncode == 2
        assert "bad.fw:5:23: error: port 99999 is out of range" in bad.stderr
        assert "Traceback" not in bad.stderr
        assert lab.status()["daemon"]["rules"] == str(TEST_RULES / "open.fw")
        assert say("two") == "echo:two"
        # a good file: swapped in, the connection (in the table) survives
        good = lab.cli("reload", str(TEST_RULES / "reject.fw"))
        assert good.returncode == 0, good.stderr
        assert lab.status()["daemon"]["rules"] == str(TEST_RULES / "reject.fw")
        assert say("three") == "echo:three"
        assert talk(lab, "client", "tcp", SERVER, 81) == "error ConnectionRefusedError"
    finally:
        conn.kill()
        conn.communicate(timeout=5)


@pytest.mark.lab
def test_daemon_gone_means_traffic_stops(cli_lab) -> None:
    lab = cli_lab()
    assert ping(lab, "client", SERVER)
    lab.kill_supervisor()  # and with it the daemon: nothing starts it again
    assert not ping(lab, "client", SERVER)  # fail closed: the queue has no listener
    res = lab.cli("status")
    assert res.returncode == 1 and "not running" in res.stdout


@pytest.mark.lab
def test_fail_open_lets_traffic_through_without_the_daemon(cli_lab) -> None:
    lab = cli_lab("--fail-open")
    assert lab.status()["daemon"]["fail_open"] is True
    assert not ping(lab, "attacker", CLIENT)  # judged while the daemon runs
    lab.kill_supervisor()
    assert ping(lab, "attacker", CLIENT)  # the user's explicit choice: unjudged


@pytest.mark.lab
def test_two_labs_at_once(cli_lab, listener) -> None:
    a = cli_lab()
    b = cli_lab("--rules", str(RULES / "stateless-web.fw"))
    assert ping(a, "client", SERVER)
    assert not ping(b, "client", SERVER)  # stateless-web has no ICMP rule
    assert a.status()["daemon"]["pid"] != b.status()["daemon"]["pid"]
    down = a.cli("down")
    assert down.returncode == 0
    web = listener(b, "server", "tcp", SERVER, 80)
    assert talk(b, "client", "tcp", SERVER, 80) == "echo:hello"
    assert len(web.peers()) == 1


# -- NAT ---------------------------------------------------------------------------------------

NAT_TOPOLOGY = Path(__file__).parent / "nat.yaml"


@pytest.mark.lab
def test_masquerade_seen_by_the_server(cli_lab, listener) -> None:
    lab = cli_lab()  # stateful-web.fw: oif wan masquerade
    web = listener(lab, "server", "tcp", SERVER, 80)
    assert talk(lab, "client", "tcp", SERVER, 80) == "echo:hello"
    assert [a for _, a, _ in web.peers()] == [FW_WAN]
    assert json.loads(lab.cli("nat", "--json").stdout)


@pytest.mark.lab
def test_port_forward_from_the_attacker(cli_lab, listener) -> None:
    lab = cli_lab(str(NAT_TOPOLOGY))  # tests/lab/rules/nat.fw, host `web` is 192.0.2.10
    web = listener(lab, "web", "tcp", "192.0.2.10", 80)
    assert talk(lab, "attacker", "tcp", FW_WAN, 8080) == "echo:hello"
    assert [a for _, a, _ in web.peers()] == [ATTACKER]


@pytest.mark.lab
def test_hairpin_from_the_client(cli_lab, listener) -> None:
    lab = cli_lab(str(NAT_TOPOLOGY))
    web = listener(lab, "web", "tcp", "192.0.2.10", 80)
    assert talk(lab, "client", "tcp", FW_WAN, 8080) == "echo:hello"
    # the web host answers the firewall (hairpin source NAT), so the reply goes back through it
    assert [a for _, a, _ in web.peers()] == ["192.0.2.1"]


@pytest.mark.lab
def test_limit_rate_lets_through_the_burst(cli_lab, tmp_path: Path) -> None:
    """`limit rate 1/minute burst 3 packets`: of six pings in a second, the bucket's three
    get through and the rest meet the policy (the rate refills none within the test)."""
    rules = tmp_path / "limit.fw"
    rules.write_text("mode stateless\npolicy input accept\npolicy forward drop\n"
                     "policy output accept\nforward {\n"
                     "    icmp type echo-request limit rate 1/minute burst 3 packets accept\n"
                     "    icmp type echo-reply accept\n}\n")
    lab = cli_lab("--rules", str(rules))
    res = lab.run("client", ["ping", "-n", "-q", "-c", "6", "-i", "0.2", "-W", "1", SERVER])
    assert "6 packets transmitted, 3 received" in res.stdout, res.stdout
