"""The engine agrees with the Linux kernel on generated conversations (docs/fidelity.md).

300 conversations under a fixed seed, through Engine and through the exported rule set in the
default lab's kernel (fw/lab/difftest.py). Every packet must agree (arrived or not, and as what
after NAT) unless docs/fidelity.md lists its class as a deliberate difference. A failure prints
the disagreeing conversations: rule set, packets, both outcomes; reproduce one with
`sudo .venv/bin/python scripts/difftest --seed 10 --count 300 --json out.jsonl`.
"""

from __future__ import annotations

import json
import shutil

import pytest

from fw.lab import netns as labns
from fw.lab.difftest import deliberate, report, run
from tests.lab.conftest import new_lab_name

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(shutil.which("nft") is None or shutil.which("conntrack") is None,
                       reason="needs nft and conntrack (conntrack-tools)"),
]
SEED, COUNT = 10, 300


@pytest.mark.parametrize("profile", ["default", "strict-loose0-liberal1"])
def test_engine_agrees_with_the_kernel(profile: str) -> None:
    name = new_lab_name()
    try:
        result = run(SEED, COUNT, profile, name=name)
    finally:
        assert not labns.lab_namespaces(name), "difftest left namespaces behind"
    print(report(result))
    assert not result.refused, result.refused[:1]
    unexplained = [d for d in result.disagreements if not deliberate(d)]
    shown = "\n".join(json.dumps(d) for d in unexplained[:3])
    assert not unexplained, f"{len(unexplained)} conversations disagree:\n{shown}"
    assert result.conversations == COUNT
