"""`fwlab diff`: golden JSON for pairs of example files (one difference a line), their examples
replayed through the engine, the figures a reviewer reads off them,
every file equivalent to its nftables round trip, the exit statuses of diff(1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fw.analysis.diff import diff
from fw.dsl import load_ruleset
from fw.engine.routing import default_routing
from fw.export.nft_import import import_nft
from tests.cli import fwlab
from tests.golden import compare
from tests.test_diff_property import assert_examples_differ

ROOT = Path(__file__).resolve().parent.parent
RULES = sorted((ROOT / "rules").glob("*.fw"))
PAIRS = [("stateless-web", "stateless-ack"), ("stateless-web", "stateful-web"),
         ("stateless-ack", "stateful-web"), ("stateful-web", "home-router")]
KEYS = {"a", "b", "equivalent", "differences", "summary"}
DIFFERENCE_KEYS = {"chain", "ct_state", "example", "a", "b", "match"}
FIELDS = {"iif", "oif", "saddr", "daddr", "proto", "sport", "dport", "tcp_flags", "icmp_type"}


def diff_json(a: str, b: str) -> tuple[int, dict]:
    result = fwlab("diff", f"rules/{a}.fw", f"rules/{b}.fw", "--json")
    assert result.err == ""
    return result.code, json.loads(result.out)


@pytest.mark.parametrize("pair", PAIRS, ids="-vs-".join)
def test_golden_diff_json(pair: tuple[str, str], in_repo: Path) -> None:
    code, data = diff_json(*pair)
    assert code == 1 and data["equivalent"] is False
    assert set(data) == KEYS and data["summary"]["regions"] == len(data["differences"])
    for d in data["differences"]:
        assert DIFFERENCE_KEYS <= set(d) <= DIFFERENCE_KEYS | {"after"}
        assert set(d["match"]) <= FIELDS and set(d["a"]) == set(d["b"]) == {"verdict", "rule"}
    head = {k: v for k, v in data.items() if k != "differences"}
    lines = [json.dumps(head), *(json.dumps(d) for d in data["differences"])]
    compare(ROOT / "tests/golden/diff" / f"{pair[0]}--{pair[1]}.jsonl", "\n".join(lines) + "\n")


@pytest.mark.parametrize("pair", PAIRS, ids="-vs-".join)
def test_every_example_replays_as_a_difference(pair: tuple[str, str]) -> None:
    a, b = (load_ruleset(str(ROOT / "rules" / f"{name}.fw")) for name in pair)
    assert_examples_differ(a, b, diff(a, b, default_routing()))


def test_the_ack_fix_differs_only_for_segments_without_ack(in_repo: Path) -> None:
    """stateless-ack.fw adds `tcp flags ack` to the return rule: in `forward` the only change
    is TCP from port 80/443 to the ephemeral range without ACK, which the plain file lets in.
    (Its `policy input drop` also closes the firewall itself, which stateless-web leaves open.)"""
    _, data = diff_json("stateless-web", "stateless-ack")
    assert {d["chain"] for d in data["differences"]} == {"forward", "input"}
    tcp = [d for d in data["differences"] if d["chain"] == "forward"]
    assert tcp and all(d["ct_state"] is None and "after" not in d for d in tcp)
    for d in tcp:
        assert d["a"] == {"verdict": "accept", "rule": "rules/stateless-web.fw:11"}
        assert d["b"] == {"verdict": "drop", "rule": "policy"}
        assert d["match"]["sport"] == [[80, 80], [443, 443]]
        assert d["match"]["dport"] == [[32768, 60999]]
        assert not any(f & 0x10 for lo, hi in d["match"]["tcp_flags"] for f in range(lo, hi + 1))
    inputs = [d for d in data["differences"] if d["chain"] == "input"]
    assert all(d["a"]["rule"] == d["b"]["rule"] == "policy" for d in inputs)


def test_across_modes_replies_need_their_opener(in_repo: Path) -> None:
    _, data = diff_json("stateless-web", "stateful-web")
    states = {d["ct_state"] for d in data["differences"]}
    assert states == {"new", "invalid", "established", "related"}
    for d in data["differences"]:
        assert ("after" in d) == (d["ct_state"] in ("established", "related"))
    forward = [d for d in data["differences"] if d["chain"] == "forward"]
    replies = [d for d in forward if d["ct_state"] == "established"]
    # a reply from port 80 that stateless-web drops (outside the ephemeral range), which the
    # stateful file accepts as part of a connection the LAN opened
    assert any(d["a"]["verdict"] == "drop" and d["b"]["rule"] == "rules/stateful-web.fw:12"
               for d in replies)


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.stem)
def test_a_file_and_its_nftables_round_trip_are_equivalent(path: Path, tmp_path: Path) -> None:
    listed = (ROOT / "tests/golden/export" / f"{path.stem}.json").read_text()
    again = tmp_path / f"{path.stem}.fw"
    again.write_text(import_nft(listed, f"{path.stem}.json").text)
    result = diff(load_ruleset(str(path)), load_ruleset(str(again)), default_routing())
    assert result.equivalent, [(d.chain, d.ct_state, d.example) for d in result.differences]


def test_exit_statuses_and_the_table(in_repo: Path) -> None:
    same = fwlab("diff", "rules/stateful-web.fw", "rules/stateful-web.fw")
    assert same.code == 0 and "treat every packet alike" in same.out
    differ = fwlab("diff", "rules/stateless-web.fw", "rules/stateless-ack.fw")
    assert differ.code == 1 and "12 regions" in differ.out
    assert "rules/stateless-web.fw:11" in differ.out
    missing = fwlab("diff", "rules/stateful-web.fw", "no-such.fw")
    assert missing.code == 2 and missing.err.count("\n") == 1 and "no-such.fw" in missing.err
    bad_topology = fwlab("diff", "rules/stateful-web.fw", "rules/stateful-web.fw",
                         "--topology", "no-such.yaml")
    assert bad_topology.code == 2 and "no-such.yaml" in bad_topology.err
