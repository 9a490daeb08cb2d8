"""Shadowed rules: reported when one earlier rule takes all their packets, and only then."""

from __future__ import annotations

from pathlib import Path

import pytest

from fw.dsl import load

HEADER = "mode stateful\npolicy input drop\npolicy forward drop\npolicy output accept\nforward {\n"


def shadowed_lines(tmp_path: Path, body: str) -> list[int]:
    path = tmp_path / "r.fw"
    path.write_text(HEADER + body + "}\n")
    return [d.span.line - 5 for d in load(str(path)).diagnostics if "never match" in d.message]


@pytest.mark.parametrize(("body", "lines"), [
    ("  iif lan accept\n  iif lan tcp dport 22 drop\n", [2]),
    ("  iif != wan accept\n  iif lan tcp dport 22 drop\n", [2]),
    ("  iif != wan accept\n  iif wan tcp dport 22 drop\n", []),
    ("  proto tcp drop\n  tcp dport 1-1024 accept\n", [2]),
    ("  tcp dport != 80 drop\n  tcp dport 22 accept\n  udp dport 22 accept\n", [2]),
    ("  ip saddr 192.0.2.0/24 drop\n  ip saddr 192.0.2.7 tcp dport 80 accept\n", [2]),
    ("  ip saddr 192.0.2.0/25 drop\n  ip saddr 192.0.2.0/24 accept\n", []),
    ("  tcp flags syn drop\n  tcp flags syn,!ack accept\n", [2]),
    ("  tcp flags syn,!ack drop\n  tcp flags syn accept\n", []),
    ("  ct state established,related accept\n  ct state established drop\n", [2]),
    ("  counter\n  counter\n", []),
    ("  tcp dport 80 accept\n  tcp dport { 80, 443 } drop\n", []),
])
def test_shadowing(tmp_path: Path, body: str, lines: list[int]) -> None:
    assert shadowed_lines(tmp_path, body) == lines
