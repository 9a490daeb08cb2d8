"""Conversations through rules/stateful-web.fw and rules/stateless-web.fw, written as playbooks
(tests/flows.py): each packet as `fwlab explain` takes it, and what the engine must answer,
NAT, logs and reject replies included."""

from __future__ import annotations

from pathlib import Path

import pytest

from fw.dsl import load_ruleset
from fw.engine.engine import Engine
from tests.flows import Playbook

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def web() -> Playbook:
    return Playbook(Engine(load_ruleset(str(ROOT / "rules/stateful-web.fw")), seed=1))


@pytest.fixture
def stateless() -> Playbook:
    return Playbook(Engine(load_ruleset(str(ROOT / "rules/stateless-web.fw")), seed=1))


def test_browsing_through_masquerade(web: Playbook) -> None:
    web("""
        tcp 192.0.2.2:41000 -> 203.0.113.10:80 flags S
            => accept new; nat 203.0.113.1:41000 -> 203.0.113.10:80; rule 14
        tcp 203.0.113.10:80 -> 203.0.113.1:41000 flags SA
            => accept established; nat 203.0.113.10:80 -> 192.0.2.2:41000; rule 12
        tcp 192.0.2.2:41000 -> 203.0.113.10:80 flags A len 300
            => accept established; nat 203.0.113.1:41000 -> 203.0.113.10:80
        tcp 203.0.113.10:80 -> 203.0.113.1:41000 flags PA len 1200
            => accept established; nat 203.0.113.10:80 -> 192.0.2.2:41000
        tcp 192.0.2.2:41000 -> 203.0.113.10:80 flags FA => accept established
        tcp 203.0.113.10:80 -> 203.0.113.1:41000 flags FA => accept established
    """)


def test_the_outside_gets_nothing_it_did_not_ask_for(web: Playbook) -> None:
    web("""
        tcp 203.0.113.66:80 -> 192.0.2.2:40000 flags SA => drop invalid; rule 13
        tcp 203.0.113.66:80 -> 192.0.2.2:40000 flags S => drop new; log fwd-drop; rule 18
        udp 203.0.113.66:53 -> 192.0.2.2:40000 => drop new; log fwd-drop
        tcp 203.0.113.66:80 -> 203.0.113.1:22 flags S => drop new; rule policy
    """)


def test_the_port_forward(web: Playbook) -> None:
    web("""
        tcp 203.0.113.66:5555 -> 203.0.113.1:8080 flags S
            => accept new; nat 203.0.113.66:5555 -> 192.0.2.10:80; rule 17
        tcp 192.0.2.10:80 -> 203.0.113.66:5555 flags SA
            => accept established; nat 203.0.113.1:8080 -> 203.0.113.66:5555
    """)


def test_an_icmp_error_about_a_masqueraded_flow_reaches_the_client(web: Playbook) -> None:
    web("""
        udp 192.0.2.2:5353 -> 203.0.113.10:53 => accept new; nat 203.0.113.1:5353 -> 203.0.113.10:53
        icmp 203.0.113.10 -> 203.0.113.1 type destination-unreachable code 3
            quoting udp 203.0.113.1:5353 -> 203.0.113.10:53
            => accept related; nat 203.0.113.10 -> 192.0.2.2
    """)


def test_stateless_lets_the_forged_reply_in(stateless: Playbook) -> None:
    stateless("""
        tcp 203.0.113.66:80 -> 192.0.2.2:40000 flags SA => accept -
        tcp 203.0.113.66:80 -> 192.0.2.2:40000 flags S => accept -
        tcp 203.0.113.66:81 -> 192.0.2.2:40000 flags S => drop -; rule policy
    """)


def test_reject_replies(tmp_path: Path) -> None:
    path = tmp_path / "reject.fw"
    path.write_text("mode stateless\npolicy forward accept\nforward {\n"
                    "    tcp dport 23 reject\n    udp dport 7 reject\n}\n")
    Playbook(Engine(load_ruleset(str(path))))("""
        tcp 203.0.113.66:1 -> 192.0.2.2:23 flags S => reject -; reply tcp flags RA
        udp 203.0.113.66:9 -> 192.0.2.2:7 => reject -; reply icmp port-unreachable
        udp [2001:db8::66]:9 -> [2001:db8:1::2]:7 => reject -; reply icmpv6 port-unreachable
    """)
