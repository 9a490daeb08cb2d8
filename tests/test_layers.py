"""The package's layers, as docs/design.md draws them, held by a test: imports point down, never up,
never sideways between the three middle packages, and nowhere in a circle (lazy imports inside
functions count too: a circle closed through one is still a circle)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

FW = Path(__file__).resolve().parent.parent / "fw"

# Lower numbers are lower layers. A module may import its own layer and the ones below.
LAYERS: dict[str, int] = {
    "fw.errors": 0,
    "fw.userfiles": 0,
    "fw.core": 1,
    "fw.model": 1,
    "fw.dsl": 2,
    "fw.engine": 2,
    "fw.analysis": 3,
    "fw.packetspec": 3,
    "fw.craft": 3,
    "fw.pcap": 3,
    "fw.views": 4,
    "fw.export": 4,
    "fw.lab": 5,
    "fw.commands": 6,
    "fw.cli": 6,
    "fw.__main__": 7,
}
# Within one layer, these packages must not know each other (the language and the engine share
# only what fw.core gives them).
STRANGERS = {("fw.dsl", "fw.engine"), ("fw.engine", "fw.dsl")}


def module_name(path: Path) -> str:
    parts = path.relative_to(FW.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def type_only(tree: ast.Module) -> set[int]:
    """Ids of the nodes under `if TYPE_CHECKING:`: annotations only, never run."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            ids.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return ids


def imports(path: Path) -> set[str]:
    """Every fw module this file imports when it runs, at the top or inside a function."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    skip = type_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("fw"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fw"))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in FW.rglob("*.py")}
    return {name: {m for m in imports(p) if m in modules and m != name}
            for name, p in modules.items()}


def layer_of(module: str) -> tuple[str, int]:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, LAYERS[prefix]
    if module == "fw":
        return "fw", 0
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")


def test_every_import_points_down() -> None:
    wrong = []
    for module, targets in graph().items():
        package, rank = layer_of(module)
        for target in targets:
            other, other_rank = layer_of(target)
            if other_rank > rank or (package, other) in STRANGERS:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    edges = {m: {t for t in ts if t != "fw"} for m, ts in graph().items()}
    assert cycles(edges) == []


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_imports() -> None:
    """A module only a lab test or a subprocess loads must not hide a broken import."""
    for module in sorted(graph()):
        if module != "fw.__main__":  # running it is the CLI itself
            importlib.import_module(module)
