"""`fwlab explain` takes the rules language's words in its packet descriptions (issue 11 item 4):
service names for ports, protocol names, ICMP type and code names, TCP flag names, IPv6 and
neighbour discovery. What it prints for each is golden; a bad word is one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import fwlab
from tests.golden import compare

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests/golden/explain"
CASES = [
    ("rules/stateful-web.fw", "tcp 192.0.2.2:40000 -> 203.0.113.10:https", []),
    ("rules/stateful-web.fw", "udp [2001:db8:1::2]:5353 -> [2001:db8:2::10]:domain", []),
    ("rules/stateful-web.fw", "gre 192.0.2.2 -> 203.0.113.10", []),
    ("rules/stateful-web.fw", "tcp 203.0.113.10:https -> 203.0.113.1:40000 flags syn,ack",
     ["tcp 192.0.2.2:40000 -> 203.0.113.10:https flags syn"]),
    ("rules/stateful-web.fw",
     "icmp 203.0.113.10 -> 203.0.113.1 type destination-unreachable code port-unreachable "
     "quoting udp 203.0.113.1:40000 -> 203.0.113.10:domain",
     ["udp 192.0.2.2:40000 -> 203.0.113.10:domain"]),
    ("rules/ipv6-host.fw", "icmpv6 fe80::2 -> ff02::1:ff00:1 type nd-neighbor-solicit ttl 255",
     []),
    ("rules/ipv6-host.fw", "esp 2001:db8:2::66 -> 2001:db8:1::2", []),
]


def test_explain_golden(in_repo: Path) -> None:
    out = []
    for rules, packet, after in CASES:
        argv = ["explain", rules, packet, *[a for p in after for a in ("--after", p)]]
        result = fwlab(*argv)
        assert result.code == 0, result.err
        out.append(f"$ fwlab {' '.join(repr(a) if ' ' in a else a for a in argv)}\n"
                   f"{result.out}")
    compare(GOLDEN / "vocabulary.txt", "\n".join(out))


@pytest.mark.parametrize(("packet", "said"), [
    ("tcp 192.0.2.2:40000 -> 203.0.113.10:htps",
     "'htps' is not a port number or a TCP service name (did you mean 'https'?)"),
    ("grx 192.0.2.2 -> 203.0.113.10", "(did you mean 'gre'?)"),
    ("gre 192.0.2.2:1 -> 203.0.113.10", "'192.0.2.2:1' has a port, but this protocol has none"),
    ("icmp 192.0.2.2 -> 203.0.113.10 type nd-neighbor-solicit", "is not an ICMP type"),
])
def test_a_bad_word_is_one_line_and_exit_2(in_repo: Path, packet: str, said: str) -> None:
    result = fwlab("explain", "rules/stateful-web.fw", packet)
    assert result.code == 2 and result.out == ""
    assert result.err.count("\n") == 1 and said in result.err
