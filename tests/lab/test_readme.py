"""The README's five minutes, run as written: every command of its `sh` block, in order, in one
shell, against a lab of this test's own name (FWLAB_NAME), with `sudo` left out (the tests run as
root). `fwlab` is the one on PATH when it runs this tree (as after `make`), else a shim that runs
`python -m fw` from this tree."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fw.lab import netns as labns

from .conftest import fwlab, new_lab_name

ROOT = Path(__file__).resolve().parent.parent.parent
SECTION = "## Five minutes with fwlab"


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION):]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def path_with_fwlab(tmp_path: Path) -> str:
    """PATH whose `fwlab` runs this tree."""
    found = shutil.which("fwlab")
    if found and Path(found).resolve() == (ROOT / ".venv/bin/fwlab").resolve():
        return os.environ["PATH"]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "fwlab"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m fw "$@"\n')
    shim.chmod(0o755)
    return f"{bindir}:{os.environ['PATH']}"


def test_the_block_is_commands_only() -> None:
    lines = [line for line in readme_block().splitlines() if line.strip()]
    assert lines[0].startswith("fwlab check") and lines[-2].startswith("sudo fwlab exposure")


@pytest.mark.lab
def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    name = new_lab_name()
    work = tmp_path / "work"
    work.mkdir()
    for folder in ("rules", "netns"):
        (work / folder).symlink_to(ROOT / folder)
    script = "set -euo pipefail\n" + readme_block().replace("sudo fwlab", "fwlab")
    env = {**os.environ, "FWLAB_NAME": name, "PATH": path_with_fwlab(tmp_path), "COLUMNS": "160"}
    try:
        res = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True,
                             text=True, timeout=900)
    finally:
        fwlab("down", "--name", name)
    out = res.stdout
    (tmp_path / "out.txt").write_text(out + "\n--- stderr\n" + res.stderr)  # for a failure
    assert res.returncode == 0, f"{out[-3000:]}\n{res.stderr[-3000:]}"
    assert f"lab '{name}' is up" in out and "ct state established" in out
    assert "verdict  ACCEPT in chain forward" in out  # the trace
    assert "\n200\n" in out and "-> 203.0.113.1:" in out and "[NEW] tcp" in out
    assert "packets from fw any" in out
    accepted = re.search(r"\d+ packets: (\d+) accept", out)  # the replay of the capture
    # a page both ways, NAT and all; ARP and ND frames the capture also holds are not IP: dropped
    assert accepted and int(accepted.group(1)) >= 5
    assert (work / "translated.pcap").stat().st_size > 24 and (work / "exposure.png").exists()
    assert out.count("measured = computed") == 2
    assert not labns.lab_namespaces(name)
