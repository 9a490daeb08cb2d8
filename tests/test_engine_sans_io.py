"""The engine stays sans-IO (docs/design.md): no module of fw.engine imports I/O or a clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parent.parent / "fw" / "engine"
FORBIDDEN = {"netfilterqueue", "scapy", "pyroute2", "socket", "time", "asyncio", "threading",
             "select", "subprocess", "os"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted(ENGINE.glob("*.py")), ids=lambda p: p.name)
def test_engine_module_imports_no_io(path: Path) -> None:
    assert imported_roots(path) & FORBIDDEN == set()
