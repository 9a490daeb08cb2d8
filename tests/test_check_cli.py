"""`fwlab check` as a user meets it: exit statuses, JSON, and no traceback whatever the input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def fwlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fw", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_clean_file_exits_0() -> None:
    result = fwlab("check", "rules/stateful-web.fw")
    assert result.returncode == 0, result.stdout
    assert "0 error(s), 0 warning(s)" in result.stdout


def test_errors_exit_2_with_position_and_caret() -> None:
    result = fwlab("check", "tests/golden/bad/undefined-name.fw")
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "tests/golden/bad/undefined-name.fw:5:23: error: undefined name '$webb' "
        "(did you mean '$web'?)"
    )
    assert lines[2].strip() == "^^^^^"


def test_strict_makes_warnings_fail() -> None:
    assert fwlab("check", "rules/stateless-web.fw").returncode == 0
    assert fwlab("check", "--strict", "rules/stateless-web.fw").returncode == 1


def test_json_output() -> None:
    result = fwlab("check", "--json", "tests/golden/bad/port-out-of-range.fw")
    assert result.returncode == 2
    data = json.loads(result.stdout)
    assert data["files"] == ["tests/golden/bad/port-out-of-range.fw"]
    first = data["diagnostics"][0]
    assert first == {
        "file": "tests/golden/bad/port-out-of-range.fw", "line": 4, "column": 15,
        "severity": "error", "message": "port 65536 is out of range (0-65535)",
    }


@pytest.mark.parametrize("target", ["/nonexistent.fw", "tests", "/bin/sh"])
def test_unreadable_input_is_one_line_not_a_traceback(target: str) -> None:
    result = fwlab("check", target)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout.splitlines()[0].startswith(f"{target}: error: cannot read the file")


def test_binary_junk(tmp_path: Path) -> None:
    junk = tmp_path / "junk.fw"
    junk.write_bytes(bytes(range(256)) * 4)
    result = fwlab("check", str(junk))
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr


def test_dash_reads_the_rule_file_from_standard_input() -> None:
    text = (ROOT / "rules/stateful-web.fw").read_text()
    result = subprocess.run([sys.executable, "-m", "fw", "check", "-"], cwd=ROOT, input=text,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
    broken = text.replace("$web accept", "$webb accept")
    result = subprocess.run([sys.executable, "-m", "fw", "check", "-"], cwd=ROOT, input=broken,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout.startswith("<stdin>:14:")
