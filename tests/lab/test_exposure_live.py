"""`fwlab exposure --live` on a reduced port range: measured and computed agree, in real packets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fw.lab import netns as labns

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.lab
def test_live_and_computed_agree_on_the_three_example_sets() -> None:
    files = ["rules/stateless-web.fw", "rules/stateful-web.fw", "rules/stateless-ack.fw"]
    result = subprocess.run(
        [sys.executable, "-m", "fw", "exposure", *files, "--live", "--ports", "32760-32780",
         "--json"], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["differences"] == []
    live = {r["file"]: r["live"] for r in data["rulesets"]}
    assert live["rules/stateless-web.fw"]["tcp_syn"] == {"count": 13, "ranges": ["32768-32780"]}
    assert live["rules/stateful-web.fw"]["tcp_syn"]["count"] == 0  # port 80 is not in the range
    assert live["rules/stateless-ack.fw"]["tcp_syn"]["count"] == 0
    assert live["rules/stateless-ack.fw"]["tcp_any"]["count"] == 13
    assert not [n for n in labns.list_labs() if n.startswith("exp")]


@pytest.mark.lab
def test_the_port_forward_is_measured(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fw", "exposure", "rules/stateful-web.fw", "--live", "--ports",
         "75-85", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (ruleset,) = json.loads(result.stdout)["rulesets"]
    assert ruleset["live"]["tcp_syn"] == {"count": 1, "ranges": ["80"]}
