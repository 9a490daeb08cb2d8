"""Mutated rule files never break the checker: load() returns diagnostics, check exits 0/1/2."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fw.commands.check import exit_status
from fw.dsl import load

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p.read_text() for p in sorted((ROOT / "rules").glob("*.fw"))]
TOKEN = re.compile(r"\s+|[^\s]+")


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    parts = tokens(draw(st.sampled_from(SOURCES)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(parts) - 1))
        j = draw(st.integers(0, len(parts) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "swap", "junk"]))
        if action == "delete":
            del parts[i]
        elif action == "duplicate":
            parts.insert(j, parts[i])
        elif action == "swap":
            parts[i], parts[j] = parts[j], parts[i]
        else:
            parts.insert(i, draw(st.text(max_size=6)))
    data = "".join(parts).encode("utf-8", "surrogatepass")
    return data + draw(st.binary(max_size=4))


def check_bytes(data: bytes) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mutant.fw"
        path.write_bytes(data)
        loaded = load(str(path))
        return exit_status(loaded.diagnostics, strict=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_files_give_diagnostics_not_exceptions(data: bytes) -> None:
    assert check_bytes(data) in (0, 1, 2)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    assert check_bytes(data) in (0, 2)
