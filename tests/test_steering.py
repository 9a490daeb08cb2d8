"""The steering table of several workers (fw/lab/steering.py), as text: no root needed. The lab
tests (tests/lab/test_workers.py) load it and send traffic through it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fw.errors import LabError
from fw.lab import steering
from fw.lab.engine_glue import load_rules

NAT_RULES = Path(__file__).parent / "lab" / "rules" / "nat.fw"


def test_port_forwards_go_to_worker_0_before_the_port_classes_and_the_hash() -> None:
    text = steering.script(2, load_rules(NAT_RULES))
    pre = text[text.index("chain pre"):text.index("chain out")]
    lines = [line.strip() for line in pre.splitlines()[2:] if line.strip() not in ("}", "")]
    assert lines[:4] == [
        "meta l4proto tcp ip daddr { 203.0.113.1/32 } th dport { 8080 } meta mark set 1 return",
        "meta l4proto tcp ip saddr { 203.0.113.1/32 } th sport { 8080 } meta mark set 1 return",
        "meta l4proto tcp ip saddr 192.0.2.10 th sport 80-80 meta mark set 1 return",
        "meta l4proto tcp ip daddr 192.0.2.10 th dport 80-80 meta mark set 1 return",
    ]
    assert ("meta l4proto { tcp, udp } fib daddr type local meta mark set th dport & 1 "
            "map { 0 : 1, 1 : 2 } return") in lines
    assert lines[-1] == "meta mark set symhash mod 2 offset 1"
    out = text[text.index("chain out"):]
    assert "meta mark != 0 return" in out  # the daemon's own reject replies carry their mark
    assert text.startswith("add table inet fwlab_steer\ndelete table inet fwlab_steer\n")


def test_worker_counts_divide_the_port_classes() -> None:
    assert steering.WORKER_COUNTS == (1, 2, 4, 8, 16)
    assert steering.check_workers(4) == 4
    with pytest.raises(LabError, match="--workers 3: one of 1, 2, 4, 8, 16"):
        steering.check_workers(3)
    four = steering.script(4, load_rules(NAT_RULES))
    assert "th dport & 3 map { 0 : 1, 1 : 2, 2 : 3, 3 : 4 }" in four
