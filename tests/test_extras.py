"""`pip install fwlab` without extras gives the offline commands; a lab or plot command without
its extra says which extra in one line (exit 2), never a traceback. Checked in a subprocess
where pyroute2, netfilterqueue and matplotlib cannot be imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WITHOUT_EXTRAS = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("pyroute2", "netfilterqueue", "matplotlib"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
sys.argv = ["fwlab", *sys.argv[1:]]
from fw.cli import main
main()
"""


def fwlab_without_extras(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [
    ("check", "rules/stateful-web.fw"),
    ("explain", "rules/stateful-web.fw", "tcp 203.0.113.66:80 -> 192.0.2.2:40000 flags S"),
    ("exposure", "rules/stateless-web.fw"),
    ("export", "rules/stateful-web.fw"),
    ("--version",),
], ids=lambda a: a[0])
def test_offline_commands_need_no_extra(args: tuple[str, ...]) -> None:
    result = fwlab_without_extras(*args)
    assert result.returncode in (0, 1), result.stderr


def test_a_lab_command_names_its_extra() -> None:
    result = fwlab_without_extras("up", "--name", "noextra")
    assert result.returncode == 2
    assert "pip install 'fwlab[lab]'" in result.stderr and "Traceback" not in result.stderr


def test_a_plot_names_its_extra(tmp_path: Path) -> None:
    result = fwlab_without_extras("exposure", "rules/stateless-web.fw", "--plot",
                                  str(tmp_path / "x.png"))
    assert result.returncode == 2
    assert "fwlab[plot]" in result.stderr and "Traceback" not in result.stderr
