"""The kernel takes every exported script: `nft -c -f` checks it, `nft -f` loads it twice (the
second load replaces the tables: the atomic reload), in a throwaway namespace of its own."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fw.dsl import load_ruleset
from fw.export.nft import to_nft

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [*sorted((ROOT / "rules").glob("*.fw")),
           *sorted((ROOT / "tests/golden/export-extra").glob("*.fw")),
           *sorted((ROOT / "tests/golden/export-refused").glob("*.fw"))]

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft")]


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    name = f"fwx{os.getpid()}k"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True, timeout=10)


def nft(netns: str, *args: str, script: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, "nft", *args], input=script,
                          capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_exported_script_loads_and_reloads(path: Path, netns: str) -> None:
    text = to_nft(load_ruleset(str(path)), approximate=True).text
    checked = nft(netns, "-c", "-f", "-", script=text)
    assert checked.returncode == 0, checked.stderr
    for _ in range(2):
        loaded = nft(netns, "-f", "-", script=text)
        assert loaded.returncode == 0, loaded.stderr
    listed = nft(netns, "list", "table", "inet", "fwlab").stdout
    assert listed.count("chain ") >= 3
