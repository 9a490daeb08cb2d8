"""`dnat to POOL`: what a user may write, what it means, and what is refused and why."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from fw.dsl import load
from fw.model import Pool, PoolMember
from tests.cli import fwlab

HEAD = ("mode stateful\ndefine web = { 192.0.2.10, 192.0.2.11, 192.0.2.12 }\n"
        "define one = 192.0.2.10\n")


def nat(tmp_path: Path, *rules: str):
    path = tmp_path / "pool.fw"
    path.write_text(HEAD + "nat {\n" + "\n".join(f"    {r}" for r in rules) + "\n}\n")
    return load(str(path))


def pool_of(tmp_path: Path, rule: str) -> Pool:
    loaded = nat(tmp_path, rule, "iif wan udp dport 1 dnat to $web", "iif wan dnat to $one")
    assert loaded.errors == [], [d.render() for d in loaded.errors]
    return loaded.ruleset.nat[0].pool


def errors(tmp_path: Path, rule: str) -> list[str]:
    return [d.message for d in nat(tmp_path, rule, "dnat to $web", "dnat to $one").errors]


def member(addr: str, port: int | None = None, weight: int = 1) -> PoolMember:
    return PoolMember(addr=IPv4Address(addr), port=port, weight=weight)


def test_a_set_literal_is_a_round_robin_pool_by_default(tmp_path: Path) -> None:
    pool = pool_of(tmp_path, "iif wan tcp dport 80 dnat to { 192.0.2.10, 192.0.2.11 }")
    assert pool.model_dump() == Pool(members=(member("192.0.2.10"), member("192.0.2.11"))
                                     ).model_dump()


def test_members_carry_ports_and_weights_and_the_pool_a_port(tmp_path: Path) -> None:
    pool = pool_of(tmp_path, "iif wan tcp dport 80 dnat to { 192.0.2.10:8080 weight 3, "
                             "192.0.2.11 weight 2, 192.0.2.12:81 }:8000 hash sticky 30 seconds")
    expected = (member("192.0.2.10", 8080, 3), member("192.0.2.11", None, 2),
                member("192.0.2.12", 81))
    assert [m.model_dump() for m in pool.members] == [m.model_dump() for m in expected]
    assert (pool.port, pool.method, pool.sticky) == (8000, "hash", 30)
    assert [pool.port_of(m, 80) for m in pool.members] == [8080, 8000, 81]


@pytest.mark.parametrize("method", ["round-robin", "random", "hash", "source-hash"])
def test_a_define_of_a_set_is_a_pool(tmp_path: Path, method: str) -> None:
    pool = pool_of(tmp_path, f"iif wan tcp dport 80 dnat to $web:8080 {method}")
    assert [str(m.addr) for m in pool.members] == ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
    assert (pool.port, pool.method, pool.sticky) == (8080, method, None)


def test_a_define_of_one_address_is_plain_dnat(tmp_path: Path) -> None:
    loaded = nat(tmp_path, "iif wan tcp dport 80 dnat to $one:8080", "dnat to $web")
    rule = loaded.ruleset.nat[0]
    assert (rule.pool, str(rule.to_addr), rule.to_ports.lo) == (None, "192.0.2.10", 8080)


def test_a_rule_without_a_pool_dumps_as_before(tmp_path: Path) -> None:
    loaded = nat(tmp_path, "iif wan dnat to 192.0.2.10", "dnat to $web", "dnat to $one")
    dumped = [r.model_dump(mode="json") for r in loaded.ruleset.nat]
    assert "pool" not in dumped[0]
    assert dumped[1]["pool"]["method"] == "round-robin"


@pytest.mark.parametrize(("rule", "message"), [
    ("dnat to { }", "the pool is empty"),
    ("dnat to { 192.0.2.10, 192.0.2.10 }",
     "'192.0.2.10' is in the pool twice (weight says how often a member is chosen)"),
    ("tcp dport 80 dnat to { 192.0.2.10:80, 192.0.2.10:80 }", "'192.0.2.10:80' is in the pool twice"
     " (weight says how often a member is chosen)"),
    ("dnat to { 192.0.2.10 weight 0, 192.0.2.11 }",
     "a weight of 0 never chooses the member; leave it out instead"),
    ("dnat to { 192.0.2.10, 192.0.2.11 } hash random", "a pool has one method ('hash' and "
     "'random' given)"),
    ("dnat to { 192.0.2.10, 192.0.2.11 } sticky 5 seconds sticky 6 seconds",
     "'sticky' is given twice"),
    ("dnat to { 192.0.2.10, 192.0.2.11 } sticky 0 seconds", "sticky 0 seconds: use 1 to 604,800"),
    ("dnat to { 192.0.2.10:8080, 192.0.2.11 }",
     "dnat to a port needs a 'tcp dport' or 'udp dport' match"),
    ("tcp dport 80 dnat to { 192.0.2.10:80-90 }", "dnat translates to one port, not a range"),
    ("dnat to { 192.0.2.10, 2001:db8::1 }", "NAT is IPv4 only (NAT44): a pool holds IPv4 "
     "addresses"),
    ("dnat to { 192.0.2.0/24 }", "'192.0.2.0/24' is not an address to balance to"),
    ("dnat to { 192.0.2.10, 192.0.2.11 } round-robbin",
     "unexpected 'round-robbin' (did you mean 'round-robin'?)"),
    ("dnat to { 192.0.2.10 wieght 2 }", "unexpected 'wieght' (did you mean 'weight'?)"),
])
def test_pool_mistakes_are_named(tmp_path: Path, rule: str, message: str) -> None:
    assert errors(tmp_path, rule) == [message]


def test_check_with_a_topology_warns_of_members_on_no_segment(tmp_path: Path) -> None:
    path = tmp_path / "pool.fw"
    path.write_text("mode stateful\nnat {\n    iif wan tcp dport 80 dnat to "
                    "{ 192.0.2.10, 198.51.100.7 }\n}\n")
    plain = fwlab("check", str(path))
    assert "198.51.100.7" not in plain.out
    result = fwlab("check", "--json", "--topology", "netns/default.yaml", str(path))
    assert result.code == 0
    found = [d for d in json.loads(result.out)["diagnostics"] if "pool" in d["message"]]
    assert found == [{"file": str(path), "line": 3, "column": 48, "severity": "warning",
                      "message": "pool member 198.51.100.7 is on none of the topology's segments"}]
