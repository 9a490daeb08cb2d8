"""Exported NAT in the kernel next to the engine's NAT, on the same datagrams (docs/export.md).

The default lab (client 192.0.2.2 and web 192.0.2.10 on the LAN, server 203.0.113.10 outside)
runs the export of stateful-web.fw (plus UDP 5000-5001 allowed out) in the firewall namespace's
kernel; both LAN hosts send from the same ports, so the second one collides. The server reports
the source it sees; the engine is given the same datagrams. Where they agree the test asserts
equality; where Linux does otherwise, it asserts what Linux does, so docs/export.md's list of
differences stays true."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fw import craft
from fw.dsl import load_ruleset
from fw.engine.engine import Engine
from fw.export.nft import to_nft

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft")]

# (sender, source port, destination port): second senders collide with the first ones
SENDS = [("client", 40000, 5000), ("web", 40000, 5000),   # in the class 32768-60999
         ("client", 700, 5000), ("web", 700, 5000),       # privileged
         ("client", 5000, 5000), ("web", 5000, 5000),     # outside every class
         ("client", 40001, 5000), ("web", 40001, 5001)]   # same port, another destination
ADDRESS = {"client": "192.0.2.2", "web": "192.0.2.10"}

RECEIVER = r"""
import json, select, socket, sys, time
socks = []
for port in (5000, 5001):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("203.0.113.10", port)); socks.append(s)
print("ready", flush=True)
end = time.time() + 8
while time.time() < end:
    for s in select.select(socks, [], [], 0.2)[0]:
        data, peer = s.recvfrom(100)
        print(json.dumps([data.decode(), peer[1]]), flush=True)
"""

SENDER = r"""
import socket, sys
src, sport, dport, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, sport)); s.sendto(tag.encode(), ("203.0.113.10", dport))
"""


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    invalid = "    ct state invalid drop\n"
    text = (ROOT / "rules/stateful-web.fw").read_text().replace(
        invalid, invalid + "    udp dport 5000-5001 accept\n")
    path = tmp_path / "web-udp.fw"
    path.write_text(text)
    return path


def kernel_sources(lab, rules: Path) -> dict[str, int]:
    script = to_nft(load_ruleset(str(rules))).text
    loaded = subprocess.run(["ip", "netns", "exec", lab.firewall_ns, "nft", "-f", "-"],
                            input=script, capture_output=True, text=True, timeout=20)
    assert loaded.returncode == 0, loaded.stderr
    receiver = lab.spawn("server", [sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE,
                         text=True)
    try:
        assert receiver.stdout.readline().strip() == "ready"
        for i, (host, sport, dport) in enumerate(SENDS):
            lab.run(host, [sys.executable, "-c", SENDER, ADDRESS[host], str(sport), str(dport),
                           str(i)], timeout=10, check=True)
            time.sleep(0.1)
        seen: dict[str, int] = {}
        while len(seen) < len(SENDS):
            tag, port = json.loads(receiver.stdout.readline())
            seen[tag] = port
        return seen
    finally:
        lab.stop(receiver)


def engine_sources(rules: Path) -> dict[str, int]:
    engine = Engine(load_ruleset(str(rules)), seed=0)
    seen = {}
    for i, (host, sport, dport) in enumerate(SENDS):
        decision = engine.process(craft.udp(ADDRESS[host], "203.0.113.10", sport, dport, b"x"),
                                  iif="lan", now=1.0 + i)
        seen[str(i)] = decision.nat[-1].after[1]
    return seen


def test_exported_masquerade_keeps_ports_and_ranges_as_the_engine(lab, rules: Path) -> None:
    kernel, engine = kernel_sources(lab, rules), engine_sources(rules)
    for first in ("0", "2", "4", "6"):
        assert kernel[first] == engine[first] == SENDS[int(first)][1]  # port preservation
    assert 32768 <= kernel["1"] <= 60999 and 32768 <= engine["1"] <= 60999
    assert 1 <= kernel["3"] <= 1023 and 1 <= engine["3"] <= 1023
    # Linux draws a colliding port outside the classes from 1024-65535, fwlab from 32768-60999
    assert 1024 <= kernel["5"] <= 65535 and kernel["5"] != 5000
    assert 32768 <= engine["5"] <= 60999
    # Linux shares an outside port between inside hosts talking to different destinations
    # (the tuples differ); fwlab never shares one (RFC 4787 REQ-3, no port overloading)
    assert kernel["7"] == 40001 and engine["7"] != 40001


def test_exported_hairpin_reaches_the_forward_from_the_lan(lab, echo_server) -> None:
    script = to_nft(load_ruleset(str(ROOT / "rules/stateful-web.fw"))).text
    loaded = subprocess.run(["ip", "netns", "exec", lab.firewall_ns, "nft", "-f", "-"],
                            input=script, capture_output=True, text=True, timeout=20)
    assert loaded.returncode == 0, loaded.stderr
    echo_server(lab, "web", "192.0.2.10", 80)
    # the reply comes back only if the firewall also took the source (or web would answer the
    # client directly, from an address the client never wrote to)
    reply = lab.run("client", [sys.executable, "-c", HAIRPIN_CLIENT], timeout=10)
    assert reply.stdout.strip() == "echo:hello", reply.stderr


HAIRPIN_CLIENT = r"""
import socket
s = socket.create_connection(("203.0.113.1", 8080), timeout=3)
s.sendall(b"hello"); print(s.recv(100).decode())
"""
