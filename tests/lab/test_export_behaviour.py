"""Exported filter rules in the kernel answer as the engine does: ipv6-host.fw's `iif wan
reject` refuses TCP with a RST and UDP with an ICMPv6 port unreachable (both make the sender's
socket fail at once, where a drop makes it wait), and IPv6 works behind `policy input drop` only
with a rule that lets neighbour discovery in, as in the engine."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fw.dsl import load_ruleset
from fw.export.nft import to_nft

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft")]

PROBE = r"""
import select, socket, sys, time
kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
icmp = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
s.settimeout(3)
try:
    s.connect((host, port))
    if kind == "udp":
        s.send(b"x"); s.recv(10)
    print("open")
except ConnectionRefusedError:
    time.sleep(0.2)
    unreachable = False
    while select.select([icmp], [], [], 0)[0]:
        data = icmp.recv(2000)
        unreachable |= data[:2] == bytes((1, 4))
    print("refused by", "icmpv6 port unreachable" if unreachable else "rst")
except (TimeoutError, socket.timeout):
    print("silence")
"""


def load(lab, rules: str) -> None:
    script = to_nft(load_ruleset(str(ROOT / rules))).text
    loaded = subprocess.run(["ip", "netns", "exec", lab.firewall_ns, "nft", "-f", "-"],
                            input=script, capture_output=True, text=True, timeout=20)
    assert loaded.returncode == 0, loaded.stderr


def probe(lab, kind: str, port: int) -> str:
    result = lab.run("attacker", [sys.executable, "-c", PROBE, kind, "2001:db8:1::2", str(port)],
                     timeout=10)
    return result.stdout.strip()


def test_exported_reject_refuses_like_the_engine(lab) -> None:
    load(lab, "rules/ipv6-host.fw")
    assert probe(lab, "tcp", 22) == "refused by rst"
    assert probe(lab, "udp", 5353) == "refused by icmpv6 port unreachable"


UDP_ECHO = r"""
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(("2001:db8:2::10", 53))
s.settimeout(8)
print("ready", flush=True)
data, peer = s.recvfrom(100); s.sendto(b"echo:" + data, peer)
"""

UDP_ASK = r"""
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(4)
s.sendto(b"q", ("2001:db8:2::10", 53)); print(s.recv(100).decode())
"""


ND_RULE = ("input {\n    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, "
           "nd-router-solicit, nd-router-advert } accept\n}\n")


def ask_over_ipv6(lab) -> str:
    server = lab.spawn("server", [sys.executable, "-c", UDP_ECHO], stdout=subprocess.PIPE,
                       text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        return lab.run("client", [sys.executable, "-c", UDP_ASK], timeout=10).stdout.strip()
    finally:
        lab.stop(server)


def test_neighbour_discovery_needs_a_rule_as_in_the_engine(lab, tmp_path: Path) -> None:
    """Neighbour discovery is judged by the chains (untracked), in the engine as in Linux, and
    the export adds nothing: stateful-web.fw drops all input and says nothing of ICMPv6, so the
    client's neighbour solicitation for the firewall is dropped and IPv6 does not cross; with
    the rule `fwlab check` suggests, it does."""
    load(lab, "rules/stateful-web.fw")
    assert ask_over_ipv6(lab) != "echo:q"
    with_nd = tmp_path / "nd.fw"
    with_nd.write_text((ROOT / "rules/stateful-web.fw").read_text() + ND_RULE)
    load(lab, str(with_nd))
    assert ask_over_ipv6(lab) == "echo:q"
