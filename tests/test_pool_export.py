"""`dnat to POOL` exported: nft maps (tests/golden/export-extra/pools.*, which
tests/lab/test_export_kernel.py loads into a kernel and test_export_roundtrip.py imports back),
`sticky` refused or left out with --approximate (tests/golden/export-refused/pool-sticky.*)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fw.dsl import load_ruleset
from fw.errors import FwlabError
from fw.export.nft import to_nft
from fw.export.nft_import import import_nft

ROOT = Path(__file__).resolve().parent.parent
POOLS = [ROOT / "tests/golden/export-extra/pools.fw"]


def exported(path: Path) -> str:
    return to_nft(load_ruleset(str(path.relative_to(ROOT)))).text


def test_each_method_has_its_selector() -> None:
    text = exported(POOLS[0])
    assert "dnat to numgen inc mod 3 map { 0 : 192.0.2.10, 1 : 192.0.2.11, 2 : 192.0.2.12 }" \
        in text
    # the engine's smooth order, step by step
    assert "numgen inc mod 4 map { 0 : 192.0.2.10, 1 : 192.0.2.11, 2 : 192.0.2.12, " \
           "3 : 192.0.2.10 }" in text
    assert "numgen random mod 4 map { 0-1 : 192.0.2.10, 2 : 192.0.2.11, 3 : 192.0.2.12 }" in text
    assert "dnat ip to jhash ip saddr . th sport mod 3 map { 0 : 192.0.2.10 . 8080, " in text
    assert "dnat ip to jhash ip saddr mod 2 map { 0 : 192.0.2.10 . 5353, 1 : 192.0.2.11 . 53 }" \
        in text


def test_a_member_without_a_port_needs_one_matched(tmp_path: Path) -> None:
    path = tmp_path / "p.fw"
    path.write_text("mode stateful\nnat {\n    iif wan tcp dport { 80, 81 } dnat to "
                    "{ 192.0.2.10:8080, 192.0.2.11 }\n}\n")
    with pytest.raises(FwlabError, match="nft needs a port for every member"):
        to_nft(load_ruleset(str(path)))


def test_sticky_is_refused_then_approximated() -> None:
    path = ROOT / "tests/golden/export-refused/pool-sticky.fw"
    with pytest.raises(FwlabError, match="cannot give 'sticky 300 seconds'"):
        to_nft(load_ruleset(str(path)))
    result = to_nft(load_ruleset(str(path)), approximate=True)
    assert "sticky 300 seconds' is left out" in result.warnings[0].message
    assert 'comment "fwlab approximates: without sticky 300 seconds"' in result.text


def test_the_maps_import_back_as_the_pools() -> None:
    listed = (ROOT / "tests/golden/export-extra/pools.json").read_text()
    text = import_nft(listed, "pools.json").text
    for line in (
        "iif wan tcp dport 80 dnat to { 192.0.2.10, 192.0.2.11, 192.0.2.12 } round-robin",
        "iif wan tcp dport 81 dnat to { 192.0.2.10 weight 2, 192.0.2.11, 192.0.2.12 } round-robin",
        "iif wan tcp dport 82 dnat to { 192.0.2.10 weight 2, 192.0.2.11, 192.0.2.12 } random",
        "iif wan tcp dport 83 dnat to { 192.0.2.10, 192.0.2.11, 192.0.2.12 }:8080 hash",
        "iif wan udp dport 53 dnat to { 192.0.2.10:5353, 192.0.2.11:53 } source-hash",
    ):
        assert line in text
