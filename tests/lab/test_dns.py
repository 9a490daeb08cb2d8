"""Lab DNS: every host resolves the lab's names from files, and nothing else, at once.

The names come from /etc/netns/<namespace>/ (bind-mounted by `ip netns exec`, which every way of
running something in a lab goes through); `down` removes them."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fw.lab import dns
from fw.lab import netns as labns
from fw.lab.topology import default_topology


def test_each_host_sees_the_firewalls_near_side_first() -> None:
    topo = default_topology()
    client, server = dns.hosts_text(topo, "client"), dns.hosts_text(topo, "server")
    assert client.index("192.0.2.1\tfw") < client.index("203.0.113.1\tfw")
    assert server.index("203.0.113.1\tfw") < server.index("192.0.2.1\tfw")
    assert "203.0.113.10\tserver\n" in client and "192.0.2.2\tclient\n" in server


def test_only_files_answer() -> None:
    text = dns.nsswitch_text()
    assert [line.split() for line in text.splitlines() if line.startswith("hosts:")] == [
        ["hosts:", "files"]]
    assert "nameserver" not in dns.RESOLV_CONF.replace("no name server", "")


@pytest.mark.lab
def test_names_resolve_in_the_lab_and_unknown_ones_fail_at_once(cli_lab) -> None:
    lab = cli_lab()
    found = lab.cli("exec", "client", "--", "getent", "ahostsv4", "server")  # `fwlab exec`
    assert found.returncode == 0 and found.stdout.split()[0] == "203.0.113.10"
    inside = lab.handle.run("server", ["getent", "ahostsv4", "fw"])  # how the lab starts things
    assert inside.returncode == 0 and inside.stdout.split()[0] == "203.0.113.1"
    t0 = time.monotonic()
    unknown = lab.cli("exec", "client", "--", "getent", "hosts", "example.com")
    assert unknown.returncode == 2 and time.monotonic() - t0 < 10  # no resolver asked, no wait
    for ns in lab.handle.namespaces.values():
        assert (dns.ETC_NETNS / ns / "hosts").is_file()
    lab.cli("down")
    assert not dns.lab_dirs(labns.lab_prefix(lab.name))


@pytest.mark.lab
def test_http_server_listens_at_once_and_curl_finds_it_by_name(cli_lab) -> None:
    lab = cli_lab()
    server = lab.handle.exec("server", [sys.executable, "-m", "http.server", "80", "--bind",
                                        "203.0.113.10"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):  # bounded wait for the socket (http.server prints late, buffered)
            got = lab.cli("exec", "client", "--", "curl", "-s", "-m", "3", "-o", "/dev/null",
                          "-w", "%{http_code}", "http://server/")
            if got.stdout == "200":
                break
            time.sleep(0.2)
        assert got.stdout == "200", (got.stdout, got.stderr, server.poll())
    finally:
        server.kill()  # the process this test started, by its Popen handle
        server.communicate(timeout=5)
