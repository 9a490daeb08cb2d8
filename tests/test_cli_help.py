"""`fwlab --help` and shell completion: a flag reads as a flag, and completion installs."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fw.cli import app

FWLAB = [sys.executable, "-m", "fw"]
COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands if not c.hidden)


def fwlab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*FWLAB, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "100", **(env or {})})


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_shows_flags_without_a_value(command: str) -> None:
    res = fwlab(*command.split(), "--help")
    assert res.returncode == 0 and res.stdout.startswith(f"Usage: fwlab {command}".rstrip())
    assert "<bool>" not in res.stdout and "--no-" not in res.stdout


def test_completion_installs_and_completes(tmp_path: Path) -> None:
    # typer asks the parent process which shell it is: make it bash (`; :` keeps bash from
    # exec-ing the command in its place), whatever runs the tests
    command = " ".join(shlex.quote(a) for a in [*FWLAB, "--install-completion"])
    installed = subprocess.run(["bash", "-c", f"{command}; :"], capture_output=True, text=True,
                               timeout=60, env={**os.environ, "HOME": str(tmp_path)})
    assert installed.returncode == 0, installed.stderr
    script = tmp_path / ".bash_completions" / "fwlab.sh"
    assert "_fwlab_completion" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()
    words = fwlab(env={"_FWLAB_COMPLETE": "complete_bash", "COMP_WORDS": "fwlab conn",
                       "COMP_CWORD": "1"})
    assert words.stdout.split() == ["conntrack"]
