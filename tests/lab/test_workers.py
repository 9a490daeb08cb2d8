"""`fwlab up --workers 2`: two engine processes, each owning its flows (fw/lab/steering.py).

Real namespaces, real clients: flows from several inside ports spread over both workers, NAT'd
replies find the worker that made the mapping, a port forward works, `conntrack`, `nat`,
`status` and `logs` merge, `reload` reaches both, and a killed worker fails closed for its own
flows only until its supervisor has started it again."""

from __future__ import annotations

import json
import os
import signal

import pytest

from fw.lab import netns as labns
from fw.lab import runtime

from .conftest import HERE, fwlab, new_lab_name, talk, wait_until

pytestmark = pytest.mark.lab

NAT_LAB = str(HERE / "nat.yaml")
SERVER = "203.0.113.10"
PORTS = range(40001, 40009)  # inside source ports: enough that both workers get flows


def _rows(lab, what: str) -> list[dict]:
    res = lab.cli(what, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _worker_of(rows: list[dict], sport: int) -> int:
    (row,) = [r for r in rows if f":{sport} " in r["orig"]]
    return row["worker"]


@pytest.mark.parametrize("backend", ["netlink", "netfilterqueue"])
def test_two_workers_share_the_flows_and_nat_replies_come_back(cli_lab, listener,
                                                               backend) -> None:
    lab = cli_lab(NAT_LAB, "--workers", "2", "--backend", backend)
    udp = listener(lab, "server", "udp", SERVER, 7001)
    tcp = listener(lab, "server", "tcp", SERVER, 7000)
    for sport in PORTS:
        assert talk(lab, "client", "udp", SERVER, 7001, sport=sport) == "echo:hello"
        assert talk(lab, "client", "tcp", SERVER, 7000, sport=sport) == "echo:hello"
    # masqueraded: the server saw the firewall's address, on ports of the mapping's worker
    assert {addr for _, addr, _ in udp.peers() + tcp.peers()} == {"203.0.113.1"}
    conns = _rows(lab, "conntrack")
    assert {r["worker"] for r in conns} == {0, 1}
    for mapping in _rows(lab, "nat"):  # worker W's outside ports are of class W (port % 2)
        assert int(mapping["outside"].rsplit(":", 1)[1]) % 2 == mapping["worker"]
    status = lab.status()["daemon"]
    assert status["ok"] and [w["worker"] for w in status["workers"]] == [0, 1]
    each = [w["engine"]["conntrack"]["entries"] for w in status["workers"]]
    assert all(each) and status["engine"]["conntrack"]["entries"] == sum(each)


def test_a_port_forward_and_masqueraded_pings_with_two_workers(cli_lab, listener) -> None:
    lab = cli_lab(NAT_LAB, "--workers", "2")
    web = listener(lab, "web", "tcp", "192.0.2.10", 80)
    for sport in PORTS:  # every connection of the forward to worker 0, both sides
        assert talk(lab, "server", "tcp", "203.0.113.1", 8080, sport=sport) == "echo:hello"
    assert len(web.peers()) == len(PORTS)
    assert {r["worker"] for r in _rows(lab, "conntrack") if "8080" in r["orig"]} == {0}
    for _ in range(4):  # new echo ids: their replies by the id slice of the NAT'd id
        pings = lab.run("client", ["ping", "-c", "2", "-i", "0.2", "-W", "1", SERVER])
        assert pings.returncode == 0, pings.stdout


def test_reload_reaches_every_worker_and_logs_merge(cli_lab) -> None:
    lab = cli_lab(NAT_LAB, "--workers", "2")
    res = lab.cli("reload", str(HERE / "rules" / "nat.fw"))
    assert res.returncode == 0, res.stderr
    workers = lab.status()["daemon"]["workers"]
    assert [w["daemon"]["reloads"] for w in workers] == [1, 1]
    reloads = [e for e in lab.log_events() if e["event"] == "reload"]
    assert sorted(e["worker"] for e in reloads) == [0, 1]


def test_rules_that_share_state_refuse_two_workers(cli_lab, tmp_path) -> None:
    limited = tmp_path / "limited.fw"
    limited.write_text("mode stateful\npolicy forward drop\nforward {\n"
                       "    ct state established,related accept\n"
                       "    iif lan limit rate 10/second accept\n}\n")
    lab = cli_lab(NAT_LAB, "--workers", "2")
    res = lab.cli("reload", str(limited))
    assert res.returncode == 2 and "rate limits" in res.stderr, res.stderr
    assert [w["daemon"]["reloads"] for w in lab.status()["daemon"]["workers"]] == [0, 0]


def test_a_dead_worker_fails_closed_for_its_flows_only_and_is_restarted(cli_lab,
                                                                        listener) -> None:
    lab = cli_lab(NAT_LAB, "--workers", "2")
    listener(lab, "server", "udp", SERVER, 7001, life=40)
    for sport in PORTS:
        assert talk(lab, "client", "udp", SERVER, 7001, sport=sport) == "echo:hello"
    conns = _rows(lab, "conntrack")
    mine = {w: [p for p in PORTS if _worker_of(conns, p) == w] for w in (0, 1)}
    assert mine[0] and mine[1]
    sup = lab.supervisor()
    victim = sup["workers"]["1"]
    # the supervisor (this test's lab's, by PID) is held, so the dead worker stays dead
    os.kill(sup["supervisor_pid"], signal.SIGSTOP)
    try:
        os.kill(victim["pid"], signal.SIGKILL)
        wait_until(lambda: not runtime.pid_alive(victim["pid"]) or
                   runtime.proc_start_time(victim["pid"]) != victim["start"])
        assert talk(lab, "client", "udp", SERVER, 7001, sport=mine[1][0],
                    timeout=1).startswith("error")  # fail closed: nobody judges its queue
        assert talk(lab, "client", "udp", SERVER, 7001, sport=mine[0][0]) == "echo:hello"
    finally:
        os.kill(sup["supervisor_pid"], signal.SIGCONT)
    wait_until(lambda: lab.supervisor()["workers"]["1"]["pid"] != victim["pid"])
    wait_until(lambda: lab.status()["daemon"]["ok"], timeout=15)
    after = lab.supervisor()
    assert after["restarts"] == 1 and after["last_worker"] == 1
    assert after["last_exit"] == "killed by SIGKILL"
    assert "ago: worker 1: killed by SIGKILL)" in lab.cli("status").stdout
    assert after["workers"]["0"] == sup["workers"]["0"]  # the other worker kept running
    assert talk(lab, "client", "udp", SERVER, 7001, sport=mine[1][0]) == "echo:hello"


LIMITED = """\
mode stateful
policy forward drop
forward {
    ct state established,related accept
    iif lan limit rate 10/second accept
}
"""


def test_rules_that_share_state_cannot_come_up_on_two_workers(tmp_path) -> None:
    limited = tmp_path / "limited.fw"
    limited.write_text(LIMITED)
    lab = new_lab_name()
    try:
        res = fwlab("up", NAT_LAB, "--rules", str(limited), "--name", lab, "--workers", "2",
                    timeout=60)
        assert res.returncode == 2 and "rate limits" in res.stderr, res.stdout + res.stderr
        assert "lab removed" in res.stderr
        odd = fwlab("up", NAT_LAB, "--name", lab, "--workers", "3")
        assert odd.returncode == 2 and "--workers 3: one of 1, 2, 4, 8, 16" in odd.stderr
    finally:
        if (labns.RUN_DIR / lab).exists():
            fwlab("down", "--name", lab, timeout=60)
    assert not labns.lab_namespaces(lab)

