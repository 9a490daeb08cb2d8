"""`dnat to POOL` exported: nft maps the kernel loads (tests/golden/export-pools), `sticky`
refused or left out with --approximate (tests/golden/export-refused/pool-sticky.*)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fw.dsl import load_ruleset
from fw.errors import FwlabError
from fw.export.nft import to_nft
from tests.golden import compare

ROOT = Path(__file__).resolve().parent.parent
POOLS = sorted((ROOT / "tests/golden/export-pools").glob("*.fw"))


def exported(path: Path) -> str:
    return to_nft(load_ruleset(str(path.relative_to(ROOT)))).text


@pytest.mark.parametrize("path", POOLS, ids=lambda p: p.stem)
def test_pools_export_as_maps(path: Path, in_repo: Path) -> None:
    compare(path.with_suffix(".nft"), exported(path))


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


@pytest.mark.lab
@pytest.mark.skipif(shutil.which("nft") is None or shutil.which("unshare") is None,
                    reason="needs nft and unshare")
@pytest.mark.parametrize("path", POOLS, ids=lambda p: p.stem)
def test_the_kernel_takes_the_maps(path: Path) -> None:
    """`nft -c` in a network namespace of its own (gone when the command ends)."""
    checked = subprocess.run(["unshare", "-n", "nft", "-c", "-f", "-"], input=exported(path),
                             capture_output=True, text=True, timeout=20)
    assert checked.returncode == 0, checked.stderr
