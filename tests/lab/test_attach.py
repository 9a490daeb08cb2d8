"""`fwlab attach` / `detach` on namespaces the test builds by hand, as a containerlab user has them:
a router namespace with devices eth1 and eth2 (the rule file says lan and wan) between two host
namespaces. Traffic is judged while attached; after detach the router's nft ruleset, its
sysctls and its processes are exactly what they were before, and every namespace is still there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from fw.lab import netns as labns

from .conftest import fwlab, new_lab_name, wait_until
from .test_capture import start_capture
from .test_follow_trace import follower

WEB = """\
mode stateful
policy forward drop
policy input drop
policy output accept
forward {
    ct state established,related accept
    iif lan oif wan tcp dport 80 accept comment "web"
}
nat {
    oif wan masquerade
}
"""
WEB_AND_81 = WEB.replace('comment "web"', 'comment "web"\n    iif lan tcp dport 81 accept')

SERVER = "203.0.113.2"


def sh(ns: str, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=timeout)


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=10)


class Topology:
    """router (eth1: 192.0.2.1, eth2: 203.0.113.1) between client (192.0.2.2) and server
    (203.0.113.2); every veth is created inside the router namespace, its peer in a host's."""

    def __init__(self, prefix: str) -> None:
        self.router, self.client, self.server = (f"{prefix}{n}" for n in ("r", "c", "s"))
        for ns in (self.router, self.client, self.server):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        for dev, host, mine, theirs in (("eth1", self.client, "192.0.2.1", "192.0.2.2"),
                                        ("eth2", self.server, "203.0.113.1", SERVER)):
            ip("-n", self.router, "link", "add", dev, "type", "veth", "peer", "name", "eth0",
               "netns", host)
            ip("-n", self.router, "addr", "add", f"{mine}/24", "dev", dev)
            ip("-n", host, "addr", "add", f"{theirs}/24", "dev", "eth0")
            ip("-n", self.router, "link", "set", dev, "up")
            ip("-n", host, "link", "set", "eth0", "up")
            ip("-n", host, "route", "add", "default", "via", mine)

    def namespaces(self) -> list[str]:
        return [self.router, self.client, self.server]

    def remove(self) -> None:
        for ns in self.namespaces():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@pytest.fixture
def topo() -> Iterator[Topology]:
    prefix = f"fwt{new_lab_name()}"
    made = Topology(prefix)
    servers = [start_server(made.server, port) for port in (80, 81)]
    try:
        yield made
    finally:
        for proc in servers:  # the servers this test started, by their Popen handles
            proc.kill()
            proc.communicate(timeout=5)
        made.remove()
    assert not [ns for ns in made.namespaces() if (labns.NETNS_DIR / ns).exists()]


def start_server(ns: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "fw.lab.webserver",
                             "--bind", SERVER, "--port", str(port), "--seconds", "120"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: f"{SERVER}:{port} " in sh(ns, "ss", "-Hltn").stdout, timeout=20)
    return proc


@pytest.fixture
def name() -> Iterator[str]:
    """The attachment's name; detached at the end if a failed test left it attached."""
    chosen = new_lab_name()
    yield chosen
    if (labns.RUN_DIR / chosen / "lab.json").exists():
        fwlab("detach", "--name", chosen)


def snapshot(ns: str) -> dict:
    """What detach must leave as attach found it: nft's ruleset, the net sysctls (but the
    conntrack table's fill), the processes in the namespace."""
    ruleset = sh(ns, "nft", "list", "ruleset").stdout
    sysctls = [line for line in sh(ns, "sysctl", "-a", "-r", "^net\\.").stdout.splitlines()
               if "nf_conntrack_count" not in line]
    return {"nft": ruleset, "sysctls": sysctls, "processes": processes_in(ns)}


def processes_in(ns: str) -> set[int]:
    inode = os.stat(labns.NETNS_DIR / ns).st_ino
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == inode:
                found.add(int(pid))
        except OSError:
            continue
    return found


def curl(topo: Topology, port: int) -> subprocess.CompletedProcess:
    return sh(topo.client, "curl", "-s", "-m", "3", f"http://{SERVER}:{port}/")


