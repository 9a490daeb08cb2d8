"""`fwlab fmt`: one style, comments kept, the meaning unchanged, and formatting twice is once."""

from __future__ import annotations

from pathlib import Path

import pytest

from fw.dsl.fmt import format_text
from tests.cli import fwlab

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted((ROOT / "rules").glob("*.fw")) + sorted((ROOT / "tests/lab/rules").glob("*.fw"))

MESSY = """# a comment first
mode   stateless
define web={443,80}   # the web
define ssh_port = 22
policy forward   drop
forward {
  iif lan tcp dport $web   accept  # browse
        tcp flags syn,!ack ip saddr { 192.0.2.9, 192.0.2.1 } drop


  log prefix "a # not a comment" drop
}
"""

TIDY = """# a comment first
mode stateless
define web      = { 80, 443 }  # the web
define ssh_port = 22
policy forward drop
forward {
    iif lan tcp dport $web accept  # browse
    tcp flags syn,!ack ip saddr { 192.0.2.1, 192.0.2.9 } drop

    log prefix "a # not a comment" drop
}
"""


def test_one_style() -> None:
    assert format_text(MESSY) == TIDY


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_formatting_twice_is_formatting_once(path: Path) -> None:
    once = format_text(path.read_text())
    assert format_text(once) == once


def test_a_long_set_gets_an_element_per_line() -> None:
    text = "mode stateless\ndefine block = { " + ", ".join(
        f"198.51.100.{n}" for n in range(20, 0, -1)) + " }\n"
    lines = format_text(text).splitlines()
    assert lines[1] == "define block = {" and lines[2] == "    198.51.100.1,"
    assert lines[-1] == "}"


def test_check_exit_status_and_printing(tmp_path: Path) -> None:
    messy = tmp_path / "messy.fw"
    messy.write_text(MESSY)
    assert fwlab("fmt", "--check", str(messy)).code == 1
    printed = fwlab("fmt", str(messy))
    assert (printed.code, printed.out) == (0, TIDY)
    tidy = tmp_path / "tidy.fw"
    tidy.write_text(TIDY)
    assert fwlab("fmt", "--check", str(tidy)).code == 0
