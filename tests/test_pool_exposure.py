"""A pool exposes each member's port on purpose: the exposure is every member, under one port
forward shown as a forward to the pool; and the engine agrees, connection after connection."""

from __future__ import annotations

from pathlib import Path

from fw.analysis.exposure import Probe, analyse
from fw.analysis.exposure_text import exposure_json
from fw.core.protocols import SYN
from fw.dsl import load_ruleset
from fw.engine.engine import Engine

RULES = """mode stateful
policy forward drop
forward {
    ct state established,related accept
    iif wan ip daddr { 192.0.2.10, 192.0.2.11 } tcp dport { 80, 8080 } accept
}
nat {
    iif wan tcp dport 80 dnat to { 192.0.2.10, 192.0.2.11:8080 weight 2, 192.0.2.12 } hash
}
"""


def ruleset(tmp_path: Path):
    path = tmp_path / "pool.fw"
    path.write_text(RULES)
    return load_ruleset(str(path))


def test_each_members_port_is_exposed_under_one_forward_to_the_pool(tmp_path: Path) -> None:
    out = exposure_json(analyse(ruleset(tmp_path)))["tcp_syn"]
    assert out["ranges"] == ["80", "8080"]
    assert out["addresses"] == ["192.0.2.10/31"]  # .12: the forward chain refuses it
    [forward] = out["forwards"]
    assert forward["ports"] == ["80"] and forward["addressed_to"] == ["0.0.0.0/0"]
    assert forward["to"] == "{ 192.0.2.10, 192.0.2.11:8080 weight 2, 192.0.2.12 } hash"
    assert forward["pool"] == ["192.0.2.10", "192.0.2.11:8080 weight 2", "192.0.2.12"]


def test_the_engine_reaches_exactly_the_exposed_members(tmp_path: Path) -> None:
    rules = ruleset(tmp_path)
    exposure = analyse(rules)
    engine = Engine(rules)
    reached = set()
    for sport in range(40000, 40060):
        probe = Probe(4, 6, "198.51.100.66", "203.0.113.1", sport, 80, SYN)
        decision = engine.process(probe.packet(), iif="wan")
        if decision.verdict == "accept":
            after = decision.nat[0].after
            reached.add((after[2], after[3]))
    members = {(int.from_bytes(bytes(map(int, a.split("."))), "big"), p)
               for a, p in (("192.0.2.10", 80), ("192.0.2.11", 8080))}
    assert reached == members
    for addr, port in (("192.0.2.10", 80), ("192.0.2.11", 8080)):
        assert exposure.witness("tcp_syn", 4, addr, port) is not None
    assert exposure.witness("tcp_syn", 4, "192.0.2.12", 80) is None
