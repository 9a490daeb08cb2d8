"""A reload of a rule file whose includes point at a FIFO, a device or an exponential diamond is
refused at once (by the reload command, which compiles the file; the daemon never reads it), the
old rules kept, the control plane free."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import RULES


def hostile_rule_files(d: Path) -> dict[str, Path]:
    os.mkfifo(d / "fifo")
    for level in range(21):
        (d / f"l{level}.part").write_text(f'include "l{level + 1}.part"\n' * 2 if level < 20 else
                                          "forward {\n    tcp dport 22 accept\n}\n")
    files = {}
    for name, target in (("fifo", "fifo"), ("zero", "/dev/zero"), ("random", "/dev/urandom"),
                         ("diamond", "l0.part")):
        files[name] = d / f"{name}.fw"
        files[name].write_text(f'mode stateless\npolicy forward accept\ninclude "{target}"\n')
    return files


@pytest.mark.lab
def test_reload_with_hostile_includes_is_refused_and_the_daemon_stays(cli_lab,
                                                                     tmp_path: Path) -> None:
    lab = cli_lab()
    mode = lab.status()["daemon"]["mode"]
    for name, path in hostile_rule_files(tmp_path).items():
        result = lab.cli("reload", str(path), "--json", timeout=15)
        answer = json.loads(result.stdout)
        assert result.returncode == 2 and answer["ok"] is False, name
        assert any("cannot include" in d or "limit of 1,000,000 lines" in d
                   for d in answer["diagnostics"]), answer
        assert lab.status()["daemon"]["mode"] == mode  # the old rules stay, the daemon answers
    good = lab.cli("reload", str(RULES / "stateless-web.fw"))
    assert good.returncode == 0 and lab.status()["daemon"]["mode"] == "stateless"