def forward_hits(name: str) -> dict[str, int]:
    res = fwlab("status", "--name", name, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    status = json.loads(res.stdout)
    engine = (status["kernel"]["engine_status"] if status["kernel"]
              else status["daemon"]["engine"])
    return {r["text"]: r["hits"] for r in engine["chains"]["forward"]["rules"]}


@pytest.mark.lab
@pytest.mark.parametrize("engine", ["fwlab", "kernel"])
def test_attach_judges_traffic_and_detach_leaves_nothing(topo, name, engine, tmp_path) -> None:
    web, more = tmp_path / "web.fw", tmp_path / "web81.fw"
    web.write_text(WEB)
    more.write_text(WEB_AND_81)
    before = snapshot(topo.router)

    res = fwlab("attach", topo.router, "--iface", "lan=eth1", "--iface", "wan=eth2",
                "--rules", str(web), "--name", name, "--engine", engine, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "you came from 203.0.113.1" in curl(topo, 80).stdout  # allowed, masqueraded
    assert curl(topo, 81).returncode != 0  # dropped
    hits = forward_hits(name)
    assert hits['iif lan oif wan tcp dport 80 accept comment "web"'] == 1
    assert hits["ct state established,related accept"] > 0
    listed = {row["name"]: row for row in json.loads(fwlab("list", "--json").stdout)}
    assert listed[name]["topology"] == f"netns {topo.router}"
    assert (listed[name]["kind"], listed[name]["netns"], listed[name]["ifaces"]) == (
        "attachment", topo.router, {"lan": "eth1", "wan": "eth2"})
    said = fwlab("status", "--name", name).stdout
    assert f"attachment {name!r}: up, engine {engine}, attached" in said
    assert f"to namespace {topo.router}" in said
    assert listed[name]["engine"] == engine and listed[name]["daemon"]["running"]

    dmz = tmp_path / "dmz.fw"
    dmz.write_text(WEB.replace("iif lan oif wan", "iif dmz oif wan"))
    refused = fwlab("reload", str(dmz), "--name", name)
    assert refused.returncode == 2 and f"interface 'dmz' is not mapped by attachment {name!r} " \
        "(it maps lan=eth1, wan=eth2)" in refused.stderr, refused.stderr
    res = fwlab("reload", str(more), "--name", name)
    assert res.returncode == 0, res.stderr
    assert "you came from 203.0.113.1" in curl(topo, 81).stdout
    if engine == "kernel":  # no daemon to restart; nothing is started
        res = fwlab("restart", "--name", name)
        assert res.returncode == 2 and "runs the kernel engine: there is no daemon to restart" \
            in res.stderr, res.stderr

    res = fwlab("detach", "--name", name, timeout=60)
    assert res.returncode == 0, res.stderr
    wait_until(lambda: processes_in(topo.router) == before["processes"])
    assert snapshot(topo.router) == before
    assert all((labns.NETNS_DIR / ns).exists() for ns in topo.namespaces())
    assert not (labns.RUN_DIR / name).exists()


@pytest.mark.lab
def test_attach_refuses_bad_input_in_one_line(topo, name, tmp_path) -> None:
    rules = tmp_path / "web.fw"
    rules.write_text(WEB)
    before = snapshot(topo.router)

    def attach(*args: str) -> subprocess.CompletedProcess:
        return fwlab("attach", *args, "--rules", str(rules), "--name", name, timeout=60)

    for args, says in (
        (["nosuchnamespace", "--iface", "lan=eth1"], "no network namespace 'nosuchnamespace'"),
        ([topo.router, "--iface", "lan=eth9"], f"namespace {topo.router} has no device eth9"),
        ([topo.router, "--iface", "lan"], "give NAME=DEVICE"),
        ([topo.router, "--iface", "lan=eth1", "--iface", "wan=eth1"], "already mapped"),
    ):
        res = attach(*args)
        assert res.returncode == 2 and says in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert snapshot(topo.router) == before

    res = attach(topo.router, "--iface", "lan=eth1", "--iface", "dmz=eth2")
    assert res.returncode == 0, res.stderr
    assert "the rules never name dmz" in res.stderr  # warnings, not errors
    assert "the rules name interface 'wan', which no --iface maps" in res.stderr
    taken = attach(topo.router, "--iface", "lan=eth1")
    assert taken.returncode == 2 and f"the name {name!r} is in use" in taken.stderr
    other = fwlab("attach", topo.router, "--iface", "lan=eth1", "--rules", str(rules),
                  "--name", new_lab_name())
    assert other.returncode == 2 and f"fwlab already runs in front of {topo.router}" in \
        other.stderr
    assert fwlab("down", "--name", name).returncode == 2  # an attachment is detached, not downed
    assert fwlab("detach", "--name", name, timeout=60).returncode == 0
    wait_until(lambda: processes_in(topo.router) == before["processes"])
    assert snapshot(topo.router) == before


def test_an_attachment_name_comes_from_its_namespace() -> None:
    from fw.commands.attach import default_name

    assert default_name("clab-fw01") == "clabfw01"


@pytest.mark.lab
def test_capture_trace_and_restart_on_an_attachment(topo, name, tmp_path) -> None:
    """What works on a lab works on an attachment, in the rule file's names: capture on `lan`
    records the mapped device (and replays), trace shows `iif lan`, restart judges again."""
    web, pcap = tmp_path / "web.fw", tmp_path / "lan.pcap"
    web.write_text(WEB)
    res = fwlab("attach", topo.router, "--iface", "lan=eth1", "--iface", "wan=eth2",
                "--rules", str(web), "--name", name, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    lab = SimpleNamespace(name=name)
    cap = start_capture(lab, "fw", "-i", "lan", "-o", str(pcap), "--seconds", "60")
    traced = follower(lab, "trace", "tcp dport 80", "--count", "1", "--seconds", "30")
    assert "you came from 203.0.113.1" in curl(topo, 80).stdout
    shown, _ = traced.communicate(timeout=40)
    time.sleep(0.5)  # the last FIN and ACK
    cap.send_signal(signal.SIGINT)  # Ctrl-C, to the capture this test started
    out, err = cap.communicate(timeout=20)
    assert cap.returncode == 0 and "from fw lan (eth1)" in out, out + err
    assert "iif lan" in shown and "eth1" not in shown, shown
    replay = fwlab("replay", str(web), str(pcap), "--json", timeout=60)
    rows = [json.loads(line) for line in replay.stdout.splitlines()]
    client = [r for r in rows if r["packet"].startswith("tcp 192.0.2.2:")]  # lan, coming in
    assert client and client[0]["ct_state"] == "new" and client[0]["nat"][0]["kind"] == "snat"
    assert all(r["verdict"] == "accept" for r in client)

    res = fwlab("restart", "--name", name, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    wait_until(lambda: "you came from" in curl(topo, 80).stdout, timeout=20)
    assert forward_hits(name)['iif lan oif wan tcp dport 80 accept comment "web"'] >= 1


def test_a_rule_naming_what_an_attachment_lacks_is_refused_saying_what_it_maps(tmp_path) -> None:
    from fw.commands.common import KnownInterfaces, refuse_unknown_interfaces
    from fw.dsl import load_ruleset
    from fw.errors import LabError

    rules = tmp_path / "dmz.fw"
    rules.write_text(WEB.replace("iif lan oif wan", "iif dmz oif wan"))
    known = KnownInterfaces.of_attachment("edge", "clab-fw01", {"lan": "eth1", "wan": "eth2"},
                                          ["eth0"])
    with pytest.raises(LabError) as refused:
        refuse_unknown_interfaces(load_ruleset(str(rules)), known)
    assert str(refused.value).endswith(
        "interface 'dmz' is not mapped by attachment 'edge' (it maps lan=eth1, wan=eth2; "
        "namespace clab-fw01 also has eth0): rules naming it would never match; --force runs "
        "the file anyway")
    refuse_unknown_interfaces(load_ruleset(str(rules)), None)  # --force
    assert "eth0" in known.names  # an unmapped device keeps its own name


@pytest.mark.lab
def test_attach_with_two_workers_and_detach_leaves_nothing(topo, name, tmp_path) -> None:
    web = tmp_path / "web.fw"
    web.write_text(WEB)
    before = snapshot(topo.router)
    res = fwlab("attach", topo.router, "--iface", "lan=eth1", "--iface", "wan=eth2",
                "--rules", str(web), "--name", name, "--workers", "2", timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    for _ in range(4):
        assert "you came from 203.0.113.1" in curl(topo, 80).stdout  # allowed, masqueraded
    assert curl(topo, 81).returncode != 0  # dropped
    assert "table inet fwlab_steer" in sh(topo.router, "nft", "list", "tables").stdout
    res = fwlab("detach", "--name", name, timeout=60)
    assert res.returncode == 0, res.stderr
    wait_until(lambda: processes_in(topo.router) == before["processes"])
    assert snapshot(topo.router) == before
