"""`fwlab check`: every problem in the rule files, where it is, in the compiler form."""

from __future__ import annotations

from rich.text import Text

from fw.commands.output import print_json, stdout
from fw.dsl import load
from fw.dsl.diagnostics import Diagnostic
from fw.dsl.pools import outside_segments

COLOURS = {"error": "bold red", "warning": "bold yellow"}


def run_check(files: list[str], *, strict: bool, as_json: bool,
              topology: str | None = None) -> int:
    networks = segment_networks(topology) if topology else None
    diagnostics: list[Diagnostic] = []
    for path in files:
        loaded = load(path)
        diagnostics.extend(loaded.diagnostics)
        if networks is not None and loaded.ruleset is not None:
            diagnostics.extend(outside_segments(loaded.ruleset, networks))
    if as_json:
        print_json({"files": files, "diagnostics": [d.as_json() for d in diagnostics]})
    else:
        show(files, diagnostics)
    return exit_status(diagnostics, strict)


def segment_networks(topology: str) -> list:
    """Every network an interface of the topology sits on (its segments' prefixes)."""
    from fw.lab.topology import load_topology

    nodes = load_topology(topology).nodes().values()
    return [a.network for node in nodes for i in node.interfaces.values() for a in i.addresses]


def exit_status(diagnostics: list[Diagnostic], strict: bool) -> int:
    if any(d.severity == "error" for d in diagnostics):
        return 2
    return 1 if strict and diagnostics else 0


def show(files: list[str], diagnostics: list[Diagnostic]) -> None:
    for d in diagnostics:
        stdout.print(styled(d))
    errors = sum(d.severity == "error" for d in diagnostics)
    warnings = len(diagnostics) - errors
    summary = f"{len(files)} file(s) checked: {errors} error(s), {warnings} warning(s)"
    stdout.print(Text(summary, style="bold red" if errors else "green"))


def styled(d: Diagnostic) -> Text:
    text = Text()
    if d.span:
        text.append(f"{d.span}: ", style="bold")
    text.append(f"{d.severity}:", style=COLOURS[d.severity])
    text.append(f" {d.message}")
    caret = d.caret()
    if caret:
        source, marks = caret.split("\n")
        text.append(f"\n{source}\n")
        text.append(marks, style="bold green")
    return text
